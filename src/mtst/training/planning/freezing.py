"""What trains: pure functions from parameter names to groups and trainable sets.

Every parameter belongs to one *group*: ``embeddings``, ``layers.<i>``,
``backbone_other`` (e.g. a final norm), ``lora`` (adapters) or ``heads.<task>``. Strategies and
``freeze`` lists are resolved to a set of trainable groups without touching a
model, so they are unit-testable and printable before a run starts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mtst.errors import ConfigError
from mtst.modeling.groups import parameter_group

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

FREEZE_FORMS = "embeddings, backbone, layers.N, layers.A-B, heads, heads.<task>"


def backbone_groups(num_layers: int) -> set[str]:
    return {"embeddings", "backbone_other", *(f"layers.{i}" for i in range(num_layers))}


def parse_freeze(items: Iterable[str], num_layers: int, tasks: Iterable[str]) -> set[str]:
    """Expand ``freeze`` names (``layers.0-3``, ``heads.sentiment``, ``backbone``...) to groups."""
    task_list = list(tasks)
    groups: set[str] = set()
    for raw in items:
        item = raw.strip()
        if item == "backbone":
            groups |= backbone_groups(num_layers)
        elif item == "embeddings":
            groups.add("embeddings")
        elif item == "heads":
            groups |= {f"heads.{t}" for t in task_list}
        elif item.startswith("heads."):
            task = item.split(".", 1)[1]
            if task not in task_list:
                raise ConfigError(f"training.freeze: unknown head {item!r}; tasks are: {', '.join(task_list)}")
            groups.add(item)
        elif m := re.fullmatch(r"layers\.(\d+)(?:-(\d+))?", item):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if lo > hi or hi >= num_layers:
                raise ConfigError(
                    f"training.freeze: {item!r} is out of range; the backbone has layers 0-{num_layers - 1}"
                )
            groups |= {f"layers.{i}" for i in range(lo, hi + 1)}
        else:
            raise ConfigError(f"training.freeze: cannot read {item!r}; allowed forms: {FREEZE_FORMS}")
    return groups


def trainable_names(names: Iterable[str], groups: set[str]) -> set[str]:
    return {n for n in names if parameter_group(n) in groups}


def apply_trainable(model: nn.Module, groups: set[str]) -> None:
    """Set ``requires_grad`` from the group set."""
    for name, param in model.named_parameters():
        param.requires_grad_(parameter_group(name) in groups)


def set_train_mode(model: nn.Module, groups: set[str]) -> None:
    """Training mode for trainable parts; eval mode (no dropout) for frozen ones."""
    model.train()
    active = set()  # modules holding a trainable parameter, and their ancestors
    for name, _ in model.named_parameters(remove_duplicate=False):
        if parameter_group(name) in groups:
            parts = name.split(".")
            active.update(".".join(parts[:i]) for i in range(len(parts)))
    for name, module in model.named_modules():
        if name not in active and next(module.parameters(), None) is not None:
            module.eval()
