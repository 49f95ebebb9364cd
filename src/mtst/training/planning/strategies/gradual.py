"""``gradual``: heads first, then one more layer group per stage, top down (ULMFiT)."""

from __future__ import annotations

from mtst.training.planning.strategies.base import GroupContext, Strategy


class Gradual(Strategy):
    name = "gradual"
    trains = "heads first, then one more layer per stage, top down; each newly unfrozen layer warms up on its own"
    use_when = "small data where full fine-tuning forgets"
    backbone_starts_frozen = True

    def stage_groups(self, stage: int, ctx: GroupContext) -> set[str]:
        g = ctx.training.gradual
        unfrozen = min(stage * g.layers_per_stage, ctx.num_layers)
        groups = ctx.heads | ctx.top_layers(unfrozen)
        if g.include_embeddings and stage * g.layers_per_stage > ctx.num_layers:
            groups.add("embeddings")
        return groups

    def num_stages(self, ctx: GroupContext) -> int:
        g = ctx.training.gradual
        return -(-ctx.num_layers // g.layers_per_stage) + (1 if g.include_embeddings else 0) + 1

    def stage_steps(self, ctx: GroupContext, steps_per_epoch: int) -> int:
        g = ctx.training.gradual
        if g.stage_steps:
            return g.stage_steps
        return max(1, round((g.stage_epochs or 1.0) * steps_per_epoch))
