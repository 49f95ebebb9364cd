"""LoRA adapters on the backbone, through Hugging Face ``peft``.

Adapters are injected into the backbone in place (no wrapper model), so the
features-dict pipeline, freezing groups and saving work as for any backbone.
A run saves only the adapters and heads (plus any layers trained in full);
:func:`merge_lora` folds the adapters into the base weights for export.
"""

from __future__ import annotations

from torch import nn

from mtst.config import LoraSettings
from mtst.errors import ConfigError

LORA_MARKER = "lora_"


def is_lora_param(name: str) -> bool:
    return LORA_MARKER in name


def add_lora(backbone: nn.Module, settings: LoraSettings, num_layers: int) -> None:
    """Inject adapters into ``backbone`` (below the top ``full_top_k`` layers, which train in full)."""
    from peft import LoraConfig, inject_adapter_in_model

    layers = list(range(max(0, num_layers - settings.full_top_k)))
    if not layers:
        raise ConfigError(
            f"training.lora.full_top_k: {settings.full_top_k} covers all {num_layers} layers; "
            "no layer is left for adapters (use strategy top_k or full instead)"
        )
    names = {n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in settings.target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"training.lora.target_modules: {', '.join(missing)} not found in this backbone; "
            f"its linear layers are named: {', '.join(sorted(names))}"
        )
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        layers_to_transform=layers if settings.full_top_k else None,
    )
    inject_adapter_in_model(config, backbone)


def merge_lora(backbone: nn.Module) -> int:
    """Fold every adapter into its base layer and put the plain layer back; returns how many."""
    from peft.tuners.lora import LoraLayer

    targets = [(name, module) for name, module in backbone.named_modules() if isinstance(module, LoraLayer)]
    for name, module in targets:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, child, module.get_base_layer())
    if targets and hasattr(backbone, "peft_config"):  # the adapters' record: a new injection starts afresh
        del backbone.peft_config
    return len(targets)
