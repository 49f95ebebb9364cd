"""``top_k``: the top k layers and the heads train; the layers below run once (prefix cache)."""

from __future__ import annotations

from typing import Any

from mtst.training.planning.strategies.base import GroupContext, Strategy


class TopK(Strategy):
    name = "top_k"
    trains = "the top k layers (training.top_k) and the heads"
    use_when = "more adaptation at a fraction of the cost"
    compare_arg = "K"

    def stage_groups(self, stage: int, ctx: GroupContext) -> set[str]:
        return ctx.heads | ctx.top_layers(ctx.training.top_k)

    def compare_overrides(self, arg: int) -> dict[str, Any]:
        return {"top_k": arg}
