"""A saved model directory: its layout, where one is (a model, a run holding one, an export), and its
backbone read back (adapters attached, weights checked). Below both the encoder and the model, so a
:class:`~mtst.modeling.encoder.SentenceEncoder` reads a trained model's encoder without importing the
whole model, and :meth:`MultiTaskModel.load <mtst.modeling.model.MultiTaskModel.load>` adds the heads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtst.constants import ONNX_META
from mtst.errors import ModelLoadError
from mtst.fileio import read_safetensors
from mtst.modeling.backbone import check_no_pickle_only, strip_unused_pooler
from mtst.modeling.fingerprint import weight_fingerprint
from mtst.modeling.lora import is_lora_param

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKBONE_CONFIG_DIR = "backbone"
FORMAT_VERSION = 1
BACKBONE_PREFIX = "encoder.backbone."  # the backbone's weights in a saved model's file


@dataclass(frozen=True)
class SavedModel:
    """A model directory as read from disk: where it is, its config and every weight of its file."""

    path: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]


def read_saved(directory: str | Path) -> SavedModel:
    """The config and weights of a model (or run) directory; safetensors only, the format version checked."""
    path = resolve_model_dir(directory)
    config = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))  # resolve_model_dir parsed it
    version = config.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelLoadError(
            f"{path} was saved in mtst model format version {version}; this mtst reads versions up to "
            f"{FORMAT_VERSION}: upgrade mtst to load it"
        )
    weights = path / WEIGHTS_NAME
    if not weights.exists():
        check_no_pickle_only(path)
        raise ModelLoadError(f"{path} has no {WEIGHTS_NAME}")
    state, _ = read_safetensors(weights, "model weights")
    return SavedModel(path, config, state)


def build_backbone(saved: SavedModel) -> tuple[nn.Module, Any]:
    """The saved model's backbone (weights not yet loaded: :func:`load_backbone_weights`) and tokenizer."""
    from mtst.standins.bert import NativeBert, settings_of
    from mtst.standins.tokenizer import load_tokenizer

    path, config = saved.path, saved.config
    try:
        tokenizer = load_tokenizer(path)
        if config.get("lora"):
            backbone = lora_base(config["backbone"], path)
        elif (native := settings_of(path / BACKBONE_CONFIG_DIR)) is not None:
            backbone = NativeBert.to_load(native)  # its weights are in the model's own file
        else:
            from transformers import AutoConfig, AutoModel

            backbone_config = AutoConfig.from_pretrained(path / BACKBONE_CONFIG_DIR, local_files_only=True)
            backbone = backbone_from_config(AutoModel, backbone_config)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load model from {path}: {exc}") from exc
    strip_unused_pooler(backbone)
    return backbone, tokenizer


def base_fingerprint(backbone: nn.Module) -> float:
    """A cheap checksum of the frozen base weights (adapters are only valid on the same backbone)."""
    return weight_fingerprint([backbone.get_input_embeddings().weight], None, absolute=True)


def attach_saved_lora(backbone: nn.Module, saved: SavedModel) -> dict[str, Any] | None:
    """Inject a saved model's adapters onto its base, after checking it is the same base; the LoRA
    settings, or None for a model without adapters."""
    lora = saved.config.get("lora")
    if not lora:
        return None
    from mtst.config import LoraSettings
    from mtst.modeling.groups import count_layers
    from mtst.modeling.lora import add_lora

    settings = LoraSettings(**{k: v for k, v in lora.items() if k in LoraSettings.model_fields})
    add_lora(backbone, settings, count_layers(n for n, _ in backbone.named_parameters()))
    if abs(base_fingerprint(backbone) - lora.get("backbone_fingerprint", base_fingerprint(backbone))) > 1e-2:
        raise ModelLoadError(
            f"{saved.path}: its LoRA adapters were trained on other weights than the backbone now at "
            f"{saved.config['backbone']!r}; load it where that backbone is unchanged"
        )
    return settings.model_dump()


