"""Failure paths: nothing lost on a failed run, damaged files named, one bad client fails alone."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from mtst.cli import main
from mtst.errors import ModelLoadError
from mtst.modeling.encoder import SentenceEncoder
from mtst.modeling.model import MultiTaskModel
from mtst.serve import ServeSettings, create_app
from tests.conftest import SENTENCES, make_tasks, save_tiny_bert

httpx = pytest.importorskip("httpx")


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` and the hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def write_config(path: Path, backbone: Path, data: dict[str, str], output_dir: Path) -> Path:
    lines = [
        f"model: {{backbone: {json.dumps(str(backbone))}, max_length: 32}}",
        "tasks: {category: {}, sentiment: {}}",
        "data: {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in data.items()) + "}",
        "training: {strategy: heads, max_steps: 4, batch_size: 8, min_steps: null}",
        f"output_dir: {json.dumps(str(output_dir))}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def finished_run(trained_run: Path, tmp_path: Path) -> Path:
    """A finished run of its own (a copy of the session's: these tests damage or overwrite it)."""
    import shutil

    run = shutil.copytree(trained_run, tmp_path / "keep")
    assert {"model", "checkpoint", "metrics.json"} <= {p.name for p in run.iterdir()}
    return run


# --------------------------------------------------------------------------- 1. a failed run destroys nothing
def test_failed_start_leaves_a_finished_run_byte_identical(
    finished_run: Path, tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, capsys
) -> None:
    before = tree_digest(finished_run)
    bad = write_config(tmp_path / "bad.yaml", tiny_backbone_dir, {**tiny_data, "train": "nope.csv"}, finished_run)
    capsys.readouterr()
    assert main(["train", str(bad), "-q"]) == 2  # refused: the directory holds a run
    assert "--overwrite" in capsys.readouterr().err
    assert tree_digest(finished_run) == before
    assert main(["train", str(bad), "-q", "--overwrite"]) == 2  # the missing file fails before anything is cleared
    err = capsys.readouterr().err.replace("\n", "")
    assert "data.train" in err and str(tmp_path / "nope.csv") in err
    assert tree_digest(finished_run) == before


def test_existing_run_needs_overwrite(
    finished_run: Path, tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, capsys
) -> None:
    cfg = write_config(tmp_path / "ok.yaml", tiny_backbone_dir, tiny_data, finished_run)
    before = tree_digest(finished_run)
    assert main(["train", str(cfg), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert tree_digest(finished_run) == before
    assert main(["train", str(cfg), "-q", "--overwrite"]) == 0
    assert json.loads((finished_run / "metrics.json").read_text())["steps"] == 4


def test_failed_start_creates_no_output_dir(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    new = tmp_path / "new-run"
    bad_backbone = tmp_path / "no-such-backbone"
    cfg = write_config(tmp_path / "bad.yaml", bad_backbone, tiny_data, new)
    assert main(["train", str(cfg), "-q"]) == 2
    cfg = write_config(tmp_path / "bad2.yaml", tiny_backbone_dir, {**tiny_data, "test": "gone.csv"}, new)
    assert main(["train", str(cfg), "-q"]) == 2
    assert not new.exists()


# --------------------------------------------------------------------------- 2. damaged safetensors files
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_model_weights_exit_2_naming_the_file(finished_run: Path, tmp_path: Path, capsys) -> None:
    weights = finished_run / "model" / "model.safetensors"
    truncate(weights)
    data = tmp_path / "eval.csv"
    data.write_text("text,category,sentiment\nnice book,books,positive\n")
    commands = [
        ["encode", "hello", "--model", str(finished_run)],
        ["predict", str(finished_run), "hello"],
        ["evaluate", str(finished_run), "--data", str(data)],
        ["export", str(finished_run), "-o", str(tmp_path / "exp"), "--format", "sentence-transformers"],
    ]
    for command in commands:
        capsys.readouterr()
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert str(weights) in err.replace("\n", "") and "damaged" in err, command
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "trainer_state.json"])
def test_truncated_checkpoint_exits_2_naming_the_file(finished_run: Path, name: str, capsys) -> None:
    target = finished_run / "checkpoint" / name
    truncate(target)
    capsys.readouterr()
    assert main(["train", "--resume", str(finished_run), "--set", "training.max_steps=6", "-q"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert str(target) in err


# --------------------------------------------------------------------------- 5. never unpickle
def test_sharded_index_pointing_at_a_pickle_is_refused_before_torch_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    backbone = save_tiny_bert(tmp_path / "bert")
    state = load_file(str(backbone / "model.safetensors"))
    (backbone / "model.safetensors").unlink()
    torch.save(state, backbone / "pytorch_model.bin")
    index = {"metadata": {}, "weight_map": dict.fromkeys(state, "pytorch_model.bin")}
    (backbone / "model.safetensors.index.json").write_text(json.dumps(index))

    def no_unpickling(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ModelLoadError, match="not safetensors") as err:
        SentenceEncoder.from_pretrained(str(backbone))
    assert "weights_only" not in str(err.value)


# --------------------------------------------------------------------------- 3, 4. the server
def tiny_app(tiny_backbone_dir: Path, **settings: object):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = MultiTaskModel.from_backbone(make_tasks(), backbone=str(tiny_backbone_dir))
    return create_app(model, ServeSettings(**settings), "tiny")


def test_metrics_stay_bounded_under_random_paths(tiny_backbone_dir: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(tiny_app(tiny_backbone_dir)) as c:
        assert c.post("/predict", json={"texts": ["fine"]}).status_code == 200
        for _ in range(1000):
            assert c.get(f"/x{uuid.uuid4().hex}").status_code == 404
        text = c.get("/metrics").text
    assert len(text.encode()) < 20_000
    assert 'mtst_requests_total{path="other",status="404"} 1000' in text
    assert 'path="/predict"' in text


async def _concurrent(app, bodies: list[dict]) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        # json.dumps escapes the lone surrogate as \\ud800 (httpx's own encoder would refuse it)
        headers = {"content-type": "application/json"}
        return await asyncio.gather(*(c.post("/predict", content=json.dumps(b), headers=headers) for b in bodies))


BAD_TEXT = "\ud800"  # a lone surrogate: valid JSON, not encodable text


@pytest.mark.parametrize("edge_check", [True, False])
def test_one_bad_text_fails_only_its_own_request(
    tiny_backbone_dir: Path, monkeypatch: pytest.MonkeyPatch, edge_check: bool
) -> None:
    """With the edge check, the bad request gets 422; without it, the shared batch is split and only it fails."""
    if not edge_check:
        monkeypatch.setattr("mtst.serve.app.text_problems", lambda *args: None)
    app = tiny_app(tiny_backbone_dir, batch_wait_ms=100)
    bodies = [{"texts": [f"{SENTENCES[i % 5]} {i}"]} for i in range(20)]
    bodies[7] = {"texts": ["fine", BAD_TEXT]}
    responses = asyncio.run(_concurrent(app, bodies))
    codes = [r.status_code for r in responses]
    assert codes[:7] + codes[8:] == [200] * 19
    if edge_check:
        assert codes[7] == 422 and "texts[1]" in responses[7].json()["detail"]
    else:
        assert codes[7] == 500


def test_empty_text_and_rounded_scores(tiny_backbone_dir: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(tiny_app(tiny_backbone_dir)) as c:
        r = c.post("/predict", json={"texts": ["fine", "  "]})
        assert r.status_code == 422 and "texts[1]: empty text" in r.json()["detail"]
        assert c.post("/predict", json={"texts": ["fine"], "tasks": []}).status_code == 422  # names no task
        for route, body in (("/encode", {"texts": ["\u200b\ufeff"]}), ("/similarity", {"a": ["ok"], "b": ["\u2060"]})):
            r = c.post(route, json=body)
            assert r.status_code == 422 and "empty text (only invisible characters)" in r.json()["detail"]
        raw = c.post("/similarity", json={"a": SENTENCES[:2], "b": SENTENCES[:3]}).text
        scores = json.loads(raw)["scores"]
        assert all(v == round(v, 6) for row in scores for v in row)
        assert all(len(repr(v).split(".")[-1]) <= 6 for row in scores for v in row)
        emb = c.post("/encode", json={"texts": ["fine"]}).json()["embeddings"][0]
        assert all(v == round(v, 6) for v in emb)


@pytest.mark.parametrize("command", ["predict", "encode"])
def test_cli_rejects_undecodable_arguments(finished_run: Path, capsys, command: str) -> None:
    text = "bad \udcff byte"  # what Python makes of the byte 0xff in argv
    args = [command, str(finished_run), text] if command == "predict" else [command, text, "--model", str(finished_run)]
    assert main(args) == 2
    assert "not valid Unicode" in capsys.readouterr().err


# --------------------------------------------------------------------------- 6. the smaller ones
def test_encoder_from_a_run_directory(finished_run: Path) -> None:
    encoder = SentenceEncoder.from_pretrained(str(finished_run))
    model = MultiTaskModel.load(finished_run)
    assert np.allclose(encoder.encode(SENTENCES), model.encode(SENTENCES), atol=1e-6)
    assert SentenceEncoder.from_pretrained(str(finished_run), pooling="max").pooling == "max"


def test_confusion_png_title_fits() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from mtst.report import confusion_figure

    metrics = {"confusion": [[4, 1], [2, 3]], "labels": ["neg", "pos"], "accuracy": 0.735, "macro_f1": 0.735}
    fig = confusion_figure("sentiment", metrics)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    width, height = fig.canvas.get_width_height()
    assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height
    assert "macro-F1 73.5%" in fig._suptitle.get_text()
    plt.close(fig)


def test_sentence_transformers_export_loads_without_missing_weights(
    finished_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    assert main(["export", str(finished_run), "-o", str(tmp_path / "st"), "--format", "sentence-transformers"]) == 0
    capfd.readouterr()
    SentenceTransformer(str(tmp_path / "st"), device="cpu")
    out, err = capfd.readouterr()
    assert "MISSING" not in out + err and "newly initialized" not in out + err


def test_serve_fails_cleanly_on_a_busy_port_or_a_missing_run(finished_run: Path, tmp_path: Path, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(finished_run), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"--port {port}" in err and "serving" not in err
    assert main(["serve", str(tmp_path / "nonexistent")]) == 2
    assert "serving" not in capsys.readouterr().err


def test_nan_stop_is_written_to_train_log(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    from mtst.config import load_config
    from mtst.training.trainer import StepEvent, TrainingError, train

    def poison(event: StepEvent) -> None:
        if event.state.global_step == 2:
            with torch.no_grad():
                event.model.heads["category"][-1].weight.fill_(float("nan"))

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_backbone_dir, tiny_data, tmp_path / "run"))
    with pytest.raises(TrainingError):
        train(cfg, callbacks=[poison], show_progress=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "ERROR" in log and "at step 3" in log
