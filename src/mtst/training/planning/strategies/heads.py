"""``heads``: only the task heads train, on a frozen encoder (whose output is cached)."""

from __future__ import annotations

from mtst.training.planning.strategies.base import GroupContext, Strategy


class Heads(Strategy):
    name = "heads"
    trains = "the heads"
    use_when = "tiny data, fast iteration, a proof of concept"
    backbone_starts_frozen = True
    backbone_fixed = True

    def stage_groups(self, stage: int, ctx: GroupContext) -> set[str]:
        return ctx.heads
