"""Which heads a closed-form fit can set, and what they read: planned before any stage runs (the
strategy and the warm start both decide it), so it sits with the plan, not with the fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtst.modeling.tasktypes import SENTENCE_TYPES

if TYPE_CHECKING:
    from mtst.modeling.model import MultiTaskModel


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
