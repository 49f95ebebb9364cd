"""Training checkpoints: model, optimizer, scheduler, RNG and loop position.

Everything tensor-valued goes to safetensors and everything else to JSON, so
resuming never unpickles. A checkpoint directory is written beside the old
one and swapped in only when complete: a crash mid-save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mtst.errors import MtstError
from mtst.model import atomic_directory

CHECKPOINT_DIR = "checkpoint"


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def check_finite(model: nn.Module) -> None:
    """Refuse to save weights that hold NaN or inf."""
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise MtstError(f"refusing to save non-finite weights ({', '.join(bad[:3])}...)")


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler_state: dict[str, Any],
    trainer_state: dict[str, Any],
) -> Path:
    check_finite(model)
    target = run_dir / CHECKPOINT_DIR
    with atomic_directory(target) as tmp:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta), encoding="utf-8")
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        state = {**trainer_state, "scheduler": scheduler_state}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    return target


def load_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG in place; return the trainer state."""
    path = run_dir / CHECKPOINT_DIR
    if not (path / "trainer_state.json").exists():
        raise MtstError(f"{run_dir}: no checkpoint to resume from (expected {path})")
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    meta = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), meta))
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    return json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
