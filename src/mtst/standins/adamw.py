"""AdamW without a ``torch.optim.Optimizer``: torch's own functional update, on state kept here.

The first ``torch.optim.Optimizer`` a process builds imports ``torch._dynamo`` (``torch._disable_dynamo`` on
``add_param_group``): 1.7 s of a 20 s few-shot run on two cores. :class:`LightAdamW` calls the functional
AdamW that ``torch.optim.AdamW.step`` calls (bit for bit the same update, fused on the CPU) and keeps
torch's state-dict layout, so a checkpoint of either resumes in the other. With the stand-ins off
(:mod:`mtst.standins`) every run steps through ``torch.optim.AdamW``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from mtst.standins import enabled

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
    if enabled() and functional_adamw_available():
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
