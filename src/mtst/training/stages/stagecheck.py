"""Did the contrastive stage help? Heads on the encoder before it, scored beside the tuned ones on validation.

The stage lifts most data a long way (TREC 8/class: 51 to 76 beside logistic heads on the pretrained
encoder), but on some samples the pretrained encoder separates the classes better than what the stage
makes of a few rows (SST-2 8/class, one seed of three: 62.9 with the stage, 65.0 without). The
training rows cannot tell: the stage has seen them, so any score on them flatters the tuned encoder.
A validation split can. Where a run has one and fits its heads by logistic regression (``frozen``,
what the ``auto`` recipe runs after the stage), heads are first fitted on the encoder as it is, at
the cost of one encoding pass of the training and validation rows and a fit of seconds; after the
stage the two are compared on validation, on the run's selection metric, and the stage is undone
only where the encoder before it scores higher in at least ``CONFIDENCE`` of paired bootstrap
resamples of the validation rows. A difference inside the noise keeps the stage, which is ahead on
average (``benchmarks/README.md`` "Small data").

The comparison is a pure function of two sets of predictions (:func:`bootstrap_share`), tested
without a model; :func:`fit_baseline` and :func:`judge_stage` are its two moments in a run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtst.data import Split
from mtst.evaluate import score_split, summary_metrics
from mtst.modeling import tasktypes
from mtst.training.runtime.cache import pooled_embeddings
from mtst.training.stages.headfit import fit_closed_form
from mtst.training.stages.scoring import pooled_predictions
from mtst.training.stages.selection import TIE

if TYPE_CHECKING:
    from mtst.modeling.model import MultiTaskModel
    from mtst.training.inputs import RunInputs
    from mtst.training.planning.plan import TrainingPlan

logger = logging.getLogger("mtst")

RESAMPLES = 1000  # paired bootstrap resamples of the validation rows
# Validation rows the check compares on (a seeded sample above it): the baseline encodes them once more,
# and 2,000 rows tell a 2-point loss from noise.
CHECK_ROWS = 2000
# The share of resamples in which the encoder before the stage must score higher for the stage to be
# undone: the stage is ahead on most data, so a run leaves it only on evidence, not on a coin flip.
CONFIDENCE = 0.9


@dataclass
class Baseline:
    """The encoder before the stage, its fitted heads, and their predictions on the validation rows."""

    backbone: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor]
    rows: np.ndarray  # the validation rows compared
    predictions: dict[str, np.ndarray]  # on those rows
    figures: dict[str, float]  # summary_metrics of the predictions


@dataclass(frozen=True)
class StageVerdict:
    """The check's outcome: the selection metric before and after the stage on validation, the share of
    resamples where it was higher before, and whether the stage was kept."""

    metric: str
    before: float | None  # None where the validation rows do not score the metric (its task unlabelled there)
    after: float | None
    share_before_higher: float
    validation_rows: int
    kept: bool

    def describe(self) -> str:
        what = "kept" if self.kept else "undone: the encoder before it is the run's encoder"
        return (
            f"contrastive stage check on {self.validation_rows} validation rows ({self.metric}): before the stage "
            f"{_percent(self.before)}, after {_percent(self.after)}, higher before in "
            f"{100 * self.share_before_higher:.0f}% of {RESAMPLES} resamples; the stage is {what}"
        )

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def resample(split: Split, rows: np.ndarray, with_texts: bool = True) -> Split:
    """``split``'s sentence-level rows ``rows`` (repeats allowed) as a split of their own; ``with_texts``
    false leaves their texts empty (scoring reads only labels and targets)."""
    texts = [split.texts[i] for i in rows] if with_texts else [""] * len(rows)
    labels = {task: values[rows] for task, values in split.labels.items()}
    targets = {task: values[rows] for task, values in split.targets.items()}
    return Split(split.name, texts, labels, targets=targets)


def figures(
    split: Split, predictions: dict[str, np.ndarray], labels: dict[str, list[str]], auxiliary: Sequence[str]
) -> dict[str, float]:
    """The run's flat validation figures (``task/metric`` and the means) of ``predictions``."""
    return summary_metrics(score_split(split, predictions, labels), auxiliary)


