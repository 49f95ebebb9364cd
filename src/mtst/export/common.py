"""What every export starts from: the model with its LoRA adapters merged into the backbone."""

from __future__ import annotations

import copy

from mtst.modeling.model import MultiTaskModel


def plain_model(model: MultiTaskModel) -> MultiTaskModel:
    """The model with LoRA adapters folded in (a copy; the caller's model is untouched)."""
    if model.lora is None:
        return model
    merged = copy.deepcopy(model)
    merged.merge_lora()
    return merged
