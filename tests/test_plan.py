"""The training plan and the strategies behind it: pure functions of the config and the data's size."""

from __future__ import annotations

from typing import Any

import pytest

from mtst.config import validate_config
from mtst.errors import ConfigError
from mtst.training.planning.plan import DataStats, TrainingPlan, build_plan
from mtst.training.planning.strategies import FROZEN_START_LR_HEAD, NAMES, REGISTRY

TASKS = ["category", "sentiment"]
HEADS = {"heads.category", "heads.sentiment"}
L = 4


def layers(*idx: int) -> set[str]:
    return {f"layers.{i}" for i in idx}


def plan_for(
    strategy: str, num_layers: int = L, rows: int = 320, raw_tokens: bool = False, **training: Any
) -> TrainingPlan:
    config = validate_config(
        {
            "tasks": {t: {} for t in TASKS},
            "data": {"train": "train.csv"},
            "training": {"strategy": strategy, "batch_size": 32, "epochs": 3, "min_steps": None, **training},
        }
    )
    return build_plan(config, num_layers, DataStats(labelled_rows=rows), raw_token_tasks=raw_tokens)


TOP = {"backbone_other"}
EVERYTHING = HEADS | layers(0, 1, 2, 3) | {"embeddings", "backbone_other"}

# One row per strategy: (strategy, settings, groups at the start, head LR, backbone moves, closed form)
STRATEGY_TABLE = [
    ("frozen", {}, set(), FROZEN_START_LR_HEAD, False, True),
    ("heads", {}, HEADS, FROZEN_START_LR_HEAD, False, False),
    ("top_k", {"top_k": 2}, HEADS | layers(2, 3) | TOP, 5e-5, True, False),
    ("gradual", {}, HEADS, FROZEN_START_LR_HEAD, True, False),
    ("full", {}, EVERYTHING, 5e-5, True, False),
    ("lora", {}, HEADS | {"lora"}, 5e-4, True, False),
    ("lora", {"lora": {"full_top_k": 2}}, HEADS | {"lora"} | layers(2, 3) | TOP, 5e-4, True, False),
]


def test_every_registered_strategy_has_a_row() -> None:
    assert {row[0] for row in STRATEGY_TABLE} == set(NAMES) == set(REGISTRY)


@pytest.mark.parametrize(("strategy", "settings", "start", "head_lr", "moves", "closed"), STRATEGY_TABLE)
def test_strategy_plans(
    strategy: str, settings: dict, start: set[str], head_lr: float, moves: bool, closed: bool
) -> None:
    plan = plan_for(strategy, **settings)
    assert plan.groups_at(0) == start
    assert plan.head_lr == head_lr
    assert plan.backbone_moves == moves
    assert plan.closed_form == closed
    assert set(plan.group_lrs) == plan.step_groups
    assert all(plan.group_lrs[h] == head_lr for h in HEADS & plan.step_groups)


def test_explicit_head_lr_wins_and_layer_decay_shapes_backbone_lrs() -> None:
    plan = plan_for("full", lr_head=1e-3, lr_backbone=1e-4, layer_decay=0.5)
    assert plan.head_lr == 1e-3
    assert plan.group_lrs["layers.3"] == pytest.approx(1e-4)
    assert plan.group_lrs["layers.0"] == pytest.approx(1e-4 * 0.5**3)
    assert plan.group_lrs["embeddings"] == pytest.approx(1e-4 * 0.5**4)


