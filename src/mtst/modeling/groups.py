"""Parameter groups: every parameter of a :class:`MultiTaskModel` belongs to one, named from its name.

``embeddings``, ``layers.<i>``, ``backbone_other`` (e.g. a final norm), ``lora``
(adapters) or ``heads.<task>``. Freezing, learning rates and checkpoints all
speak in these groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_LAYER = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
_HEAD = re.compile(r"^heads\.([^.]+)\.")


def parameter_group(name: str) -> str:
    """The group a parameter belongs to, from its name in :class:`MultiTaskModel`."""
    head = _HEAD.match(name)
    if head:
        return f"heads.{head.group(1)}"
    if "lora_" in name:
        return "lora"
    layer = _LAYER.search(name)
    if layer:
        return f"layers.{int(layer.group(1))}"
    if "embed" in name:
        return "embeddings"
    return "backbone_other"


def count_layers(names: Iterable[str]) -> int:
    """Number of transformer layers seen in the parameter names."""
    indices = [int(g.split(".")[1]) for g in map(parameter_group, names) if g.startswith("layers.")]
    return max(indices) + 1 if indices else 0
