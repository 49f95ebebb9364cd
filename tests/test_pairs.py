"""Sentence-pair tasks: data, alignment under length-sorting, losses, mixed configs, and every way out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtst.cli import main
from mtst.config import validate_config
from mtst.data import Split, TaskSource, build_task_data
from mtst.errors import ConfigError, DataError
from mtst.modeling import tasktypes
from mtst.modeling.heads import HeadSpec
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.predictions import UnknownTaskError
from mtst.training.runtime.batches import Batcher
from mtst.training.trainer import setup_run, train
from tests.test_tasktypes import _row

PREMISES = ["a man plays a guitar on stage", "a woman cooks dinner", "the dog runs", "kids play football outside"]
HYPOTHESES = {
    "entailment": "{} happily",
    "contradiction": "nobody is there at all",
    "neutral": "someone is outside, maybe at night",
}


def _pair(i: int) -> dict[str, Any]:
    label = list(HYPOTHESES)[i % 3]
    premise = PREMISES[i % 4] + " " + "very " * (i % 5)  # lengths vary: length-sorting reorders rows
    score = {"entailment": 4.5, "neutral": 2.5, "contradiction": 0.5}[label] + 0.1 * (i % 4)
    return {"premise": premise, "hypothesis": HYPOTHESES[label].format(premise), "label": label, "score": score}


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Pair files (premise, hypothesis, label, score) and single-text files (text, topic, tags, stars)."""
    d = tmp_path_factory.mktemp("pairs")
    out: dict[str, dict[str, str]] = {"pairs": {}, "texts": {}}
    for split, (start, n) in {"train": (0, 36), "validation": (100, 9), "test": (200, 9)}.items():
        (d / f"p_{split}.jsonl").write_text("".join(json.dumps(_pair(start + i)) + "\n" for i in range(n)))
        (d / f"t_{split}.jsonl").write_text("".join(json.dumps(_row(start + i)) + "\n" for i in range(n)))
        out["pairs"][split] = str(d / f"p_{split}.jsonl")
        out["texts"][split] = str(d / f"t_{split}.jsonl")
    return out


def pair_config(backbone: Path, data: dict[str, dict[str, str]], run: Path, mixed: bool = True, **training: Any) -> Any:
    columns = ["premise", "hypothesis"]
    tasks: dict[str, Any] = {
        "nli": {"type": "pair_classification", "text_columns": columns, "label_column": "label", "data": data["pairs"]},
        "sim": {"type": "pair_similarity", "text_columns": columns, "label_column": "score", "data": data["pairs"]},
    }
    if mixed:
        tasks |= {"topic": {}, "tags": {"type": "multi_label"}}
    return validate_config(
        {
            "model": {"backbone": str(backbone), "max_length": 32},
            "tasks": tasks,
            "data": data["texts"] if mixed else {},
            "training": {"batch_size": 8, "epochs": 3, "min_steps": None, "lr_head": 1e-2, "lr_backbone": 1e-3}
            | training,
            "output_dir": str(run),
        }
    )


# --------------------------------------------------------------------------- config and data
def test_pair_options_and_shared_files_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"text_columns applies to pair_classification and pair_similarity"):
        validate_config({"data": {"train": "x.csv"}, "tasks": {"topic": {"text_columns": ["a", "b"]}}})
    with pytest.raises(ConfigError, match=r"loss: 'mse' is not a loss of pair_similarity tasks; allowed: cosent"):
        validate_config({"data": {"train": "x.csv"}, "tasks": {"s": {"type": "pair_similarity", "loss": "mse"}}})
    with pytest.raises(ConfigError, match=r"tasks.nli: a pair task reads its own files"):
        validate_config({"data": {"train": "x.csv"}, "tasks": {"topic": {}, "nli": {"type": "pair_classification"}}})
    only_pairs = {"nli": {"type": "pair_classification"}, "sim": {"type": "pair_similarity", "label_column": "s"}}
    assert validate_config({"data": {"train": "x.csv"}, "tasks": only_pairs}).tasks["nli"].pair_columns == (
        "sentence1",
        "sentence2",
    )


def test_a_missing_second_text_names_its_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": "one", "b": "two", "y": "x"}\n{"a": "three", "b": " ", "y": "z"}\n')
    src = TaskSource("y", kind="pair_classification", pair=("a", "b"))
    with pytest.raises(DataError, match=r"p.jsonl, column 'b', row 2: empty text"):
        build_task_data({"nli": src}, {"train": str(path)}, "text")
    path.write_text('{"a": "one", "b": "two", "y": "x"}\n{"a": "three", "y": "z"}\n')
    with pytest.raises(DataError, match=r"column 'b' is missing on row\(s\) 2"):
        build_task_data({"nli": src}, {"train": str(path)}, "text")
    path.write_text('{"a": "one", "b": "two", "y": "x"}\n{"a": "three", "b": "four", "y": "z"}\n')
    split = build_task_data({"nli": src}, {"train": str(path)}, "text").splits["train"]
    assert split.texts == ["one", "three"] and split.second == ["two", "four"]