def load_backbone_weights(backbone: nn.Module, saved: SavedModel) -> tuple[list[str], list[str]]:
    """Load the saved backbone weights; the missing and unexpected keys (with the file's prefix), the
    file's keys outside the backbone and the heads counted as unexpected."""
    own = {k.removeprefix(BACKBONE_PREFIX): v for k, v in saved.state.items() if k.startswith(BACKBONE_PREFIX)}
    missing, unexpected = backbone.load_state_dict(own, strict=False)
    stray = [k for k in saved.state if not k.startswith((BACKBONE_PREFIX, "heads."))]
    return [BACKBONE_PREFIX + k for k in missing], [BACKBONE_PREFIX + k for k in unexpected] + stray


def check_weights(saved: SavedModel, missing: list[str], unexpected: list[str]) -> None:
    """Every weight the model needs was in the file and nothing else was (a LoRA model's base comes from
    its backbone: only its saved parts must all match)."""
    if saved.config.get("lora"):
        missing = [k for k in missing if k.startswith("heads.") or is_lora_param(k)]
    if missing or unexpected:
        raise ModelLoadError(
            f"{saved.path / WEIGHTS_NAME} does not match its config.json (missing: {missing[:3]}, "
            f"unexpected: {unexpected[:3]})"
        )


def lora_base(reference: str, path: Path) -> nn.Module:
    """The pretrained backbone a LoRA model was trained on (its saved directory holds adapters only)."""
    from mtst.modeling.backbone import load_backbone, resolve_backbone

    try:
        source = resolve_backbone(reference)
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"{path} holds LoRA adapters for the backbone {reference!r}, which cannot be found ({exc}); "
            "make it available, or save the run with training.lora.save=merged"
        ) from exc
    return load_backbone(source)[0]


def is_model_dir(path: str | Path) -> bool:
    """True for a directory written by :meth:`MultiTaskModel.save` (or a run holding one)."""
    try:
        return resolve_model_dir(path) is not None
    except ModelLoadError:
        return False


def is_export(path: str | Path) -> bool:
    """True for a directory written by ``mtst export --format onnx|openvino`` (commands run it directly)."""
    return (Path(path).expanduser() / ONNX_META).is_file()


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory or a training run directory (its ``model/``)."""
    base = Path(path).expanduser()
    if not base.exists():
        raise ModelLoadError(f"{base}: no such directory")
    if not base.is_dir():
        raise ModelLoadError(f"{base}: a file, not a model or run directory")
    if is_export(base):
        raise ModelLoadError(
            f"{base} is an mtst export (ONNX or OpenVINO), which `mtst predict`, `encode --model` and `serve` "
            "read; this command needs the model or run directory it was exported from"
        )
    for candidate in (base, base / "model"):
        cfg = candidate / CONFIG_NAME
        if cfg.is_file():
            try:
                data = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("format") == "mtst":
                return candidate
    if is_run_dir(base):
        raise ModelLoadError(
            f"{base} is a training run that saved no model yet (it stopped before its first evaluation): "
            f"continue it with `mtst train --resume {base}`"
        )
    raise ModelLoadError(f"{base} is not an mtst model directory (no config.json with format 'mtst')")


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a training run's directory (its resolved config beside a log or a checkpoint)."""
    return (path / "config.yaml").is_file() and ((path / "train.log").is_file() or (path / "checkpoint").is_dir())


def backbone_from_config(auto_model: Any, config: Any) -> nn.Module:
    """A backbone built from its saved config with the attention kernel ``from_pretrained`` picks (SDPA
    where the architecture has it), so a loaded model computes exactly what the trained one did.

    transformers 4.x saves ``_attn_implementation_autoset`` in the config and then builds from it with
    eager attention: the same weights, outputs off in the last bits.
    """
    try:
        return auto_model.from_config(config, attn_implementation="sdpa")
    except (ValueError, ImportError):  # an architecture without SDPA: its default kernel
        return auto_model.from_config(config)
