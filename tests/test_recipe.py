"""The default recipe: a pure function of the data's statistics, table-tested."""

from __future__ import annotations

import pytest

from mtst.config import validate_config
from mtst.training.planning.plan import DataStats
from mtst.training.planning.recipe import (
    CONTRASTIVE_TASK_ROWS,
    FEW_SHOT_ROWS_PER_CLASS,
    MAX_CONTRASTIVE_CLASSES,
    SHARED_ROWS_PER_CLASS,
    apply_recipe,
    choose_recipe,
    rows_per_class,
)

F = FEW_SHOT_ROWS_PER_CLASS
R = CONTRASTIVE_TASK_ROWS
M = MAX_CONTRASTIVE_CLASSES


@pytest.mark.parametrize(
    ("counts", "token_tasks", "strategy", "contrastive"),
    [
        ({"t": (8, 8)}, False, "frozen", True),  # 8 per class, binary
        ({"t": (8,) * 6}, False, "frozen", True),  # 8 per class, a few classes
        ({"t": (8,) * MAX_CONTRASTIVE_CLASSES}, False, "frozen", True),  # every class still has 2 rows in each batch
        ({"t": (8,) * 77}, False, "frozen", False),  # many classes: logistic heads on the pretrained encoder
        ({"t": (F,) * M}, False, "frozen", True),  # at the threshold per class, many rows in all
        ({"t": (F + 1,) * M}, False, "full", False),  # above it
        ({"t": (R // 2, R // 2)}, False, "frozen", True),  # more per class, but few rows in all
        ({"t": (R // 2 + 1, R // 2)}, False, "full", False),  # one row more
        ({"a": (R, R), "b": (R // 4,) * 3}, False, "frozen", True),  # the scarcest task's rows count
        ({"t": (F,) * (M + 1)}, False, "frozen", False),  # at the threshold of a task out of the stage
        ({"t": (F + 1,) * (M + 1)}, False, "full", False),  # above it: full fine-tuning is ahead sooner
        ({"a": (F + 1,) * 77, "b": (900, 900)}, False, "full", False),  # b's stage would not tune a's encoder
        ({"t": (5000, 5000)}, False, "full", False),  # full data
        ({"a": (5000, 5000), "b": (10, 10, 10)}, False, "frozen", True),  # the scarcest task decides
        ({"a": (10,) * 50, "b": (10, 10, 10)}, False, "frozen", True),  # b takes part, a sits out
        ({"t": (8, 8)}, True, "full", False),  # a token task needs the backbone fine-tuned
        ({}, False, "full", False),  # no sentence classification task
        ({"t": (F + 1,) * (M + 1) + (0,) * 10}, False, "full", False),  # the mean over the classes that have rows
        ({"t": (4, 10, 40, 1600) + (40,) * 16}, False, "full", False),  # median 40, but 2,294 rows in 20 classes
    ],
)
def test_recipe_table(counts: dict, token_tasks: bool, strategy: str, contrastive: bool) -> None:
    rows = sum(sum(c) for c in counts.values())
    recipe = choose_recipe(DataStats(labelled_rows=rows, class_counts=counts), token_tasks)
    assert (recipe.strategy, recipe.contrastive) == (strategy, contrastive)
    assert recipe.reason


S = SHARED_ROWS_PER_CLASS


@pytest.mark.parametrize(
    ("per_class", "same_rows", "strategy", "contrastive"),
    [
        (S, True, "full", False),  # two tasks label every row: fine-tuning trains both at each step
        (S - 1, True, "frozen", True),  # below the bound: the stage
        (S, False, "frozen", True),  # each row belongs to one task: the stage
        (F, False, "frozen", True),
    ],
)
def test_tasks_that_share_rows(per_class: int, same_rows: bool, strategy: str, contrastive: bool) -> None:
    """Five grades and three polarities of the same rows against two tasks of separate rows."""
    counts = {"grade": (per_class,) * 5, "polarity": (per_class * 5 // 3,) * 3}
    n = 5 * per_class
    sets = {frozenset({"grade", "polarity"}): n} if same_rows else {frozenset({"grade"}): n, frozenset({"polarity"}): n}
    stats = DataStats(labelled_rows=n if same_rows else 2 * n, class_counts=counts, task_sets=sets)
    recipe = choose_recipe(stats)
    assert (recipe.strategy, recipe.contrastive) == (strategy, contrastive)
    assert ("task labels per row" in recipe.reason) == (strategy == "full")


def test_shared_rows_of_many_classes_keep_logistic_heads() -> None:
    """Where no task would take the contrastive stage (every task past max_classes), the shared-rows
    rule does not apply: logistic heads on the pretrained encoder, as for one such task (not measured
    otherwise)."""
    counts = {"intent": (S,) * (M + 1), "topic": (S,) * (M + 1)}
    n = S * (M + 1)
    stats = DataStats(labelled_rows=n, class_counts=counts, task_sets={frozenset(counts): n})
    assert (choose_recipe(stats).strategy, choose_recipe(stats).contrastive) == ("frozen", False)
    assert choose_recipe(stats, max_classes=None).strategy == "full"


def test_the_reason_states_what_was_seen() -> None:
    recipe = choose_recipe(DataStats(24, {"label": (8, 8, 8)}))
    assert recipe.reason.startswith("24 rows; label: 3 classes, 8 rows per class")
    assert "contrastive" in recipe.reason and "logistic heads" in recipe.reason
    assert rows_per_class((1, 2, 99, 0)) == 34


def _config(**training: object):
    return validate_config({"tasks": {"t": {}}, "data": {"train": "x.csv"}, "training": training})


def test_auto_is_the_default_and_resolves_to_a_concrete_strategy() -> None:
    config = _config()
    assert config.training.strategy == "auto"
    resolved, recipe = apply_recipe(config, DataStats(16, {"t": (8, 8)}))
    assert recipe is not None
    assert resolved.training.strategy == "frozen" and resolved.training.contrastive.enabled is True
    assert config.training.strategy == "auto"  # the user's config is not changed


def test_an_explicit_choice_is_kept() -> None:
    config = _config(strategy="full")
    assert apply_recipe(config, DataStats(16, {"t": (8, 8)})) == (config, None)
    off = _config(contrastive={"enabled": False})
    resolved, recipe = apply_recipe(off, DataStats(16, {"t": (8, 8)}))
    assert resolved.training.strategy == "frozen" and resolved.training.contrastive.enabled is False
    assert recipe is not None and not recipe.contrastive
    assert recipe.reason == "16 rows; t: 2 classes, 8 rows per class: logistic heads, no contrastive stage " + (
        "(training.contrastive.enabled: false)"
    )


def test_an_explicit_stage_is_stated_where_the_recipe_had_none() -> None:
    """Past the few-shot bound the recipe fine-tunes without the stage; asked for, the stage runs first
    and the log line says so (it used to state the recipe's own choice whichever way the user set it)."""
    stats = DataStats(4000, {"t": (2000, 2000)})
    assert choose_recipe(stats).contrastive is False
    resolved, recipe = apply_recipe(_config(contrastive={"enabled": True}), stats)
    assert resolved.training.strategy == "full" and resolved.training.contrastive.enabled is True
    assert recipe is not None and recipe.contrastive
    assert recipe.reason.endswith(
        ": contrastive tuning of the encoder (training.contrastive.enabled: true), then full fine-tuning"
    )
    same = apply_recipe(_config(contrastive={"enabled": False}), stats)[1]
    assert same == choose_recipe(stats)  # an explicit value equal to the recipe's leaves its line as it is
    safe = _config(contrastive={"enabled": True}, keep={"protect": "safe"})
    resolved, recipe = apply_recipe(safe, DataStats(16, {"t": (8, 8)}))
    assert recipe is not None and recipe.reason == "keep.protect safe: logistic heads on the encoder as it is"
    assert resolved.training.contrastive.enabled is True  # kept as given; the plan finds nothing it could train


def test_unknown_strategy_lists_auto() -> None:
    from mtst.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed: auto, frozen"):
        _config(strategy="fast")