def bootstrap_share(
    split: Split,
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    labels: dict[str, list[str]],
    metric: str,
    auxiliary: Sequence[str] = (),
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> float:
    """The share of paired bootstrap resamples of ``split``'s rows in which ``before`` scores higher than
    ``after`` on ``metric`` (both sets of predictions are scored on the same resampled rows)."""
    rng = np.random.default_rng(seed)
    n, higher = len(split), 0
    for _ in range(resamples):
        rows = rng.integers(0, n, n)
        sub = resample(split, rows, with_texts=False)
        a = figures(sub, {t: p[rows] for t, p in before.items()}, labels, auxiliary).get(metric)
        b = figures(sub, {t: p[rows] for t, p in after.items()}, labels, auxiliary).get(metric)
        higher += a is not None and b is not None and a > b + TIE
    return higher / resamples if resamples else 0.0


def stage_checked(inputs: RunInputs, plan: TrainingPlan, world: int, resumed: bool) -> bool:
    """Whether a run checks its contrastive stage: ``contrastive.check`` on, a fresh run of one process with
    a validation split, heads fitted by logistic regression, every prediction task a sentence task."""
    model = inputs.model
    return (
        plan.contrastive is not None
        and inputs.config.training.contrastive.check
        and plan.closed_form
        and world == 1
        and not resumed
        and "validation" in inputs.data.splits
        and all(model.tasks[t].type in tasktypes.SENTENCE_TYPES for t in model.prediction_tasks)
    )


def split_embeddings(model: MultiTaskModel, inputs: RunInputs, split: str, rows: np.ndarray) -> torch.Tensor:
    """Pooled embeddings of a split's ``rows`` through the encoder as it stands (from the run's cache where
    it holds them, else encoded from the run's token ids)."""
    cache = inputs.cache
    if cache.mode == "pooled" and split in cache.ids:
        return cache.embeddings(split)[torch.as_tensor(rows)]
    ids = inputs.ids[split]
    batch_size = inputs.config.training.eval_batch_size
    return pooled_embeddings(model.encoder, [ids[i] for i in rows], batch_size, cache.budget_mb, None)


def check_rows(n: int, seed: int, limit: int | None = None) -> np.ndarray:
    """The validation rows the check compares on: all ``n``, or a seeded sample of ``limit`` (default
    ``CHECK_ROWS``), in order."""
    limit = CHECK_ROWS if limit is None else limit
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def fit_baseline(model: MultiTaskModel, inputs: RunInputs, fitted: tuple[str, ...]) -> Baseline:
    """Heads ``fitted`` on the encoder before the stage; its weights, the heads and their validation figures."""
    tc, data = inputs.config.training, inputs.data
    train = data.splits["train"]
    emb = split_embeddings(model, inputs, "train", np.arange(len(train)))
    fit_closed_form(model, train, tc.seed, emb, tc.eval_batch_size, fitted)
    rows = check_rows(len(data.splits["validation"]), tc.seed)
    validation = resample(data.splits["validation"], rows, with_texts=False)
    predictions = pooled_predictions(model, split_embeddings(model, inputs, "validation", rows), validation)
    return Baseline(
        backbone={k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()},  # off the GPU
        heads={k: v.detach().clone() for k, v in model.heads.state_dict().items()},
        rows=rows,
        predictions=predictions,
        figures=figures(validation, predictions, data.labels, inputs.aux_tasks),
    )


def judge_stage(baseline: Baseline, model: MultiTaskModel, inputs: RunInputs) -> StageVerdict:
    """Compare the tuned model (its heads fitted) with the baseline on validation; where the baseline is
    higher in at least ``CONFIDENCE`` of the resamples, put its encoder and heads back into ``model``."""
    tc, data = inputs.config.training, inputs.data
    validation = resample(data.splits["validation"], baseline.rows, with_texts=False)
    after = pooled_predictions(model, split_embeddings(model, inputs, "validation", baseline.rows), validation)
    after_figures = figures(validation, after, data.labels, inputs.aux_tasks)
    share = bootstrap_share(
        validation, baseline.predictions, after, data.labels, tc.metric, inputs.aux_tasks, seed=tc.seed
    )
    verdict = StageVerdict(
        tc.metric,
        baseline.figures.get(tc.metric),
        after_figures.get(tc.metric),
        share,
        len(validation),
        kept=share < CONFIDENCE,
    )
    if not verdict.kept:
        model.encoder.load_state_dict(baseline.backbone)
        model.heads.load_state_dict(baseline.heads)
    logger.info("%s", verdict.describe())
    return verdict
