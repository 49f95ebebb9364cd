"""``full``: everything trains, with layer-wise decayed learning rates where asked."""

from __future__ import annotations

from mtst.training.planning.strategies.base import GroupContext, Strategy


class Full(Strategy):
    name = "full"
    trains = "everything, with layer-wise decayed LRs (training.layer_decay)"
    use_when = "the most adaptation"

    def stage_groups(self, stage: int, ctx: GroupContext) -> set[str]:
        return ctx.everything()