def test_tasks_that_share_the_encoder_scale_its_learning_rate() -> None:
    # every row labelled for both tasks (counted: task_sets)
    both = DataStats(
        labelled_rows=320,
        class_counts={"category": (160, 160), "sentiment": (100, 100, 120)},
        task_sets={frozenset({"category", "sentiment"}): 320},
    )
    # each row labelled for one task
    apart = DataStats(
        labelled_rows=640,
        class_counts={"category": (160, 160), "sentiment": (100, 100, 120)},
        task_sets={frozenset({"category"}): 320, frozenset({"sentiment"}): 320},
    )

    def plan(strategy: str, tasks: list[str] = TASKS, stats: DataStats = both, **training: Any) -> TrainingPlan:
        raw = {
            "tasks": {t: {} for t in tasks},
            "data": {"train": "x.csv"},
            "training": {"strategy": strategy, **training},
        }
        return build_plan(validate_config(raw), L, stats)

    shared = plan("full", lr_backbone=4e-5)
    assert shared.shared_by == ("category", "sentiment")
    assert shared.lr_scale == 2.0  # per_row: two labels on every row
    assert shared.group_lrs["layers.3"] == pytest.approx(8e-5)
    assert shared.head_lr == pytest.approx(8e-5)  # the head rate follows the backbone's
    assert plan("full", layer_decay=0.5).group_lrs["layers.0"] == pytest.approx(1e-4 * 0.5**3)
    assert plan("full", stats=apart).lr_scale == 1.0  # one label per row: each task has its own steps
    assert plan("full", stats=apart).shared_by == ("category", "sentiment")  # still shared: heads start fitted
    half = DataStats(  # half the rows carry both labels: 1.5 labels per labelled row
        labelled_rows=400,
        class_counts={"category": (150, 150), "sentiment": (100, 100, 100)},
        task_sets={
            frozenset({"category", "sentiment"}): 200,
            frozenset({"category"}): 100,
            frozenset({"sentiment"}): 100,
        },
    )
    assert plan("full", stats=half).lr_scale == pytest.approx(1.5)
    estimated = DataStats(labelled_rows=320, class_counts=both.class_counts)  # no task_sets: from the totals
    assert plan("full", stats=estimated).lr_scale == 2.0
    three = DataStats(labelled_rows=2, class_counts={"a": (1, 1), "b": (1, 1), "c": (1, 1)})
    assert plan("full", ["a", "b", "c"], three).lr_scale == 3.0
    assert plan("full", ["a", "b", "c"], three, task_lr="sqrt").lr_scale == pytest.approx(3**0.5)
    assert plan("full", ["a", "b", "c"], three, task_lr="linear").lr_scale == 3.0
    assert plan("full", stats=apart, task_lr="sqrt").lr_scale == pytest.approx(2**0.5)  # whatever the rows
    assert plan("full", stats=apart, task_lr="linear").lr_scale == 2.0
    # an explicit head rate, and LoRA's own, stay as written
    assert plan("full", lr_head=1e-3).head_lr == 1e-3
    assert plan("lora").group_lrs["lora"] == plan("lora", task_lr="fixed").group_lrs["lora"]
    assert plan("gradual").head_lr == FROZEN_START_LR_HEAD
    assert plan("gradual").group_lrs["layers.3"] == pytest.approx(1e-4)
    fixed = plan("full", task_lr="fixed")  # the tasks still share (and their heads start fitted), at 5e-5
    assert fixed.lr_scale == 1.0 and fixed.shared_by == ("category", "sentiment")
    assert set(fixed.group_lrs.values()) == {5e-5}
    # nothing to share: one task, a frozen head, a backbone that never trains, a token task beside
    for single in (
        plan("full", ["category"], DataStats(labelled_rows=320, class_counts={"category": (160, 160)})),
        plan("full", freeze=["heads.sentiment"]),
        plan("heads"),
        plan("full", stats=DataStats(labelled_rows=320, class_counts={"category": (160, 160)})),
    ):
        assert single.lr_scale == 1.0 and single.shared_by == ()
        assert all(lr in (5e-5, single.head_lr) for lr in single.group_lrs.values())
    with pytest.raises(ConfigError, match=r"task_lr.*'per_row'.*'sqrt'.*'linear'.*'fixed'"):
        plan("full", task_lr="quadratic")


