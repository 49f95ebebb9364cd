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
from safetensors.torch import save_file
from torch import nn

from mtst.errors import MtstError
from mtst.fileio import atomic_directory, read_safetensors
from mtst.modeling.fingerprint import weight_fingerprint

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


def check_finite(model: nn.Module, names: set[str] | None = None) -> None:
    """Refuse to save weights that hold NaN or inf (only ``names``, where given: frozen ones cannot turn)."""
    bad = [n for n, p in model.named_parameters() if (names is None or n in names) and not torch.isfinite(p).all()]
    if bad:
        raise MtstError(f"refusing to save non-finite weights ({', '.join(bad[:3])}...)")


def _fingerprint(model: nn.Module, trainable: set[str] | None) -> float | None:
    """A cheap checksum of the frozen parameters (sampled), or None for a full checkpoint."""
    if trainable is None:
        return None
    return weight_fingerprint(p for name, p in model.named_parameters() if name not in trainable)


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: Any,
    scheduler_state: dict[str, Any],
    trainer_state: dict[str, Any],
    trainable: set[str] | None = None,
) -> Path:
    """Write the checkpoint; with ``trainable`` (the parameters that may ever train) only those.

    Frozen weights are rebuilt from the backbone on resume, so a heads-only
    run checkpoints kilobytes, not the whole encoder; a fingerprint of the
    frozen weights guards against a backbone that changed in between.
    """
    check_finite(model, trainable)
    target = run_dir / CHECKPOINT_DIR
    with atomic_directory(target) as tmp:
        state = model.state_dict()
        keys = [k for k in state if trainable is None or k in trainable]
        weights = {k: state[k].detach().contiguous().cpu() for k in keys}
        meta = {"partial": trainable is not None, "frozen_fingerprint": _fingerprint(model, trainable)}
        save_file(weights, str(tmp / "model.safetensors"), metadata={k: json.dumps(v) for k, v in meta.items()})
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta), encoding="utf-8")
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        state = {**trainer_state, "scheduler": scheduler_state}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    return target


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MtstError(f"{path}: checkpoint file is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MtstError(f"{path}: checkpoint file is damaged ({exc})") from None


def load_checkpoint(run_dir: Path, model: nn.Module, optimizer: Any) -> dict[str, Any]:
    """Restore model, optimizer and RNG in place; return the trainer state.

    Every file is read and checked before anything is restored, so a damaged
    checkpoint fails with its name and leaves the model as it was.
    """
    path = run_dir / CHECKPOINT_DIR
    if not (path / "trainer_state.json").exists():
        raise MtstError(f"{run_dir}: no checkpoint to resume from (expected {path})")
    weights, raw_meta = read_safetensors(path / "model.safetensors", "checkpoint")
    opt_tensors, _ = read_safetensors(path / "optimizer.safetensors", "checkpoint")
    rng, _ = read_safetensors(path / "rng.safetensors", "checkpoint")
    opt_meta = _read_json(path / "optimizer.json")
    state = _read_json(path / "trainer_state.json")
    try:
        meta = {k: json.loads(v) for k, v in raw_meta.items()}
    except json.JSONDecodeError:
        raise MtstError(f"{path / 'model.safetensors'}: checkpoint metadata is damaged") from None
    if meta.get("partial"):
        if meta.get("frozen_fingerprint") != _fingerprint(model, set(weights)):
            raise MtstError(f"{path}: the backbone's frozen weights differ from those this run started from")
        _, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected:
            raise MtstError(f"{path}: checkpoint has weights this model lacks: {unexpected[:3]}")
    else:
        model.load_state_dict(weights)
    optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, opt_meta))
    torch.set_rng_state(rng["torch"])
    return state