# --------------------------------------------------------------------------- alignment and losses
def test_pairs_stay_aligned_under_length_sorting(tiny_backbone_dir: Path) -> None:
    torch.manual_seed(0)
    tasks = {
        "nli": HeadSpec(type="pair_classification", labels=["a", "b", "c"]),
        "sim": HeadSpec(type="pair_similarity"),
    }
    model = MultiTaskModel.from_backbone(tasks, backbone=str(tiny_backbone_dir)).eval()
    rows = [_pair(i) for i in range(9)]
    first, second = [r["premise"] for r in rows], [r["hypothesis"] for r in rows]
    ids, pair_ids = model.encoder.tokenize_ids(first), model.encoder.tokenize_ids(second)
    _, batched = model.outputs_ids(ids, ["nli", "sim"], batch_size=4, pair_ids=pair_ids)
    for i in range(len(rows)):  # each pair alone: no padding, no reordering
        _, alone = model.outputs_ids([ids[i]], ["nli", "sim"], batch_size=1, pair_ids=[pair_ids[i]])
        assert np.allclose(batched["nli"][i], alone["nli"][0], atol=1e-5)
        assert np.allclose(batched["sim"][i], alone["sim"][0], atol=1e-5)
    u = model.encode(first, normalize=True, convert_to="torch")
    v = model.encode(second, normalize=True, convert_to="torch")
    assert np.allclose(batched["sim"][:, 0], (u * v).sum(-1).numpy(), atol=1e-5)
    # training batches: a mixed batch's pair rows get their own second texts, the others zeros
    seconds = [pair_ids[i] if i % 2 else None for i in range(9)]
    batcher = Batcher(Split("train", first, {}), ids, None, model.encoder.pad_id, [], seconds)
    picked = np.array([7, 2, 5, 0, 3])
    first_emb = torch.zeros(5, model.encoder.dim)
    with torch.no_grad():
        got = batcher.pair_embedding(model.encoder, picked, torch.device("cpu"), first_emb)
        want = model.encoder.encode([second[i] for i in (7, 5, 3)], normalize=False, convert_to="torch")
    assert got is not None and torch.allclose(got[[0, 2, 4]], want, atol=1e-5) and not got[[1, 3]].any()


def test_cosent_orders_cosines_like_the_scores() -> None:
    score = torch.tensor([5.0, 3.0, 1.0])
    right = tasktypes.cosent_loss(torch.tensor([0.9, 0.5, 0.1]), score)
    wrong = tasktypes.cosent_loss(torch.tensor([0.1, 0.5, 0.9]), score)
    assert right < 0.1 < wrong
    assert tasktypes.cosent_loss(torch.tensor([0.3, 0.3]), torch.tensor([2.0, 2.0])).item() == 0.0  # no ordered pair
    spec = HeadSpec(type="pair_similarity", score_range=[0.0, 5.0], loss="cosine_mse")
    got = tasktypes.loss(spec, torch.tensor([[0.5], [0.2]]), torch.tensor([5.0, float("nan")]))
    assert got.item() == pytest.approx(0.25)


# --------------------------------------------------------------------------- through training and out
def test_mixed_pair_config_one_step_has_finite_gradients(
    tiny_backbone_dir: Path, pair_data: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    run = setup_run(
        pair_config(tiny_backbone_dir, pair_data, tmp_path / "run", strategy="full", max_steps=1), show_progress=False
    )
    train_split = run.inputs.data.splits["train"]
    assert train_split.second is not None
    pair_rows = [i for i, s in enumerate(train_split.second) if s is not None][:4]
    text_rows = [i for i, s in enumerate(train_split.second) if s is None][:4]
    loss = run.batch_loss(np.array(pair_rows + text_rows))
    loss.backward()
    for task in ("topic", "tags", "nli"):
        grads = [p.grad for p in run.model.heads[task].parameters()]
        assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads), task
    layer = run.model.encoder.backbone.encoder.layer[0].attention.self.query.weight.grad
    assert layer is not None and torch.isfinite(layer).all() and layer.abs().sum() > 0
    if run.lock is not None:
        run.lock.release()