def test_freeze_list_combines_with_strategies() -> None:
    plan = plan_for("full", freeze=["embeddings", "layers.0-1", "heads.category"])
    assert plan.groups_at(0) == {"heads.sentiment", "backbone_other"} | layers(2, 3)
    assert plan_for("full", freeze=["backbone"]).groups_at(0) == HEADS
    assert plan_for("top_k", top_k=3, freeze=["layers.1"]).groups_at(0) == HEADS | layers(2, 3) | TOP


def test_nothing_to_train_is_an_error_not_a_no_op() -> None:
    with pytest.raises(ConfigError, match="nothing to train"):
        plan_for("heads", freeze=["heads"])
    assert plan_for("frozen").groups_at(0) == set()
    assert plan_for("frozen").closed_form_heads == ("category", "sentiment")  # fitted, not stepped
    assert plan_for("frozen", freeze=["heads.category"]).closed_form_heads == ("sentiment",)
    assert plan_for("full").closed_form_heads == ()


def test_frozen_head_on_a_moving_backbone_warns_unless_distilled() -> None:
    free = {"protect": "free"}
    warnings = plan_for("full", freeze=["heads.category"], keep=free).warnings
    assert len(warnings) == 1 and "category" in warnings[0] and "drift" in warnings[0]
    assert plan_for("heads", freeze=["heads.category"], keep=free).warnings == ()
    fresh = plan_for("full", freeze=["heads.category"])  # a new model's frozen head has no outputs to keep
    assert len(fresh.warnings) == 1 and fresh.keep.old_heads == ()


def test_gradual_stages_unfreeze_top_layer_first() -> None:
    plan = plan_for("gradual", gradual={"stage_steps": 2}, max_steps=100)
    assert plan.stage_steps == 2 and len(plan.stages) == L + 1
    assert plan.groups_at(0) == plan.groups_at(1) == HEADS
    assert plan.groups_at(2) == HEADS | layers(3) | TOP
    assert plan.groups_at(4) == HEADS | layers(2, 3) | TOP
    assert plan.groups_at(8) == plan.groups_at(99) == HEADS | layers(0, 1, 2, 3) | TOP
    two = plan_for("gradual", gradual={"stage_steps": 2, "layers_per_stage": 2, "include_embeddings": True})
    assert len(two.stages) == 4 and "embeddings" in two.stages[-1]


def test_gradual_trains_only_the_stages_it_reaches() -> None:
    short = plan_for("gradual", gradual={"stage_steps": 5}, max_steps=8)
    assert short.last_stage == 1 and short.step_groups == HEADS | layers(3) | TOP
    # a stage lasts one epoch by default: 320 rows at batch 32
    assert plan_for("gradual").stage_steps == 10


@pytest.mark.parametrize(
    ("rows", "training", "steps_per_epoch", "total"),
    [
        (320, {}, 10, 30),  # 3 epochs
        (320, {"grad_accumulation": 2}, 5, 15),
        (24, {"min_steps": 250}, 1, 10),  # stretched, to at most 10 epochs
        (3200, {"min_steps": 250}, 100, 300),  # already past min_steps
        (640, {"min_steps": 100}, 20, 100),
        (320, {"max_steps": 7}, 10, 7),
    ],
)
def test_step_budget_follows_the_data(rows: int, training: dict, steps_per_epoch: int, total: int) -> None:
    plan = plan_for("full", rows=rows, **training)
    assert (plan.steps_per_epoch, plan.total_steps) == (steps_per_epoch, total)
    assert plan.warmup_steps == int(0.1 * total)


def test_cache_and_saved_groups() -> None:
    assert plan_for("heads").cache and not plan_for("heads", raw_tokens=True).cache
    assert not plan_for("heads", cache=False).cache
    assert plan_for("full").saved_backbone_groups is None
    assert plan_for("lora").saved_backbone_groups == ()
    assert plan_for("lora", lora={"full_top_k": 1}).saved_backbone_groups == ("backbone_other", "layers.3")
    assert plan_for("lora", lora={"save": "merged"}).saved_backbone_groups is None


