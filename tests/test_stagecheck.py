"""The contrastive stage checked on validation: the paired bootstrap, and a run that keeps or undoes its stage."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtst.config import validate_config
from mtst.data import Split
from mtst.evaluate import summary_metrics
from mtst.modeling.model import MultiTaskModel
from mtst.training import loop as loop_module
from mtst.training.stages import stagecheck
from mtst.training.stages.scoring import score_validation
from mtst.training.stages.stagecheck import bootstrap_share, resample
from mtst.training.trainer import setup_run

from .conftest import _rows

LABELS = {"topic": ["a", "b", "c"]}


def _split(y: np.ndarray) -> Split:
    return Split("validation", [f"row {i}" for i in range(len(y))], {"topic": y})


# ------------------------------------------------------------------ the paired bootstrap
def test_the_share_follows_which_predictions_are_right() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    right, wrong = y.copy(), (y + 1) % 3
    half = np.where(np.arange(300) % 2 == 0, y, (y + 1) % 3)
    split = _split(y)
    metric = "mean_accuracy"
    assert bootstrap_share(split, {"topic": right}, {"topic": half}, LABELS, metric, resamples=200) == 1.0
    assert bootstrap_share(split, {"topic": half}, {"topic": right}, LABELS, metric, resamples=200) == 0.0
    assert bootstrap_share(split, {"topic": half}, {"topic": half}, LABELS, metric, resamples=200) == 0.0  # a tie
    assert bootstrap_share(split, {"topic": wrong}, {"topic": half}, LABELS, metric, resamples=200) == 0.0
    # One row apart in 300: inside the noise, nowhere near the 90% that undoes a stage.
    one_more = half.copy()
    one_more[1] = y[1]
    share = bootstrap_share(split, {"topic": one_more}, {"topic": half}, LABELS, "mean_macro_f1", resamples=200)
    assert 0.0 < share < stagecheck.CONFIDENCE
    # A metric the rows do not score (its task unlabelled there) never undoes a stage, and says so.
    assert bootstrap_share(split, {"topic": right}, {"topic": wrong}, LABELS, "other/accuracy", resamples=20) == 0.0
    verdict = stagecheck.StageVerdict("other/accuracy", None, None, 0.0, 300, kept=True)
    assert "before the stage n/a, after n/a" in verdict.describe()
    # Seeded: the same resamples every time.
    again = bootstrap_share(split, {"topic": one_more}, {"topic": half}, LABELS, "mean_macro_f1", resamples=200)
    assert again == share


def test_resampled_rows_keep_their_labels_and_targets() -> None:
    y = np.array([0, 1, 2, -100])
    multi = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    split = Split("validation", ["w", "x", "y", "z"], {"topic": y, "tags": np.zeros(4, dtype=np.int64)})
    split.targets["tags"] = multi
    sub = resample(split, np.array([2, 2, 0]))
    assert sub.texts == ["y", "y", "w"]
    assert sub.labels["topic"].tolist() == [2, 2, 0]
    assert sub.targets["tags"].tolist() == [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]
    bare = resample(split, np.array([2, 2, 0]), with_texts=False)  # what the bootstrap scores: no texts copied
    assert bare.texts == ["", "", ""] and bare.labels["topic"].tolist() == [2, 2, 0]


# ------------------------------------------------------------------ in a run
@pytest.fixture(scope="module")
def data(tiny_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny data with 64 validation rows, enough for a check to tell a ruined encoder apart."""
    path = tmp_path_factory.mktemp("stagecheck") / "validation.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "category", "sentiment"])
        writer.writeheader()
        writer.writerows(_rows(64, offset=500))
    return {**tiny_data, "validation": str(path)}


def _config(backbone: Path, data: dict[str, str], out: Path, **contrastive: Any) -> Any:
    settings = {"enabled": True, "min_steps": 8, "max_steps": 8, "batch_size": 8, "lr": 1e-3, **contrastive}
    return validate_config(
        {
            "model": {"backbone": str(backbone), "max_length": 32},
            "tasks": {"category": {}, "sentiment": {}},
            "data": {k: data[k] for k in ("train", "validation", "test")},
            "training": {"strategy": "frozen", "contrastive": settings},
            "output_dir": str(out),
        }
    )


