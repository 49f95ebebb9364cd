"""The default recipe (``training.strategy: auto``): the strategy and its stages, chosen from the data.

A pure function of the data's statistics, so the choice is table-tested and
stated in the log before training starts. Thresholds come from
``benchmarks/fewshot.py`` (SST-2, TREC, BANKING77 at 8 to 64 rows per class
and full data, beside SetFit, a frozen encoder with logistic regression and
plain fine-tuning); ``benchmarks/README.md`` has the figures.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from mtst.config import AUTO, ContrastiveSection, RunConfig
from mtst.training.planning.plan import DataStats

# Up to this many labelled rows per class (the task's rows over its classes, the scarcest task), linear
# heads on the pretrained encoder are within a point of full fine-tuning at a fraction of its time; above
# it, full fine-tuning is ahead. The mean, not the median: a task whose few large classes hold most of its
# rows gains from fine-tuning on all of them (benchmarks/README.md "Small data").
FEW_SHOT_ROWS_PER_CLASS = 100
# Where the scarcest task takes part in the contrastive stage, the tuned encoder and logistic heads stay
# ahead of full fine-tuning past 100 per class while that task has few rows in all (full fine-tuning then
# runs many epochs over a few rows); measured on single-task data (benchmarks/results/fewshot_threshold.json).
CONTRASTIVE_TASK_ROWS = 1000
# The contrastive stage helps tasks whose classes all fit in every batch (32 rows, at least 2 per
# class); with more classes it measured no gain over logistic heads on the pretrained encoder, at many
# times the cost, so such tasks sit it out (contrastive.max_classes).
MAX_CONTRASTIVE_CLASSES = ContrastiveSection.model_fields["max_classes"].default
# Where several classification tasks label the same rows (on average at least SHARED_LABELS_PER_ROW of
# them a row), full fine-tuning trains the encoder on every task at each step and was ahead of the
# stage, which gives each task its own budget, from SHARED_ROWS_PER_CLASS rows per class of the scarcest
# task, in a fraction of the time (benchmarks/README.md "The bundled demo": the demo and SST-5 grade +
# polarity). Where each row belongs to one task (SST-2 + TREC) the stage stays ahead.
SHARED_ROWS_PER_CLASS = 64
SHARED_LABELS_PER_ROW = 1.5


# What each strategy the recipe can pick does, in the log's words (every Recipe's strategy is one of these).
_STRATEGY_WORDS = {"frozen": "logistic heads", "heads": "heads trained", "full": "full fine-tuning"}


@dataclass(frozen=True)
class Recipe:
    strategy: str
    contrastive: bool
    seen: str  # the data seen, or what else decided
    what: str  # what it leads to

    @property
    def reason(self) -> str:
        """One line for the log: the data seen and what it leads to."""
        return f"{self.seen}: {self.what}"

    def with_contrastive(self, enabled: bool) -> Recipe:
        """The recipe with the stage on or off as ``training.contrastive.enabled`` says, its line saying so."""
        if enabled == self.contrastive:
            return self
        then = _STRATEGY_WORDS[self.strategy]
        what = (
            f"contrastive tuning of the encoder (training.contrastive.enabled: true), then {then}"
            if enabled
            else f"{then}, no contrastive stage (training.contrastive.enabled: false)"
        )
        return Recipe(self.strategy, enabled, self.seen, what)


def rows_per_class(counts: tuple[int, ...]) -> float:
    """Rows per class: the labelled rows over the classes that have rows."""
    present = [c for c in counts if c > 0]
    return float(statistics.mean(present)) if present else 0.0


def choose_recipe(
    stats: DataStats,
    token_tasks: bool = False,
    max_classes: int | None = MAX_CONTRASTIVE_CLASSES,
    pair_tasks: bool = False,
) -> Recipe:
    """The recipe for data with ``stats`` (``token_tasks``: a token or masked-LM task is present;
    ``pair_tasks``: a pair task is); the contrastive stage where some task has at most ``max_classes``
    classes (None: any)."""
    if token_tasks:
        return Recipe("full", False, "token-level task(s)", "full fine-tuning")
    if pair_tasks:  # Sentence-BERT: both texts through the encoder, which the pair loss trains
        return Recipe("full", False, "sentence-pair task(s)", "full fine-tuning of the encoder on both texts")
    if not stats.class_counts:
        return Recipe("full", False, f"{stats.labelled_rows} rows", "full fine-tuning")
    task, counts = min(stats.class_counts.items(), key=lambda item: rows_per_class(item[1]))
    per_class = rows_per_class(counts)
    classes = sum(c > 0 for c in counts)
    seen = f"{stats.labelled_rows} rows; {task}: {classes} classes, {per_class:.0f} rows per class"

    def in_stage(n_classes: int) -> bool:
        return max_classes is None or n_classes <= max_classes

    fewest = min(sum(c > 0 for c in task_counts) for task_counts in stats.class_counts.values())
    # Tasks that label the same rows: fine-tuning on all of them at once, where the stage would run.
    shared = stats.labels_per_row(tuple(stats.class_counts))  # 1.0 for one task (capped at the tasks' count)
    if shared >= SHARED_LABELS_PER_ROW and per_class >= SHARED_ROWS_PER_CLASS and in_stage(fewest):
        return Recipe("full", False, f"{seen}, {shared:.1f} task labels per row", "full fine-tuning on every task")
    # The scarcest task, where it takes part in the stage, keeps it up to CONTRASTIVE_TASK_ROWS rows.
    if per_class > FEW_SHOT_ROWS_PER_CLASS and not (in_stage(classes) and stats.rows_of(task) <= CONTRASTIVE_TASK_ROWS):
        return Recipe("full", False, seen, "full fine-tuning")
    if in_stage(fewest):
        return Recipe("frozen", True, seen, "contrastive tuning of the encoder, then logistic heads")
    return Recipe("frozen", False, seen, f"logistic heads on the pretrained encoder ({fewest} classes)")


def apply_recipe(
    config: RunConfig, stats: DataStats, token_tasks: bool = False, pair_tasks: bool = False
) -> tuple[RunConfig, Recipe | None]:
    """``config`` with ``strategy: auto`` resolved (an explicit ``contrastive.enabled`` is kept);
    any other strategy is returned unchanged with no recipe."""
    tc = config.training
    if tc.strategy != AUTO:
        return config, None
    recipe = choose_recipe(stats, token_tasks, tc.contrastive.max_classes, pair_tasks)
    if tc.keep.protect == "safe":  # the encoder stays as it is: heads on its features
        trained = token_tasks or pair_tasks  # heads a closed-form fit cannot set
        strategy = "heads" if trained else "frozen"
        recipe = Recipe(strategy, False, "keep.protect safe", f"{_STRATEGY_WORDS[strategy]} on the encoder as it is")
    elif tc.contrastive.enabled is not None:  # (under safe the encoder is frozen: no stage has anything to train)
        recipe = recipe.with_contrastive(tc.contrastive.enabled)
    enabled = recipe.contrastive if tc.contrastive.enabled is None else tc.contrastive.enabled
    contrastive = tc.contrastive.model_copy(update={"enabled": enabled})
    training = tc.model_copy(update={"strategy": recipe.strategy, "contrastive": contrastive})
    return config.model_copy(update={"training": training}), recipe
