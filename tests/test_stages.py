"""Each stage of the driver on the tiny model, called with plain inputs (no loop object built)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from mtst.report import progress_bar
from mtst.training.planning.freezing import trainable_names
from mtst.training.runtime.cache import RunCache
from mtst.training.runtime.precision import make_accelerator
from mtst.training.stages.contrastive import run_contrastive
from mtst.training.stages.headfit import fit_closed_form
from mtst.training.stages.scoring import score_rows, score_validation
from mtst.training.stages.selection import judge
from mtst.training.state import LoopState
from mtst.training.trainer import RunInputs, load_inputs, make_plan

from .test_training import make_config


def _prepared(backbone: Path, data: dict[str, str], tmp_path: Path, **training: object) -> tuple:
    cfg = make_config(backbone, data, tmp_path / "run", **training)
    inputs, plan = make_plan(load_inputs(cfg, Console(quiet=True)))
    cache = RunCache(
        inputs.model.encoder,
        inputs.ids,
        {name: split.texts for name, split in inputs.data.splits.items()},
        plan.num_layers,
        16,
        1024,
        tmp_path / "spill",
    )
    return inputs, plan, cache


def test_the_contrastive_stage_trains_its_groups_and_nothing_else(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    stage = {"enabled": True, "top_k": 1, "min_steps": 3, "max_steps": 3}
    inputs, plan, cache = _prepared(tiny_backbone_dir, tiny_data, tmp_path, strategy="frozen", contrastive=stage)
    model = inputs.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    progress = progress_bar(Console(quiet=True), True, "loss {task.fields[loss]}")
    losses = run_contrastive(
        model,
        inputs.data.splits["train"],
        inputs.batcher,
        cache,
        plan.contrastive,
        0,
        make_accelerator("no", cuda=False),
        progress,
    )
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))  # 3 steps for each of the two tasks
    moved = trainable_names(before, set(plan.contrastive.groups))
    for name, p in model.named_parameters():
        assert not p.requires_grad, name  # the stage leaves everything frozen for the caller to set
        assert torch.equal(p, before[name]) != (name in moved), name
    assert cache.mode is None  # what it cached was computed from weights that have moved


def test_the_closed_form_fit_sets_the_heads_it_is_given(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    inputs, plan, cache = _prepared(
        tiny_backbone_dir, tiny_data, tmp_path, strategy="frozen", freeze=["heads.sentiment"]
    )
    model = inputs.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cache.refresh(set())
    fit_closed_form(model, inputs.data.splits["train"], 0, cache.pooled["train"], 16, plan.closed_form_heads)
    assert plan.closed_form_heads == ("category",)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != name.startswith("heads.category"), name


def test_validation_from_the_cache_scores_as_the_model_does(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    inputs, _, cache = _prepared(tiny_backbone_dir, tiny_data, tmp_path, strategy="heads")
    assert isinstance(inputs, RunInputs)
    plain = score_rows(inputs.model, inputs, "validation", 16)
    cache.refresh({"heads.category", "heads.sentiment"})
    assert cache.mode == "pooled"
    assert score_validation(inputs.model, inputs, cache, 16) == plain


@pytest.mark.parametrize(
    ("scores", "patience", "best_step", "stopped"),
    [
        ([0.5, 0.6, 0.7], 1, 3, False),  # every evaluation a gain
        ([0.5, 0.6, 0.6], 1, 2, True),  # a tie is no gain
        ([0.5, 0.4, 0.6, 0.5, 0.4], 2, 3, True),  # a gain resets the count
        ([0.5, 0.4, 0.3], None, 1, False),  # no patience: never stops
    ],
)
def test_selection_keeps_the_best_and_stops_after_patience(
    scores: list[float], patience: int | None, best_step: int, stopped: bool
) -> None:
    state = LoopState()
    for step, score in enumerate(scores, start=1):
        state.global_step = step
        judge(state, score, patience, "m")
    assert (state.best_step, state.stopped_early) == (best_step, stopped)