def _ruin(model: MultiTaskModel, train: Any, batcher: Any, cache: Any, *args: Any, **kwargs: Any) -> list[float]:
    """A stage that hurts: every backbone weight replaced by noise (what a far too high rate can do); like
    the real stage, it forgets the cache built from the weights it moved."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.encoder.backbone.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 3.0)
    cache.invalidate()
    return [1.0] * 8


def _encoder_state(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}


@pytest.mark.parametrize("check_rows", [2000, 40], ids=["every-row", "a-sample"])
def test_a_stage_that_hurts_is_undone(
    check_rows: int, tiny_backbone_dir: Path, data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_module, "run_contrastive", _ruin)
    monkeypatch.setattr(stagecheck, "CHECK_ROWS", check_rows)
    loop = setup_run(_config(tiny_backbone_dir, data, tmp_path / "run"), show_progress=False)
    before = _encoder_state(loop.model)
    result = loop.fit()
    check = result.stage_check
    assert check is not None and not check["kept"] and check["share_before_higher"] >= stagecheck.CONFIDENCE
    assert check["before"] > check["after"]
    assert result.stages[-1] == "stage undone (validation)"
    saved = MultiTaskModel.load(tmp_path / "run" / "model")
    for name, value in saved.encoder.state_dict().items():  # the encoder before the stage, bit for bit
        assert torch.equal(value, before[name]), name
    assert check["validation_rows"] == min(check_rows, 64)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["stage_check"] == check
    assert summary["validation"] == result.validation
    # The figures of the model kept, on the whole split (scored again where the check compared a sample).
    rescored = score_validation(saved, loop.inputs, loop.inputs.cache, 64)
    assert result.validation["mean_macro_f1"] == pytest.approx(summary_metrics(rescored)["mean_macro_f1"])
    if check_rows >= 64:
        assert result.validation["mean_macro_f1"] == pytest.approx(check["before"])
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e.get("stage_undone", False) for e in history] == [False, True]  # the tuned model's, then the one kept


def test_a_stage_within_the_noise_is_kept(
    tiny_backbone_dir: Path, data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stagecheck, "CONFIDENCE", 1.01)  # no share reaches it: the stage always stays
    loop = setup_run(_config(tiny_backbone_dir, data, tmp_path / "run"), show_progress=False)
    before = _encoder_state(loop.model)
    result = loop.fit()
    assert result.stage_check is not None and result.stage_check["kept"]
    assert result.stages == ("contrastive stage 16 steps", "logistic heads")
    saved = MultiTaskModel.load(tmp_path / "run" / "model")
    moved = [k for k, v in saved.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert moved  # the tuned encoder is the run's model
    for name, value in saved.encoder.state_dict().items():
        assert torch.equal(value, loop.model.encoder.state_dict()[name]), name


@pytest.mark.parametrize(
    ("change", "checked"),
    [
        ({}, True),
        ({"check": False}, False),
        ({"no_validation": True}, False),
    ],
    ids=["validation", "check-off", "no-validation"],
)
def test_only_a_run_with_validation_and_the_check_on_fits_the_baseline(
    change: dict,
    checked: bool,
    tiny_backbone_dir: Path,
    data: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = loop_module.fit_baseline
    monkeypatch.setattr(loop_module, "fit_baseline", lambda *a, **k: calls.append(1) or real(*a, **k))
    if change.pop("no_validation", False):
        data = {**data, "validation": None}  # type: ignore[dict-item]
    config = _config(tiny_backbone_dir, data, tmp_path / "run", **change)
    result = setup_run(config, show_progress=False).fit()
    assert bool(calls) == checked
    assert (result.stage_check is not None) == checked
    assert ("stage_check" in json.loads((tmp_path / "run" / "metrics.json").read_text())) == checked
