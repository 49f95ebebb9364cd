"""OpenVINO export: parity with the torch model in fp32, static int8 on calibration texts, and the commands
that run an export (encode, similarity, search, predict, serve)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtst.cli import main
from mtst.export import OnnxPredictor, export
from mtst.modeling.model import MultiTaskModel
from tests.conftest import SENTENCES, make_tasks
from tests.test_export import assert_same_class_predictions

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def saved_model(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    tasks = make_tasks()
    tasks["tags"] = tasks["category"].model_copy(update={"type": "token_classification", "labels": ["O", "B-X"]})
    model = MultiTaskModel.from_backbone(tasks, backbone=str(tiny_backbone_dir), pooling="max")
    return model.save(tmp_path_factory.mktemp("ov") / "model")


@pytest.fixture(scope="module")
def int8_export(saved_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(saved_model, "openvino", tmp_path_factory.mktemp("ov") / "int8", "int8", calibration=SENTENCES * 4)


def test_fp32_export_matches_torch(saved_model: Path, tmp_path: Path) -> None:
    out = export(saved_model, "openvino", tmp_path / "ov")
    assert (out / "openvino_model.xml").is_file() and not (out / "model.onnx").exists()
    model, ov = MultiTaskModel.load(saved_model), OnnxPredictor(out)
    assert ov.runtime == "openvino"
    assert np.allclose(ov.encode(SENTENCES), model.encode(SENTENCES), atol=1e-4)
    assert_same_class_predictions(model, ov)
    texts = [*SENTENCES, "Price: $12.50, from Acme!"]
    for a, b in zip(model.predict(texts, tasks=["tags"]), ov.predict(texts, tasks=["tags"]), strict=True):
        assert a["tags"]["tags"] == b["tags"]["tags"]


def test_int8_export_is_calibrated_and_stays_close(saved_model: Path, int8_export: Path) -> None:
    meta = json.loads((int8_export / "mtst_onnx.json").read_text())
    assert meta["runtime"] == "openvino" and meta["quantize"] == "int8"
    assert meta["calibration_texts"] == len(SENTENCES) * 4
    xml = (int8_export / "openvino_model.xml").read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml  # quantised, not a copy of the fp32 graph
    ours = MultiTaskModel.load(saved_model).encode(SENTENCES)
    theirs = OnnxPredictor(int8_export).encode(SENTENCES)
    cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > 0.99


def test_commands_run_an_export(
    saved_model: Path, int8_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["encode", "--model", str(int8_export), *SENTENCES[:2]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = OnnxPredictor(int8_export).encode(SENTENCES[:2])
    assert np.allclose([r["embedding"] for r in rows], expected, atol=1e-5)
    assert main(["similarity", "--model", str(int8_export), SENTENCES[0], SENTENCES[1]]) == 0
    score = float(capsys.readouterr().out)
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert score == pytest.approx(float(unit[0] @ unit[1]), abs=1e-5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    assert main(["search", "--model", str(int8_export), "-c", str(corpus), "-q", SENTENCES[2], "-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == SENTENCES[2]
    assert main(["predict", str(int8_export), "--tasks", "category", SENTENCES[0]]) == 0
    assert "label" in json.loads(capsys.readouterr().out)["category"]
    encoder = OnnxPredictor(int8_export).encoder  # the torch encoder's Python API: a string gives one vector
    assert encoder.encode(SENTENCES[0]).shape == (32,)
    assert float(encoder.similarity(SENTENCES[0], SENTENCES[1])[0, 0]) == pytest.approx(score, abs=1e-5)
    assert main(["encode", "--model", str(int8_export), "--normalize", SENTENCES[0]]) == 0
    vector = np.array(json.loads(capsys.readouterr().out)["embedding"])
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5) and np.linalg.norm(expected[0]) > 1.01
    # What an export fixed when it was written cannot be asked for again.
    assert main(["encode", "--model", str(int8_export), "--pooling", "mean", "x"]) == 2
    assert "pooling was fixed" in capsys.readouterr().err


def test_export_options_are_checked_before_writing(
    saved_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "out"
    assert main(["export", str(saved_model), "-o", str(out), "--format", "onnx", "--calibration", str(texts)]) == 2
    assert "--calibration applies to --format openvino --quantize int8" in capsys.readouterr().err
    assert main(["export", str(saved_model), "-o", str(out), "-f", "openvino", "--quantize", "int4"]) == 2
    assert "int4" in capsys.readouterr().err
    assert not out.exists()
    args = ["export", str(saved_model), "-o", str(out), "-f", "openvino", "--quantize", "int8"]
    assert main([*args, "--calibration", str(texts)]) == 0
    assert json.loads((out / "mtst_onnx.json").read_text())["calibration_texts"] == len(SENTENCES)


def test_missing_nncf_fails_before_tracing(
    saved_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """int8 needs nncf beside openvino: without it the export stops before the ONNX trace, writing nothing."""
    import sys

    import mtst.export.openvino

    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    traced: list[Path] = []
    monkeypatch.setattr(mtst.export.openvino, "write_onnx", lambda model, tmp, quantize: traced.append(tmp))
    out = tmp_path / "out"
    assert main(["export", str(saved_model), "-o", str(out), "-f", "openvino", "--quantize", "int8"]) == 2
    assert "int8 OpenVINO export needs nncf: pip install 'mtst[openvino]'" in capsys.readouterr().err
    assert traced == [] and not out.exists()


def test_serve_answers_from_an_export(int8_export: Path) -> None:
    from fastapi.testclient import TestClient

    from mtst.serve import ServeSettings, create_app
    from mtst.serve.server import load_served

    settings = ServeSettings(precision="auto")
    with TestClient(create_app(load_served(int8_export, settings), settings, "int8")) as client:
        info = client.get("/info").json()
        assert info["precision"] == "int8 (openvino)" and set(info["tasks"]) == {"category", "sentiment", "tags"}
        predictions = client.post("/predict", json={"texts": SENTENCES[:3], "tasks": ["category"]}).json()
        expected = OnnxPredictor(int8_export).predict(SENTENCES[:3], tasks=["category"])
        assert [p["category"]["label"] for p in predictions["predictions"]] == [
            e["category"]["label"] for e in expected
        ]
        emb = client.post("/encode", json={"texts": SENTENCES[:2]}).json()
        assert emb["dim"] == 32 and len(emb["embeddings"]) == 2
    with pytest.raises(Exception, match="an export runs at the precision it was written with"):
        load_served(int8_export, ServeSettings(precision="bf16"))


def _cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: str | None, machine: str = "x86_64") -> Path:
    """A CPU seen through a fake /proc/cpuinfo, torch's own probes saying no."""
    import platform

    for probe in ("_is_vnni_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    info = tmp_path / "cpuinfo"
    if flags is not None:
        info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return info


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        ("fpu sse4_2 avx fma avx2", "x86_64", False),  # AVX2 only: int8 runs no faster than fp32
        ("fpu avx2 avx512f avx512_vnni", "x86_64", True),
        ("fpu avx2 avx_vnni", "x86_64", True),
        ("fpu avx2 amx_tile amx_int8", "x86_64", True),
        (None, "x86_64", None),  # no /proc/cpuinfo: cannot tell
        ("fp asimd", "aarch64", None),  # not x86: VNNI is not the question there
    ],
)
def test_int8_dot_product_reads_the_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: str | None, machine: str, expected: bool | None
) -> None:
    from mtst.export.openvino import int8_dot_product

    assert int8_dot_product(_cpu(monkeypatch, tmp_path, flags, machine)) is expected
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True, raising=False)
    assert int8_dot_product(tmp_path / "cpuinfo") is True  # torch's probe is enough


