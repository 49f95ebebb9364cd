"""The run directory: what a training run writes, and reading a run back to resume it.

One place for its layout, so that a fresh run clears exactly what an earlier
run left (a stale ``model/`` or checkpoint must never pass for this run's).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mtst.config import RunConfig, dump_config, validate_config
from mtst.errors import MtstError
from mtst.fileio import atomic_write_text
from mtst.training.checkpoint import CHECKPOINT_DIR

logger = logging.getLogger("mtst")

RUN_OUTPUTS = (CHECKPOINT_DIR, "model", "metrics.jsonl", "metrics.json", "train.log")


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start where starting would destroy something (checked before anything is written).

    A run is resumed only from a checkpoint; a new run needs an empty or new
    ``output_dir`` unless ``overwrite`` says the run there may be replaced.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise MtstError(f"output_dir: {run_dir} is a file, not a directory")
    if resume:
        if not (run_dir / CHECKPOINT_DIR / "trainer_state.json").exists():
            raise MtstError(f"{run_dir}: no checkpoint to resume from (expected {run_dir / CHECKPOINT_DIR})")
        return
    if overwrite or not run_dir.exists():
        return
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir())
    if held:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise MtstError(
            f"output_dir: {run_dir} already holds {shown}; pass --overwrite to replace that run, "
            f"--resume {run_dir} to continue it, or choose another output_dir"
        )


@contextmanager
def buffered_log() -> Iterator[logging.handlers.MemoryHandler]:
    """Hold the log records of a run's start until its ``train.log`` exists (see :func:`prepare_run_dir`)."""
    handler = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        handler.close()


def prepare_run_dir(
    run_dir: Path, config: RunConfig, resume: bool, early_log: logging.handlers.MemoryHandler | None = None
) -> None:
    """Create the directory (clearing an earlier run's outputs unless resuming), log to it, save the config.

    Called only once every input has been checked (:func:`check_run_dir` first).
    ``early_log`` holds what was logged before the directory existed.
    """
    if not resume and run_dir.exists():
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(run_dir)
    if early_log is not None:
        early_log.setTarget(handler)
        early_log.flush()
        early_log.setTarget(None)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Send the ``mtst`` logger to ``train.log`` of this run (and no earlier run's file)."""
    for handler in list(logger.handlers):
        if getattr(handler, "_mtst_run", False):
            logger.removeHandler(handler)
            handler.close()
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler._mtst_run = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def write_history(run_dir: Path, history: list[dict]) -> None:
    """``metrics.jsonl``: one line per evaluation, replaced whole so a reader never sees half a file."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in history))


def write_summary(run_dir: Path, summary: dict) -> None:
    """``metrics.json``: the finished run's figures (what ``mtst compare`` and reports read)."""
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")


def resume_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved in a run directory."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise MtstError(f"{run_dir}: not a run directory (no config.yaml)")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["output_dir"] = str(run_dir)
    return validate_config(raw, str(path))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