def test_unknown_strategy_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="allowed: auto, frozen, heads, top_k, gradual, full, lora"):
        plan_for("everything")


# The driver's stages per strategy and recipe, without a model: (strategy, training, rows per class of both
# tasks or None, phases, groups the contrastive stage trains or None).
ALL_LAYERS = layers(0, 1, 2, 3) | TOP
PHASE_TABLE = [
    ("frozen", {}, 40, ("closed_form",), None),
    ("heads", {}, 40, ("warm_start", "steps"), None),  # the backbone starts frozen: heads start fitted
    # where the backbone moves, the starting model's outputs are recorded first (training.keep)
    ("top_k", {"top_k": 2}, 40, ("start_outputs", "warm_start", "steps"), None),  # two tasks share the encoder
    ("gradual", {}, 40, ("start_outputs", "warm_start", "steps"), None),
    ("full", {}, None, ("start_outputs", "steps"), None),  # no classification statistics: random heads
    ("lora", {}, 40, ("start_outputs", "warm_start", "steps"), None),
    ("frozen", {"contrastive": {"enabled": True}}, 40, ("start_outputs", "contrastive", "closed_form"), ALL_LAYERS),
    (
        "frozen",
        {"contrastive": {"enabled": True, "top_k": 1}},
        40,
        ("start_outputs", "contrastive", "closed_form"),
        layers(3) | TOP,
    ),
    (
        "full",
        {"contrastive": {"enabled": True}},
        40,
        ("start_outputs", "contrastive", "warm_start", "steps"),
        EVERYTHING - HEADS,
    ),
    # auto: the recipe decides from the data, then the same rules apply
    ("auto", {}, 8, ("start_outputs", "contrastive", "closed_form"), ALL_LAYERS),
    ("auto", {}, 900, ("start_outputs", "warm_start", "steps"), None),
    ("auto", {"keep": {"protect": "safe"}}, 8, ("closed_form",), None),  # safe: the encoder stays as it is
]


@pytest.mark.parametrize(("strategy", "training", "per_class", "phases", "contrastive"), PHASE_TABLE)
def test_the_driver_runs_the_stages_the_plan_names(
    strategy: str, training: dict, per_class: int | None, phases: tuple, contrastive: set | None
) -> None:
    from mtst.training.planning.recipe import apply_recipe

    config = validate_config(
        {
            "tasks": {t: {} for t in TASKS},
            "data": {"train": "train.csv"},
            "training": {"strategy": strategy, "batch_size": 32, "min_steps": None, **training},
        }
    )
    counts = {t: (per_class, per_class) for t in TASKS} if per_class else {}
    rows = 4 * per_class if per_class else 320
    stats = DataStats(rows, counts, {frozenset(TASKS): rows} if counts else {})
    config, _ = apply_recipe(config, stats)
    plan = build_plan(config, L, stats)
    assert plan.phases() == phases
    # a resumed run records the start again (its live model has moved) and continues with its steps
    assert plan.phases(resumed=True) == tuple(p for p in phases if p == "start_outputs") + phases[-1:]
    assert (set(plan.contrastive.groups) if plan.contrastive else None) == contrastive


def test_the_stage_packs_unless_told_not_to() -> None:
    stats = DataStats(32, {t: (8, 8) for t in TASKS}, {frozenset(TASKS): 32})
    for packing in (True, False):
        config = validate_config(
            {
                "tasks": {t: {} for t in TASKS},
                "data": {"train": "train.csv"},
                "training": {"strategy": "frozen", "contrastive": {"enabled": True, "packing": packing}},
            }
        )
        plan = build_plan(config, L, stats)
        assert plan.contrastive is not None and plan.contrastive.packing is packing
