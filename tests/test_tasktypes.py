"""Multi-label and regression tasks: data, thresholds, metrics, fitted heads, the stage, and every way out."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtst.cli import main
from mtst.config import validate_config
from mtst.data import TaskSource, build_task_data
from mtst.errors import ConfigError, DataError
from mtst.evaluate import evaluate_file, multi_label_metrics, regression_metrics
from mtst.modeling import tasktypes
from mtst.modeling.heads import HeadSpec
from mtst.modeling.logistic import fit_one_vs_rest, fit_ridge
from mtst.modeling.model import MultiTaskModel
from mtst.training.stages.contrastive import contrastive_loss, label_batches, pair_targets
from mtst.training.trainer import setup_run, train

TOPICS = {
    "books": "a gripping novel with many pages",
    "kitchen": "this pan cooks well on the stove",
    "toys": "the kids play with this doll",
}


def _row(i: int) -> dict[str, Any]:
    topic = list(TOPICS)[i % 3]
    tags = [t for t, on in (("gift", i % 2 == 0), ("cheap", i % 3 == 1)) if on]
    words = " ".join(["cheap"] * ("cheap" in tags) + ["gift"] * ("gift" in tags))
    return {"text": f"{TOPICS[topic]} {words} {'great ' * (i % 4)}{i}", "topic": topic, "tags": tags, "stars": i % 4}


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """JSON Lines with a classification, a multi-label and a regression column."""
    d = tmp_path_factory.mktemp("mixed")
    out = {}
    for split, (start, n) in {"train": (0, 48), "validation": (100, 12), "test": (200, 12)}.items():
        path = d / f"{split}.jsonl"
        path.write_text("".join(json.dumps(_row(start + i)) + "\n" for i in range(n)))
        out[split] = str(path)
    return out


def mixed_config(backbone: Path, data: dict[str, str], run: Path, **training: Any) -> Any:
    return validate_config(
        {
            "model": {"backbone": str(backbone), "max_length": 32},
            "tasks": {"topic": {}, "tags": {"type": "multi_label"}, "stars": {"type": "regression"}},
            "data": dict(data),
            "training": {"batch_size": 8, "epochs": 3, "min_steps": None, "lr_head": 1e-2, "lr_backbone": 1e-3}
            | training,
            "output_dir": str(run),
        }
    )


# --------------------------------------------------------------------------- data
def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_label_sets_from_json_lists_and_delimited_cells(tmp_path: Path) -> None:
    jsonl = _write(
        tmp_path / "a.jsonl",
        '{"text": "x", "e": ["joy", "love"]}\n{"text": "y", "e": []}\n{"text": "z"}\n'
        '{"text": "w", "e": "[\\"fear\\"]"}\n',
    )
    missing = TaskSource("e", kind="multi_label", empty_cell="missing")
    data = build_task_data({"e": missing}, {"train": jsonl}, "text")
    split = data.splits["train"]
    assert data.labels["e"] == ["fear", "joy", "love"]
    assert split.targets["e"].tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert split.rows_for("e").tolist() == [0, 1, 3]  # the row without the key has no label; [] is a row
    csv = _write(tmp_path / "a.csv", 'text,e\nx,"joy|love"\ny,[]\nz,\n')
    data = build_task_data({"e": TaskSource("e", kind="multi_label", delimiter="|")}, {"train": csv}, "text")
    assert data.splits["train"].targets["e"].tolist() == [[1, 1], [0, 0], [0, 0]]
    assert data.splits["train"].rows_for("e").tolist() == [0, 1, 2]  # the file's only task: empty is no labels
    numbered = _write(tmp_path / "n.jsonl", '{"text": "a", "e": [10, 2]}\n{"text": "b", "e": [1]}\n')
    data = build_task_data({"e": TaskSource("e", kind="multi_label")}, {"train": numbered}, "text")
    assert data.labels["e"] == ["1", "2", "10"]  # label ids in their numeric order, as for classification


def test_empty_multi_label_cells_read_by_who_else_labels_the_file(tmp_path: Path) -> None:
    """A CSV writes an empty label set as an empty cell: where the file labels only this task, that is a row
    with no labels; where other tasks label the file too, it is a row without this task; both are said."""
    alone = _write(tmp_path / "alone.csv", 'text,e\nx,"joy,love"\ny,\nz,fear\n')
    data = build_task_data({"e": TaskSource("e", kind="multi_label")}, {"train": alone}, "text")
    assert data.splits["train"].rows_for("e").tolist() == [0, 1, 2]
    assert data.splits["train"].targets["e"][1].tolist() == [0, 0, 0]
    assert data.notes == [
        "e: 1 of 3 rows of alone.csv have an empty 'e' cell, read as no labels "
        "(empty_cell: missing leaves such rows out of the task)"
    ]
    shared = _write(tmp_path / "shared.csv", 'text,e,topic\nx,"joy,love",a\ny,,b\nz,fear,\n')
    sources = {"e": TaskSource("e", kind="multi_label"), "topic": TaskSource("topic")}
    data = build_task_data(sources, {"train": shared}, "text")
    assert data.splits["train"].rows_for("e").tolist() == [0, 2]  # row y labels the topic only
    assert "left out of the task (other tasks label this file)" in data.notes[0]
    sources["e"] = TaskSource("e", kind="multi_label", empty_cell="none")
    data = build_task_data(sources, {"train": shared}, "text")
    assert data.splits["train"].rows_for("e").tolist() == [0, 1, 2]
    assert (
        build_task_data(
            {"e": sources["e"]}, {"train": _write(tmp_path / "full.csv", "text,e\nx,joy\ny,fear\n")}, "text"
        ).notes
        == []
    )


def test_label_sets_from_one_column_per_label(tmp_path: Path) -> None:
    """Many multi-label sets come as one 0/1 column per label (toxic, obscene, ...): label_columns reads them."""
    csv = _write(tmp_path / "t.csv", "text,toxic,obscene,threat\na,0,0,1\nb,0,0,0\nc,,,\nd,true,1.0,no\n")
    source = TaskSource("tox", kind="multi_label", columns=("toxic", "obscene", "threat"))
    data = build_task_data({"tox": source}, {"train": csv}, "text")
    assert data.labels["tox"] == ["toxic", "obscene", "threat"]  # the columns' order
    assert data.splits["train"].targets["tox"].tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0], [1, 1, 0]]
    assert data.splits["train"].rows_for("tox").tolist() == [0, 1, 2, 3]
    assert "every label column empty, read as no labels" in data.notes[0]
    # a label no training row has could never be predicted: refused, not trained to always say no
    never = _write(tmp_path / "n.csv", "text,toxic,obscene,threat\na,1,0,0\nb,0,1,0\n")
    with pytest.raises(DataError, match=r"label\(s\) 'threat' of tasks.tox.label_columns are on no training row"):
        build_task_data({"tox": source}, {"train": never}, "text")
    bad = _write(tmp_path / "b.csv", "text,toxic,obscene,threat\na,1,0,0\nb,0,2,0\n")
    with pytest.raises(DataError, match=r"row 2, column 'obscene': expected 0 or 1 \(or true/false\), got '2'"):
        build_task_data({"tox": source}, {"train": bad}, "text")
    partial = _write(tmp_path / "p.csv", "text,toxic\na,1\n")
    with pytest.raises(DataError, match=r"no column\(s\) obscene, threat of task 'tox'"):
        build_task_data({"tox": source}, {"train": partial}, "text")
    base = {"data": {"train": "x.csv"}}
    config = validate_config({**base, "tasks": {"tox": {"type": "multi_label", "label_columns": ["toxic", "threat"]}}})
    assert config.tasks["tox"].label_columns == ["toxic", "threat"]
    for task, message in (
        ({"label_columns": ["a", "b"]}, "label_columns applies to multi_label tasks only"),
        ({"type": "multi_label", "label_columns": ["a", "b"], "labels": ["a", "b"]}, "the columns are the labels"),
        ({"type": "multi_label", "label_columns": ["a", "a"]}, "repeated: a"),
        ({"type": "multi_label", "label_columns": ["a"]}, "label_columns"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate_config({**base, "tasks": {"tox": task}})


def test_a_saved_model_reads_empty_cells_as_it_was_trained_to(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from mtst.data import labelled_split
    from mtst.evaluate import model_sources

    csv = _write(tmp_path / "t.csv", "text,e\nx,joy\ny,\n")
    for empty_cell, rows in (("auto", [0, 1]), ("missing", [0]), (None, [0, 1])):  # None: a model saved before
        spec = HeadSpec(type="multi_label", labels=["fear", "joy"], label_column="e", empty_cell=empty_cell)
        sources = model_sources(SimpleNamespace(tasks={"e": spec}), ["e"])  # type: ignore[arg-type]
        split = labelled_split(csv, sources, {"e": spec.labels})
        assert split is not None and split.rows_for("e").tolist() == rows
    one_hot = _write(tmp_path / "h.csv", "text,fear,joy\nx,0,1\ny,1,1\n")
    spec = HeadSpec(type="multi_label", labels=["fear", "joy"], label_column="e", label_columns=["fear", "joy"])
    sources = model_sources(SimpleNamespace(tasks={"e": spec}), ["e"])  # type: ignore[arg-type]
    split = labelled_split(one_hot, sources, {"e": spec.labels})
    assert split is not None and split.targets["e"].tolist() == [[0, 1], [1, 1]]


def test_bad_values_name_the_row_and_column(tmp_path: Path) -> None:
    bad_score = _write(tmp_path / "s.csv", "text,score\na,1.5\nb,high\n")
    with pytest.raises(DataError, match=r"row 2, column 'score': expected a number, got 'high'"):
        build_task_data({"score": TaskSource("score", kind="regression")}, {"train": bad_score}, "text")
    bad_set = _write(tmp_path / "m.jsonl", '{"text": "a", "e": ["joy"]}\n{"text": "b", "e": 3}\n')
    with pytest.raises(DataError, match=r"row 2, column 'e': expected a list of labels"):
        build_task_data({"e": TaskSource("e", kind="multi_label")}, {"train": bad_set}, "text")
    joined = _write(tmp_path / "j.csv", "text,e\na,joy;love\nb,joy\nc,love\n")
    with pytest.raises(DataError, match=r"row 1, .*'joy;love' looks like several labels joined by ';'.*delimiter: ';'"):
        build_task_data({"e": TaskSource("e", kind="multi_label")}, {"train": joined}, "text")
    data = build_task_data({"e": TaskSource("e", kind="multi_label", delimiter=";")}, {"train": joined}, "text")
    assert data.labels["e"] == ["joy", "love"]
    # every cell joined by ';' (no part ever alone) is refused as well, not read as combined labels
    only_joined = _write(tmp_path / "o.csv", "text,e\na,books;positive\nb,toys;negative\n")
    with pytest.raises(DataError, match=r"row 1, .*'books;positive' looks like several labels joined by ';'"):
        build_task_data({"e": TaskSource("e", kind="multi_label")}, {"train": only_joined}, "text")
    # a label that really holds ';' is kept whole where the config's labels name it
    named = TaskSource("e", ["books;positive", "toys;negative"], kind="multi_label")
    assert build_task_data({"e": named}, {"train": only_joined}, "text").labels["e"] == named.labels
    # a JSON cell's labels are strings or numbers; a nested list is not read as the label "['books']"
    nested = _write(tmp_path / "n.jsonl", '{"text": "a", "e": [["books"]]}\n{"text": "b", "e": ["joy"]}\n')
    with pytest.raises(DataError, match=r"row 1, column 'e'.*expected a label \(a string or a number\), got list"):
        build_task_data({"e": TaskSource("e", kind="multi_label")}, {"train": nested}, "text")
    mixed = _write(tmp_path / "x.jsonl", '{"text": "a", "e": ["books"]}\n{"text": "b", "e": [1]}\n')
    kinds = r"labels of more than one kind \(row 1 holds text 'books'; row 2 holds number 1\)"
    with pytest.raises(DataError, match=kinds):
        build_task_data({"e": TaskSource("e", kind="multi_label")}, {"train": mixed}, "text")
    numbers = _write(tmp_path / "ids.jsonl", '{"text": "a", "e": [0, 2]}\n{"text": "b", "e": [1]}\n')
    assert build_task_data({"e": TaskSource("e", kind="multi_label")}, {"train": numbers}, "text").labels["e"] == [
        "0",
        "1",
        "2",
    ]  # label ids throughout: one kind, read as their text
    flags = _write(tmp_path / "f.jsonl", '{"text": "a", "c": "spam"}\n{"text": "b", "c": true}\n')
    with pytest.raises(DataError, match=r"row 2 holds true/false True"):
        build_task_data({"c": TaskSource("c")}, {"train": flags}, "text")
    single = _write(tmp_path / "c.jsonl", '{"text": "a", "c": ["books"]}\n{"text": "b", "c": "toys"}\n')
    with pytest.raises(DataError, match=r"row 1, column 'c': expected a label \(a string or a number\), got list"):
        build_task_data({"c": TaskSource("c")}, {"train": single}, "text")
    # a written-out NaN is not an empty cell, and a target the loss would overflow on is refused
    for value in ("nan", "NaN", "1e308", "-1e20"):
        bad = _write(tmp_path / "r.csv", f"text,score\na,1.5\nb,{value}\n")
        with pytest.raises(DataError, match=rf"row 2, column 'score': .*{value}"):
            build_task_data({"score": TaskSource("score", kind="regression")}, {"train": bad}, "text")
    empty = _write(tmp_path / "r.csv", "text,score\na,1.5\nb,\nc,2\n")
    data = build_task_data({"score": TaskSource("score", kind="regression")}, {"train": empty}, "text")
    assert data.splits["train"].rows_for("score").tolist() == [0, 2]  # an empty cell: a row without the task
    unknown = _write(tmp_path / "u.jsonl", '{"text": "a", "e": ["joy", "rage"]}\n{"text": "b", "e": ["sad"]}\n')
    with pytest.raises(DataError, match=r"'rage'.*known labels: joy, sad"):
        build_task_data({"e": TaskSource("e", ["joy", "sad"], kind="multi_label")}, {"train": unknown}, "text")


def test_cli_exits_2_on_a_score_that_is_not_a_number(
    tiny_backbone_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path / "train.csv", "text,stars\ngood,4\nbad,two\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: {{backbone: {tiny_backbone_dir}}}\ntasks: {{stars: {{type: regression}}}}\n"
        f"data: {{train: {data}}}\noutput_dir: {tmp_path / 'run'}\n"
    )
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "row 2, column 'stars': expected a number, got 'two'" in capsys.readouterr().err.replace("\n", " ")


def test_task_options_belong_to_their_type() -> None:
    base = {"data": {"train": "x.csv"}}
    with pytest.raises(ConfigError, match=r"tasks.topic.*threshold applies to multi_label tasks only"):
        validate_config({**base, "tasks": {"topic": {"threshold": 0.3}}})
    with pytest.raises(ConfigError, match=r"loss applies to regression and pair_similarity tasks only"):
        validate_config({**base, "tasks": {"tags": {"type": "multi_label", "loss": "huber"}}})
    with pytest.raises(ConfigError, match=r"regression task predicts a number and has no labels"):
        validate_config({**base, "tasks": {"stars": {"type": "regression", "labels": ["a", "b"]}}})
    with pytest.raises(ConfigError, match=r"training.metric.*stars/spearman"):
        validate_config({**base, "tasks": {"stars": {"type": "regression"}}, "training": {"metric": "stars/mae"}})
    with pytest.raises(ConfigError, match=r"standardize applies to regression tasks only"):
        validate_config({**base, "tasks": {"topic": {"standardize": False}}})
    with pytest.raises(ConfigError, match=r"empty_cell applies to multi_label tasks only"):
        validate_config({**base, "tasks": {"topic": {"empty_cell": "none"}}})
    with pytest.raises(ConfigError, match=r"empty_cell.*'auto', 'none' or 'missing'"):
        validate_config({**base, "tasks": {"tags": {"type": "multi_label", "empty_cell": "blank"}}})
    config = validate_config(
        {**base, "tasks": {"stars": {"type": "regression"}}, "training": {"metric": "stars/spearman"}}
    )
    assert validate_config(config.model_dump()) == config  # a saved run's config (every key listed) loads


# --------------------------------------------------------------------------- thresholds and metrics
def test_threshold_tuning_recovers_the_best_cut() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.3
    # positives score 0.2-0.4, negatives 0-0.25: the best cut lies between 0.25 and 0.3, far below 0.5
    scores = np.where(truth, 0.2 + 0.2 * rng.random(400), 0.25 * rng.random(400))
    cut = tasktypes.best_threshold(scores, truth)
    f1 = {t: _f1(scores >= t, truth) for t in np.round(np.arange(0.05, 0.951, 0.05), 2)}
    assert cut == max(f1, key=f1.get) and 0.2 <= cut <= 0.3
    assert _f1(scores >= cut, truth) > _f1(scores >= 0.5, truth) + 0.5
    assert tasktypes.best_threshold(scores, np.zeros(400, bool)) == 0.5  # no positive: nothing to tune
    assert tasktypes.tune_thresholds(np.stack([scores, scores], 1), np.stack([truth, truth], 1)) == [cut, cut]


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = (pred & truth).sum()
    return 2 * tp / max(1, pred.sum() + truth.sum())


def test_multi_label_and_regression_metrics() -> None:
    truth = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 0]])
    pred = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 1]])
    m = multi_label_metrics(truth, pred, ["a", "b", "c"])
    # tp 3 (a twice, b once), fp 1 (c), fn 2 (c, b): micro-F1 = 6 / (6 + 1 + 2)
    assert m["micro_f1"] == pytest.approx(6 / 9)
    assert m["accuracy"] == pytest.approx(0.5)  # rows 2 and 3 exactly right
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert m["macro_f1"] == pytest.approx(np.mean([1.0, 2 / 3, 0.0]))
    r = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 5.0]))
    assert r["mae"] == pytest.approx(0.5) and r["rmse"] == pytest.approx(np.sqrt(1.5 / 4))
    assert r["spearman"] == pytest.approx(1.0) and 0.9 < r["pearson"] < 1.0


def test_records_say_what_each_type_predicts() -> None:
    spec = HeadSpec(type="multi_label", labels=["a", "b", "c"], thresholds=[0.5, 0.2, 0.9])
    assert tasktypes.record(spec, np.array([0.6, 0.3, 0.8])) == {
        "labels": ["a", "b"],
        "probabilities": {"a": 0.6, "b": 0.3, "c": 0.8},
    }
    reg = HeadSpec(type="regression", target_mean=3.0, target_std=2.0)
    value = tasktypes.activate(reg, torch.tensor([[0.5]]))
    assert value.item() == pytest.approx(4.0) and tasktypes.record(reg, value[0].numpy()) == {"value": 4.0}
    assert reg.num_labels == 1
    with pytest.raises(ValueError, match="thresholds: 2 values for 3 labels"):
        HeadSpec(type="multi_label", labels=["a", "b", "c"], thresholds=[0.5, 0.5])


def test_losses_skip_unlabelled_rows() -> None:
    spec = HeadSpec(type="multi_label", labels=["a", "b"])
    logits = torch.tensor([[2.0, -2.0], [9.0, 9.0]])
    target = torch.tensor([[1.0, 0.0], [float("nan"), float("nan")]])
    assert tasktypes.loss(spec, logits, target).item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits[:1], target[:1]).item()
    )
    assert tasktypes.loss(spec, logits, torch.full((2, 2), float("nan"))) is None
    reg = HeadSpec(type="regression", target_mean=2.0, target_std=2.0)
    got = tasktypes.loss(reg, torch.tensor([[0.0], [5.0]]), torch.tensor([4.0, float("nan")]))
    assert got.item() == pytest.approx(1.0)  # (0 - (4 - 2) / 2)^2


def test_old_multi_label_and_regression_heads_are_held_and_compared_by_their_own_rules() -> None:
    ml = HeadSpec(type="multi_label", labels=["a", "b"], thresholds=[0.5, 0.9])
    teacher = torch.tensor([[2.0, 1.0], [-1.0, 3.0]])
    assert tasktypes.soft_target_loss(ml, teacher, teacher, 2.0).abs().max() < 1e-6
    assert (tasktypes.soft_target_loss(ml, -teacher, teacher, 2.0) > 0.1).all()
    # label b's threshold 0.9: sigmoid(1.0) = 0.73 is off, sigmoid(3.0) = 0.95 on; a student at 2.5 (0.92) agrees
    assert tasktypes.agreement(ml, teacher, torch.tensor([[0.5, 0.0], [-2.0, 2.5]])) == (4, 4)
    assert tasktypes.agreement(ml, teacher, torch.tensor([[-0.5, 0.0], [-2.0, 2.0]])) == (2, 4)
    reg = HeadSpec(type="regression", target_mean=0.0, target_std=1.0)
    assert tasktypes.agreement(reg, torch.tensor([[0.0], [1.0]]), torch.tensor([[0.2], [2.0]])) == (1, 2)
    assert tasktypes.soft_target_loss(reg, torch.tensor([[1.0]]), torch.tensor([[3.0]]), 2.0).item() == 4.0


# --------------------------------------------------------------------------- fitted heads and the stage
def test_a_fit_is_named_by_the_method_that_ran() -> None:
    from mtst.modeling.tasktypes import fit_method

    assert fit_method(["classification", "multi_label"]) == "logistic regression"
    assert fit_method(["regression"]) == "ridge regression"
    assert fit_method(["regression", "classification"]) == "logistic regression (ridge for regression heads)"


def test_closed_form_fits_recover_the_signal() -> None:
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(200, 8)))
    w = rng.normal(size=8)
    y = x.numpy() @ w + 0.5
    fit = fit_ridge(x, y, grid=(1e-3,))
    assert np.allclose(fit.weight.numpy()[0], w, atol=1e-2) and fit.bias.item() == pytest.approx(0.5, abs=1e-2)
    targets = np.stack([x[:, 0].numpy() > 0, x[:, 1].numpy() > 0.5], 1).astype(np.float32)
    ovr = fit_one_vs_rest(x, targets, c=10.0)
    predicted = (x.double() @ ovr.weight.T + ovr.bias).numpy() > 0
    assert (predicted == targets.astype(bool)).mean() > 0.95


def test_label_set_pairs_target_their_overlap() -> None:
    sets = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    target = pair_targets(sets)
    assert target[0, 1].item() == pytest.approx(0.5) and target[2, 3].item() == 1.0 and target[0, 4].item() == 0.0
    single = torch.tensor([0, 0, 1])
    assert pair_targets(single).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    emb = torch.randn(5, 4, requires_grad=True)
    loss = contrastive_loss(emb, sets)
    loss.backward()
    assert torch.isfinite(loss) and emb.grad is not None and emb.grad.abs().sum() > 0
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [np.nan, np.nan], [1, 0]], dtype=np.float32)
    batches = label_batches({"tags": y}, batch_size=4, steps=6, seed=0)
    seen = {int(r) for _, rows in batches for r in rows}
    assert 4 not in seen and seen == {0, 1, 2, 3, 5}  # the unlabelled row never enters; every other does
    assert all(len(set(rows.tolist())) == len(rows) for _, rows in batches)


# --------------------------------------------------------------------------- through training and out
def test_mixed_config_one_step_has_finite_gradients(
    tiny_backbone_dir: Path, mixed_data: dict[str, str], tmp_path: Path
) -> None:
    run = setup_run(
        mixed_config(tiny_backbone_dir, mixed_data, tmp_path / "run", strategy="full", max_steps=1), show_progress=False
    )
    model = run.model
    rows = np.arange(8)
    loss = run.batch_loss(rows)
    loss.backward()
    for task in ("topic", "tags", "stars"):
        grads = [p.grad for p in model.heads[task].parameters()]
        assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads), task
    layer = model.encoder.backbone.encoder.layer[0].attention.self.query.weight.grad
    assert layer is not None and torch.isfinite(layer).all() and layer.abs().sum() > 0
    if run.lock is not None:
        run.lock.release()


@pytest.mark.parametrize("strategy", ["frozen", "full", "lora"])
def test_each_type_trains_saves_and_predicts_alike_everywhere(
    tiny_backbone_dir: Path, mixed_data: dict[str, str], tmp_path: Path, strategy: str
) -> None:
    from fastapi.testclient import TestClient

    from mtst.config import ServeSettings
    from mtst.export import OnnxPredictor, export
    from mtst.serve import create_app

    result = train(
        mixed_config(tiny_backbone_dir, mixed_data, tmp_path / "run", strategy=strategy), show_progress=False
    )
    test = result.test
    assert {"micro_f1", "macro_f1", "accuracy", "per_label"} <= set(test["tags"])
    assert {"spearman", "pearson", "mae", "rmse"} <= set(test["stars"]) and "accuracy" not in test["stars"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "tags/micro_f1" in metrics["test"] and "stars/spearman" in metrics["test"]
    model = MultiTaskModel.load(tmp_path / "run" / "model")
    spec = model.tasks["tags"]
    assert spec.thresholds is not None and len(spec.thresholds) == 2  # tuned on validation, saved
    assert model.tasks["stars"].target_mean == pytest.approx(np.mean([_row(i)["stars"] for i in range(48)]))
    texts = [_row(300 + i)["text"] for i in range(6)]
    ours = model.predict(texts)
    for rec in ours:
        assert set(rec["tags"]) == {"labels", "probabilities"} and isinstance(rec["stars"]["value"], float)
        cut = dict(zip(spec.labels, spec.thresholds, strict=True))
        assert rec["tags"]["labels"] == [lab for lab, p in rec["tags"]["probabilities"].items() if p >= cut[lab]]
    onnx = OnnxPredictor(export(tmp_path / "run", "onnx", tmp_path / "onnx"))
    for a, b in zip(ours, onnx.predict(texts), strict=True):
        assert a["topic"]["label"] == b["topic"]["label"] and a["tags"]["labels"] == b["tags"]["labels"]
        assert np.allclose(
            list(a["tags"]["probabilities"].values()), list(b["tags"]["probabilities"].values()), atol=1e-4
        )
        assert a["stars"]["value"] == pytest.approx(b["stars"]["value"], abs=1e-3)
    st = export(tmp_path / "run", "sentence-transformers", tmp_path / "st")
    heads = json.loads((st / "mtst_heads" / "config.json").read_text())["tasks"]
    assert (
        heads["tags"]["thresholds"] == spec.thresholds
        and heads["stars"]["target_std"] == model.tasks["stars"].target_std
    )
    with TestClient(create_app(model, ServeSettings(), "mixed")) as client:
        served = client.post("/predict", json={"texts": texts}).json()["predictions"]
        info = client.get("/info").json()["tasks"]
    assert served == ours and info["tags"]["thresholds"] == pytest.approx(spec.thresholds, abs=1e-4)


def test_frozen_run_without_validation_tunes_on_cross_validated_rows(
    tiny_backbone_dir: Path, mixed_data: dict[str, str], tmp_path: Path
) -> None:
    data = {k: v for k, v in mixed_data.items() if k != "validation"}
    result = train(mixed_config(tiny_backbone_dir, data, tmp_path / "run", strategy="frozen"), show_progress=False)
    assert result.stages == ("heads fitted by logistic regression (ridge for regression heads)",)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "thresholds" in log and "3-fold cross-validation on 48 training rows" in log
    assert "one-vs-rest logistic regression" in log and "ridge regression" in log
    fixed = mixed_config(tiny_backbone_dir, data, tmp_path / "fixed", strategy="frozen")
    fixed.tasks["tags"] = fixed.tasks["tags"].model_copy(update={"threshold": 0.3, "label_delimiter": "|"})
    train(fixed, show_progress=False)
    model = MultiTaskModel.load(tmp_path / "fixed" / "model")
    assert model.tasks["tags"].thresholds == [0.3, 0.3]
    csv = tmp_path / "more.csv"  # scored later with the delimiter the model was trained with
    csv.write_text('text,tags\n"a gripping novel cheap gift 7",cheap|gift\n"this pan cooks well 8",[]\n')
    scores = evaluate_file(model, csv)
    assert scores["tags"]["n"] == 2 and scores["tags"]["per_label"]["gift"]["support"] == 1


def test_default_recipe_takes_label_sets_through_the_stage(
    tiny_backbone_dir: Path, mixed_data: dict[str, str], tmp_path: Path
) -> None:
    random.seed(0)
    cfg = mixed_config(tiny_backbone_dir, mixed_data, tmp_path / "run", contrastive={"min_steps": 4, "max_steps": 4})
    result = train(cfg, show_progress=False)
    assert result.stages[0].startswith("contrastive stage 8 steps")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "contrastive stage: 8 steps" in log  # two tasks (topic, tags) take part, the number sits out
    assert result.test["tags"]["micro_f1"] >= 0.0 and "stars" in result.test


def test_a_continued_multi_label_task_takes_the_models_label_order(tmp_path: Path) -> None:
    from mtst.training.stages.model_init import align_labels

    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "e": ["joy"]}\n{"text": "b", "e": ["fear", "joy"]}\n{"text": "c"}\n')
    config = validate_config({"data": {"train": str(path)}, "tasks": {"e": {"type": "multi_label"}}})
    source = TaskSource("e", kind="multi_label", empty_cell="missing")  # row c: no row of the task
    data = build_task_data({"e": source}, {"train": str(path)}, "text")
    assert data.labels["e"] == ["fear", "joy"]

    from types import SimpleNamespace

    start = SimpleNamespace(tasks={"e": HeadSpec(type="multi_label", labels=["joy", "anger", "fear"])})
    align_labels(config, data, start, "runs/a")  # type: ignore[arg-type]  # its task specs are all it reads
    split = data.splits["train"]
    assert data.labels["e"] == ["joy", "anger", "fear"]
    assert split.targets["e"].tolist() == [[1, 0, 0], [1, 0, 1], [0, 0, 0]]
    assert split.labels["e"].tolist() == [0, 0, -100]  # rows stay marked labelled or not