@pytest.mark.parametrize("has_int8", [False, True, None])
def test_int8_on_a_cpu_without_int8_instructions_is_named_once(
    int8_export: Path,
    saved_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    has_int8: bool | None,
) -> None:
    import mtst.export.openvino as eo

    monkeypatch.setattr(eo, "int8_dot_product", lambda: has_int8)
    eo.note_slow_int8.cache_clear()
    with caplog.at_level("WARNING", logger="mtst.export.openvino"):
        OnnxPredictor(int8_export)
        OnnxPredictor(int8_export)
    notes = [r for r in caplog.records if "no int8 dot-product" in r.getMessage()]
    assert len(notes) == (1 if has_int8 is False else 0)
    assert not notes or "--format onnx --quantize int8" in notes[0].getMessage()
    eo.note_slow_int8.cache_clear()
    caplog.clear()
    with caplog.at_level("WARNING", logger="mtst.export.openvino"):
        OnnxPredictor(export(saved_model, "openvino", int8_export.parent / f"fp32-{has_int8}"))  # fp32: no note
    assert not [r for r in caplog.records if "no int8 dot-product" in r.getMessage()]
    eo.note_slow_int8.cache_clear()


def test_int8_export_on_a_cpu_without_int8_instructions_says_so(
    saved_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mtst.export.openvino as eo

    monkeypatch.setattr(eo, "int8_dot_product", lambda: False)
    eo.note_slow_int8.cache_clear()
    with caplog.at_level("WARNING", logger="mtst.export.openvino"):
        export(saved_model, "openvino", tmp_path / "int8", "int8", calibration=SENTENCES)
    assert [r for r in caplog.records if "no int8 dot-product" in r.getMessage()]
    eo.note_slow_int8.cache_clear()
