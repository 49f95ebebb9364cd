"""Which heads a closed-form fit can set, which ones start fitted (the warm start), and what they read:
planned before any stage runs, so it sits with the plan, not with the fit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from mtst.modeling.tasktypes import SENTENCE_TYPES, fit_method

if TYPE_CHECKING:
    from mtst.config import RunConfig
    from mtst.modeling.model import MultiTaskModel


class HowItStarts(Protocol):
    """What the warm start asks of a strategy (:class:`~mtst.training.planning.strategies.base.Strategy`)."""

    closed_form: bool  # its heads' fit is the whole training
    backbone_starts_frozen: bool  # its first steps train the heads alone


def linear_sentence_heads(model: MultiTaskModel) -> list[str]:
    """Tasks whose head is one linear layer on the sentence embedding (what a closed-form fit can set:
    multinomial logistic regression, one-vs-rest logistic regression for multi-label, ridge regression;
    a pair classifier's on its ``[u, v, |u - v|, u * v]`` features)."""
    kinds = (*SENTENCE_TYPES, "pair_classification")
    return [t for t, spec in model.tasks.items() if spec.type in kinds and not spec.hidden_size]


def mark_normalized_inputs(model: MultiTaskModel, only: tuple[str, ...] | None = None) -> None:
    """Linear sentence heads (of ``only``, default all) read the normalised embedding: the encoder is
    trained for cosine similarity, so the direction carries the meaning (measured: benchmarks/head_fit.py)."""
    for name in linear_sentence_heads(model):
        if (only is not None and name not in only) or model.tasks[name].type == "pair_classification":
            continue
        model.tasks[name] = model.tasks[name].model_copy(update={"normalize_input": True})


# Above this many classes a random head, at the encoder's learning rate, is still far from trained after
# 3 epochs, and fitting it first gains; with few classes it does not (benchmarks/README.md "Full data").
WARM_START_MIN_CLASSES = 16


def warm_start(head_init: str, strategy: HowItStarts, num_classes: int, shared: bool = False) -> bool:
    """Whether a task's linear head is fitted by logistic regression before the first step.

    ``auto``: where the backbone starts frozen (``heads``, ``gradual``: the heads' first steps are on
    fixed features, a convex problem better solved outright), for heads of more than
    WARM_START_MIN_CLASSES classes (benchmarks/README.md "Full data"), and where several
    classification tasks train the encoder together (``shared``): a random head's gradient reshapes
    the encoder the other tasks read (benchmarks/README.md "Multi-task").
    """
    if strategy.closed_form:
        return False
    if head_init == "auto":
        return strategy.backbone_starts_frozen or num_classes > WARM_START_MIN_CLASSES or shared
    return head_init == "logistic"


def warm_started(
    config: RunConfig,
    strategy: HowItStarts,
    ever: set[str],
    continued: tuple[str, ...],
    class_counts: dict[str, tuple[int, ...]],
    shared: bool,
) -> tuple[str, ...]:
    """The heads fitted by logistic regression before the first step (:func:`warm_start` decides per task)."""
    tc = config.training
    return tuple(
        t
        for t in config.tasks
        if f"heads.{t}" in ever
        and t not in continued  # a continued head starts from what it learned
        and config.tasks[t].type != "pair_similarity"  # the cosine of two embeddings: no head to fit
        and warm_start(tc.head_init, strategy, len(class_counts.get(t, ())), shared)
    )


def fitted_by(model: MultiTaskModel, head_init: tuple[str, ...]) -> str:
    """How a run's linear heads are fitted in closed form, in words (``head_init``'s, else every prediction
    head's, as ``frozen`` fits them): :func:`mtst.modeling.tasktypes.fit_method`."""
    return fit_method([model.tasks[t].type for t in (head_init or model.prediction_tasks) if t in model.tasks])
