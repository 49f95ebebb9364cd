"""Parameter groups, the optimizer and learning-rate schedules.

``plan_param_groups`` is a pure function of parameter names: it gives each
one its group, learning rate and weight decay (layer-wise decay, a separate
head LR, no decay on biases and norms), so the plan is testable without a
model. :class:`GroupScheduler` applies warm-up and decay per group, and gives
groups unfrozen later (gradual unfreezing) a warm-up of their own. :func:`adamw` builds the optimizer every
run steps with (:func:`mtst.standins.adamw.adamw`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mtst.modeling.groups import count_layers, parameter_group
from mtst.standins.adamw import LightAdamW, adamw
from mtst.training.planning.plan import group_lr

logger = logging.getLogger("mtst")

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "ln_", "layernorm")


@dataclass(frozen=True)
class GroupPlan:
    group: str
    lr: float
    weight_decay: float


def no_weight_decay(name: str) -> bool:
    return any(marker in name for marker in _NO_DECAY) or name.endswith(".bias")


def plan_param_groups(
    names: Iterable[str],
    lr_backbone: float,
    lr_head: float,
    layer_decay: float = 1.0,
    weight_decay: float = 0.01,
    num_layers: int | None = None,
    lr_lora: float | None = None,
) -> dict[str, GroupPlan]:
    """Name -> (group, lr, weight decay) for every parameter name given."""
    name_list = list(names)
    layers = count_layers(name_list) if num_layers is None else num_layers
    groups = {parameter_group(n) for n in name_list}
    lrs = {g: group_lr(g, layers, lr_backbone, lr_head, layer_decay, lr_lora) for g in groups}
    return param_groups_from_lrs(name_list, lrs, weight_decay)


def param_groups_from_lrs(
    names: Iterable[str], group_lrs: dict[str, float], weight_decay: float
) -> dict[str, GroupPlan]:
    """Name -> (group, lr, weight decay), each group's LR given (as a :class:`TrainingPlan` states them)."""
    return {
        n: GroupPlan(
            group=parameter_group(n),
            lr=group_lrs[parameter_group(n)],
            weight_decay=0.0 if no_weight_decay(n) else weight_decay,
        )
        for n in names
    }


def build_optimizer(
    model: nn.Module, names: Iterable[str], group_lrs: dict[str, float], weight_decay: float
) -> LightAdamW | torch.optim.AdamW:
    """AdamW over the named parameters, one param group per (group, weight-decay) pair, at the plan's LRs."""
    params = dict(model.named_parameters())
    plan = param_groups_from_lrs(names, group_lrs, weight_decay)
    buckets: dict[tuple[str, float], dict] = {}
    for name in sorted(plan, key=_param_order(list(params))):
        p = plan[name]
        bucket = buckets.setdefault(
            (p.group, p.weight_decay),
            {"params": [], "names": [], "lr": p.lr, "weight_decay": p.weight_decay, "group": p.group},
        )
        bucket["params"].append(params[name])
        bucket["names"].append(name)
    lr = max(group_lrs.values(), default=0.0)  # every param group sets its own; this is only AdamW's default
    return adamw(list(buckets.values()), lr=lr)


def _param_order(ordered: list[str]) -> Callable[[str], int]:
    index = {n: i for i, n in enumerate(ordered)}
    return lambda n: index[n]


def schedule_factor(kind: str, step: int, total_steps: int, warmup_steps: int, cycle_steps: int | None = None) -> float:
    """Multiplier of the base LR at ``step`` (0-based) for one schedule."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "cyclical":
        cycle = cycle_steps or max(2, span // 2)
        position = ((step - warmup_steps) % cycle) / cycle
        return 0.1 + 0.9 * (1.0 - abs(2.0 * position - 1.0))
    raise ValueError(f"unknown schedule {kind!r}")


class GroupScheduler:
    """Sets each param group's LR = base x schedule(step) x own warm-up since it started.

    State is just the step counter, so resuming is exact.
    """

    def __init__(
        self,
        optimizer: Any,  # LightAdamW or a torch optimizer
        kind: str,
        total_steps: int,
        warmup_steps: int,
        cycle_steps: int | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.cycle_steps = cycle_steps
        self.step_count = 0
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group.setdefault("start_step", 0)
        self._apply()

    def start_group(self, group_name: str) -> None:
        """Mark a group as unfrozen now: it warms up from here."""
        for group in self.optimizer.param_groups:
            if group.get("group") == group_name:
                group["start_step"] = self.step_count
        self._apply()

    def _apply(self) -> None:
        base = schedule_factor(self.kind, self.step_count, self.total_steps, self.warmup_steps, self.cycle_steps)
        for group in self.optimizer.param_groups:
            local = 1.0
            since = self.step_count - group["start_step"]
            if group["start_step"] > 0 and self.warmup_steps and since < self.warmup_steps:
                local = (since + 1) / self.warmup_steps
            group["lr"] = group["base_lr"] * base * local

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


def all_reduce_gradients(params: list[torch.nn.Parameter], loss: float, world: int) -> float:
    """Average trainable gradients (and the loss) over ``world`` processes in one all-reduce."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params] + [torch.tensor([loss], device=params[0].device)])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()
    return float(flat[-1])
