"""``frozen``: nothing trains; linear heads are fitted to convergence (logistic regression) on frozen embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtst.training.planning.strategies.base import GroupContext, Strategy

if TYPE_CHECKING:
    from torch import nn


class Frozen(Strategy):
    name = "frozen"
    trains = "nothing: linear heads are fitted by cross-validated logistic regression on frozen embeddings"
    use_when = "a zero-training baseline"
    backbone_starts_frozen = True
    backbone_fixed = True
    closed_form = True

    def stage_groups(self, stage: int, ctx: GroupContext) -> set[str]:
        return set()

    def prepare(self, model: nn.Module, ctx: GroupContext) -> None:
        """The heads it fits read the normalised embedding; a frozen head, or one carried from
        ``model.init``, keeps reading what it was trained on."""
        from mtst.training.planning.freezing import parse_freeze
        from mtst.training.planning.heads import mark_normalized_inputs

        frozen = parse_freeze(ctx.training.freeze, ctx.num_layers, ctx.tasks)
        mark_normalized_inputs(model, tuple(t for t in ctx.tasks if f"heads.{t}" not in frozen))
