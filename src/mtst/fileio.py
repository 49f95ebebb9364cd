"""Writing files so that a reader never sees half of one, and reading weights with clear errors."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mtst.errors import ModelLoadError


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once written, it replaces ``path`` (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    usual_permissions(tmp)
    tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it (flushed to disk), then rename."""
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces ``target`` only once fully written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for written in tmp.rglob("*"):
        if written.is_file():
            usual_permissions(written)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


_UMASK = _umask()


def usual_permissions(path: Path) -> None:
    """The mode a plain ``open(..., "w")`` gives (0644 under the usual umask): some writers (safetensors)
    create files 0600, and a model directory readable by its owner alone surprises the service that serves it."""
    os.chmod(path, 0o666 & ~_UMASK)


def read_safetensors(
    path: Path, what: str = "weights", prefix: str = ""
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (those whose name starts with ``prefix``) and metadata of a safetensors file.

    A damaged or missing file names itself; ``what`` says what it is to the user ("model weights", "checkpoint").
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: {what} file is missing")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys() if key.startswith(prefix)}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: {what} file is damaged or not safetensors ({reason})") from None
    return tensors, metadata


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None where the file is missing, unreadable or holds anything else (callers
    that can go on without it: a progress record not written yet, a model file another loader reads)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def dir_mb(path: Path) -> float:
    """What the files under ``path`` take on disk, in MB (0 where it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0
