"""``lora``: LoRA adapters (peft) and the heads train; optionally the top layers in full."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtst.training.planning.strategies.base import GroupContext, Strategy

if TYPE_CHECKING:
    from torch import nn

    from mtst.config import TrainingSection


class Lora(Strategy):
    name = "lora"
    trains = "LoRA adapters on the attention projections, and the heads; optionally the top layers (lora.full_top_k)"
    use_when = "adaptation with a run directory of a few MB"
    compare_arg = "RANK"

    def stage_groups(self, stage: int, ctx: GroupContext) -> set[str]:
        return ctx.heads | {"lora"} | ctx.top_layers(ctx.training.lora.full_top_k)

    def default_head_lr(self, training: TrainingSection) -> float:
        return training.lora.lr

    def prepare(self, model: nn.Module, ctx: GroupContext) -> None:
        """Inject the adapters, and record what the saved model will hold."""
        from mtst.modeling.lora import add_lora

        add_lora(model.encoder.backbone, ctx.training.lora, ctx.num_layers)
        model.lora = ctx.training.lora.model_dump()

    def saved_backbone_groups(self, ever: set[str]) -> list[str] | None:
        """Adapters and heads, plus the layers trained in full; the rest is read from the backbone."""
        return sorted(g for g in ever if g != "lora" and not g.startswith("heads."))

    def compare_overrides(self, arg: int) -> dict[str, Any]:
        return {"lora": {"r": arg, "alpha": 2 * arg}}
