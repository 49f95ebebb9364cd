"""``frozen``: nothing trains; linear heads are fitted to convergence (logistic regression) on frozen embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtst.training.strategies.base import GroupContext, Strategy

if TYPE_CHECKING:
    from torch import nn


class Frozen(Strategy):
    name = "frozen"
    trains = "nothing: linear heads are fitted by cross-validated logistic regression on frozen embeddings"
    use_when = "a zero-training baseline"
    backbone_starts_frozen = True
    closed_form = True

    def stage_groups(self, stage: int, ctx: GroupContext) -> set[str]:
        return set()

    def prepare(self, model: nn.Module, ctx: GroupContext) -> None:
        """Linear sentence heads read the normalised embedding: the encoder is trained for cosine
        similarity, so the direction carries the meaning (measured: benchmarks/head_fit.py)."""
        for name, spec in model.tasks.items():
            if spec.type == "classification" and not spec.hidden_size:
                model.tasks[name] = spec.model_copy(update={"normalize_input": True})