@pytest.mark.parametrize("strategy", ["auto", "frozen", "lora"])
def test_pair_tasks_train_save_and_predict_alike_everywhere(
    tiny_backbone_dir: Path,
    pair_data: dict[str, dict[str, str]],
    tmp_path: Path,
    strategy: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fastapi.testclient import TestClient

    from mtst.config import ServeSettings
    from mtst.export import OnnxPredictor, export
    from mtst.serve import create_app

    result = train(pair_config(tiny_backbone_dir, pair_data, tmp_path / "run", strategy=strategy), show_progress=False)
    assert {"accuracy", "macro_f1"} <= set(result.test["nli"]) and set(result.test["sim"]) == {
        "n",
        "spearman",
        "pearson",
    }
    if strategy == "auto":
        assert result.strategy == "full" and result.test["sim"]["spearman"] > 0.5
    model = MultiTaskModel.load(tmp_path / "run" / "model")
    assert model.tasks["nli"].text_columns == ["premise", "hypothesis"]
    rows = [_pair(300 + i) for i in range(5)]
    first, second = [r["premise"] for r in rows], [r["hypothesis"] for r in rows]
    ours = model.predict(first, pairs=second)
    assert set(ours[0]) == {"nli", "sim"} and set(ours[0]["sim"]) == {"similarity"}
    assert set(model.predict(first)[0]) == {"topic", "tags"}  # single texts: the single-text tasks
    with pytest.raises(UnknownTaskError, match="nli read pairs of texts"):
        model.predict(first, tasks=["nli"])
    onnx = OnnxPredictor(export(tmp_path / "run", "onnx", tmp_path / "onnx"))
    for a, b in zip(ours, onnx.predict(first, pairs=second), strict=True):
        assert a["nli"]["label"] == b["nli"]["label"]
        assert np.allclose(
            list(a["nli"]["probabilities"].values()), list(b["nli"]["probabilities"].values()), atol=1e-4
        )
        assert a["sim"]["similarity"] == pytest.approx(b["sim"]["similarity"], abs=1e-4)
    assert onnx.predict(first)[0].keys() == {"topic", "tags"}
    if strategy == "auto":  # the OpenVINO export reads the same pair heads' graph, and serves pairs
        openvino = OnnxPredictor(export(tmp_path / "run", "openvino", tmp_path / "openvino"))
        with TestClient(create_app(openvino, ServeSettings(), "pairs")) as client:
            body = {"pairs": [[a, b] for a, b in zip(first, second, strict=True)]}
            exported = client.post("/predict", json=body).json()["predictions"]
        for a, b in zip(ours, exported, strict=True):
            assert a["nli"]["label"] == b["nli"]["label"]
            assert a["sim"]["similarity"] == pytest.approx(b["sim"]["similarity"], abs=1e-4)
    with TestClient(create_app(model, ServeSettings(), "pairs")) as client:
        served = client.post("/predict", json={"pairs": [[a, b] for a, b in zip(first, second, strict=True)]})
        texts = client.post("/predict", json={"texts": first}).json()["predictions"]
        both = client.post("/predict", json={"texts": first, "pairs": [[first[0], second[0]]]})
        odd = client.post("/predict", json={"pairs": [[first[0]]]})
    assert served.status_code == 200
    for a, b in zip(ours, served.json()["predictions"], strict=True):
        assert a["nli"]["label"] == b["nli"]["label"] and a["sim"]["similarity"] == pytest.approx(
            b["sim"]["similarity"], abs=1e-4
        )
    assert texts == model.predict(first)
    assert both.status_code == 422 and "one of the two" in both.text
    assert odd.status_code == 422 and "pairs[0]: a pair is two texts" in odd.text
    # a file of the model's two text columns and no text column: `mtst predict --data` reads it as pairs
    table = tmp_path / "pairs.csv"
    table.write_text("premise,hypothesis\n" + "".join(f'"{a}","{b}"\n' for a, b in zip(first, second, strict=True)))
    for where in (tmp_path / "run", tmp_path / "onnx"):
        capsys.readouterr()
        assert main(["predict", str(where), "--data", str(table)]) == 0
        out = capsys.readouterr()
        lines = [json.loads(line) for line in out.out.splitlines()]
        assert [r["text_pair"] for r in lines] == second and [r["nli"]["label"] for r in lines] == [
            r["nli"]["label"] for r in ours
        ]
        assert "reading pairs from its columns premise,hypothesis" in out.err.replace("\n", "")
    # a plain text file holds single texts, whatever tasks the model has; --tasks of single-text tasks
    # never reads a table as pairs (each asks for the input its tasks read)
    lines = tmp_path / "x.txt"
    lines.write_text("".join(t + "\n" for t in first))
    assert main(["predict", str(tmp_path / "run"), "--data", str(lines)]) == 0
    assert [set(json.loads(line)) for line in capsys.readouterr().out.splitlines()] == [{"text", "topic", "tags"}] * 5
    assert main(["predict", str(tmp_path / "run"), "--data", str(table), "--tasks", "topic"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "no column 'text'" in err and "reading pairs" not in err and ".txt" not in err


def test_compare_runs_pair_and_multi_label_tasks_side_by_side(
    tiny_backbone_dir: Path, pair_data: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """`mtst compare` on a config of every task type: each run is scored by its tasks' own measures."""
    import yaml

    config = pair_config(tiny_backbone_dir, pair_data, tmp_path / "unused")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"output_dir"})))
    out = tmp_path / "report"
    assert main(["compare", str(path), "--strategies", "frozen,full", "-o", str(out), "-q"]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {r["label"] for r in runs} == {"frozen", "full"}
    for run in runs:
        scores = run["metrics"]["test"]
        assert {"nli/accuracy", "sim/spearman", "tags/micro_f1", "topic/macro_f1", "mean_macro_f1"} <= set(scores)
    full = next(r for r in runs if r["label"] == "full")["metrics"]["test"]
    frozen = next(r for r in runs if r["label"] == "frozen")["metrics"]["test"]
    assert full["sim/spearman"] != frozen["sim/spearman"]  # fine-tuning trains the pair similarity; frozen does not
