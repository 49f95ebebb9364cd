"""Parameter groups, the optimizer and learning-rate schedules.

``plan_param_groups`` is a pure function of parameter names: it gives each
one its group, learning rate and weight decay (layer-wise decay, a separate
head LR, no decay on biases and norms), so the plan is testable without a
model. :class:`GroupScheduler` applies warm-up and decay per group, and gives
groups unfrozen later (gradual unfreezing) a warm-up of their own. :func:`adamw` builds the optimizer every
run steps with (:class:`LightAdamW`: torch's AdamW update without a ``torch.optim.Optimizer``).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mtst.modeling.groups import count_layers, parameter_group
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


try:  # torch's documented functional AdamW: the update torch.optim.AdamW computes, on state the caller keeps
    from torch.optim.adamw import adamw as _adamw_update
except ImportError:  # pragma: no cover - a torch without it: adamw() falls back to torch.optim.AdamW
    _adamw_update = None

_UPDATE_ARGUMENTS = ("fused", "foreach", "amsgrad", "beta1", "beta2", "lr", "weight_decay", "eps", "maximize")


def functional_adamw_available() -> bool:
    """Whether this torch has the functional AdamW :class:`LightAdamW` calls, with the arguments it passes."""
    if _adamw_update is None:
        return False
    try:
        parameters = inspect.signature(_adamw_update).parameters
    except (TypeError, ValueError):
        return False
    return all(name in parameters for name in _UPDATE_ARGUMENTS)


def adamw(groups: list, lr: float, weight_decay: float = 0.01) -> LightAdamW | torch.optim.AdamW:
    """AdamW over ``groups`` (tensors, or param-group dicts), with torch's fused kernel where every parameter is
    on the CPU: torch's default there updates one tensor at a time, 65-80 ms a step for all-MiniLM-L6-v2's 10.6M
    encoder weights against 18-24 ms fused on two cores, which a short step (a head-only step, a contrastive
    step over 16 rows) notices. A :class:`LightAdamW` where this torch has the functional API it calls, else
    ``torch.optim.AdamW``: the same update either way."""
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(p.device.type == "cpu" for p in tensors)
    if functional_adamw_available():
        return LightAdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


class LightAdamW:
    """AdamW computing what ``torch.optim.AdamW`` computes (the same kernels, bit for bit) through torch's
    functional API, without being a ``torch.optim.Optimizer``.

    Why: the first ``Optimizer`` a process builds imports ``torch._dynamo`` (``torch._disable_dynamo`` on
    ``add_param_group``), 1.7 s on a 2-core CPU: as long as a few-shot run's whole contrastive stage takes.
    It keeps what a training loop, Accelerate and a checkpoint read of an optimizer: ``param_groups`` (with
    any extra keys a caller adds), ``defaults``, ``state`` (per parameter: ``step``, ``exp_avg``,
    ``exp_avg_sq``), ``step``, ``zero_grad``, ``add_param_group``, and ``state_dict``/``load_state_dict`` in
    torch's format, so checkpoints written by either load into the other.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool | None = None,
    ) -> None:
        self.defaults: dict[str, Any] = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            "fused": fused,
            "decoupled_weight_decay": True,
        }
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        items = list(params)
        for group in items if items and isinstance(items[0], dict) else [{"params": items}]:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append({**self.defaults, **group, "params": params})

    def _state(self, p: torch.Tensor, fused: bool) -> dict[str, torch.Tensor]:
        if p not in self.state:  # as torch.optim.Adam initialises it: a float32 step count, zero moments
            self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device if fused else "cpu"),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return self.state[p]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p, bool(group["fused"])) for p in params]
            beta1, beta2 = group["betas"]
            _adamw_update(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                [s["step"] for s in states],
                foreach=group["foreach"],
                fused=group["fused"],
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
            )
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: parameters numbered in group order, their state under those numbers."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        return {"state": {index[id(p)]: dict(s) for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A state dict of this class or of ``torch.optim.AdamW`` over the same parameter groups (checkpoints of
        either); moments move to their parameter's device and dtype, as torch moves them."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(saved, self.param_groups, strict=True)
        ):
            raise ValueError("the optimizer state holds other parameter groups than this optimizer")
        params: dict[int, tuple[torch.Tensor, bool]] = {}
        for old, group in zip(saved, self.param_groups, strict=True):
            fused = bool(old.get("fused"))
            params.update((int(i), (p, fused)) for i, p in zip(old["params"], group["params"], strict=True))
        state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for key, values in state_dict["state"].items():
            p, fused = params[int(key)]
            state[p] = {
                name: (
                    (v.to(dtype=torch.float32, device=p.device) if fused else v)
                    if name == "step"
                    else v.to(dtype=p.dtype, device=p.device)
                )
                for name, v in values.items()
            }
        self.state = state
        self.param_groups = [  # the saved settings, copied (as torch copies them), over this optimizer's tensors
            {**copy.deepcopy({k: v for k, v in old.items() if k != "params"}), "params": group["params"]}
            for old, group in zip(saved, self.param_groups, strict=True)
        ]


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
