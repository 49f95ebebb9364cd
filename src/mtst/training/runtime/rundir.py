"""The run directory: what a training run writes, and reading a run back to resume it.

One place for its layout, so that a fresh run clears exactly what an earlier
run left (a stale ``model/`` or checkpoint must never pass for this run's).
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtst.config import RunConfig, dump_config, validate_config
from mtst.errors import MtstError
from mtst.fileio import atomic_write_text
from mtst.training.runtime.checkpoint import CHECKPOINT_DIR, check_finite, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from torch import nn

    from mtst.modeling.model import MultiTaskModel

logger = logging.getLogger("mtst")

RUN_OUTPUTS = (CHECKPOINT_DIR, "model", "metrics.jsonl", "metrics.json", "train.log")
LOCK_FILE = ".mtst.lock"  # held by the run that owns the directory; never part of a run's outputs


class RunLock:
    """A run owns its directory: a second run into it (two terminals, a sweep and a person) is refused.

    The lock file holds the owner's pid, host and start time for the message; ownership itself is an
    advisory ``flock`` on that file, which the system drops when the owner exits however it ends, so a
    lock left by a crash is recognised as stale and taken over. Where ``flock`` is missing (Windows),
    a lock whose pid no longer runs on this host is stale.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.created_dir = False
        self._fh: Any = None

    def acquire(self) -> RunLock:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise MtstError(f"output_dir: {self.run_dir} is a file, not a directory")
        try:
            if not self.run_dir.exists():
                self.run_dir.mkdir(parents=True)
                self.created_dir = True
            fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the run's lifetime)
        except OSError as exc:
            self._forget_dir()
            raise MtstError(f"output_dir: cannot write to {self.run_dir} ({exc.strerror or exc})") from None
        holder = self._read(fh)
        if not self._lock(fh, holder):
            fh.close()
            self._forget_dir()
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
            raise MtstError(
                f"output_dir: {self.run_dir} is in use by another mtst run ({who}); wait for it to finish, "
                f"or choose another output_dir (a lock left by a run that no longer runs is taken over by itself)"
            )
        if holder.get("pid") and holder.get("pid") != os.getpid():
            logger.info("took over a stale lock of %s (pid %s no longer holds it)", self.run_dir, holder["pid"])
        fh.seek(0)
        fh.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self, failed_start: bool = False) -> None:
        """Give the directory up; after a failed start, leave no trace of the lock (or of a new directory)."""
        if self._fh is None:
            return
        self.path.unlink(missing_ok=True)
        self._fh.close()  # closing drops the flock
        self._fh = None
        if failed_start:
            self._forget_dir()

    def _forget_dir(self) -> None:
        if self.created_dir and self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()
            self.created_dir = False

    @staticmethod
    def _read(fh: Any) -> dict[str, Any]:
        fh.seek(0)
        try:
            holder = json.loads(fh.read() or "{}")
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    @staticmethod
    def _lock(fh: Any, holder: dict[str, Any]) -> bool:
        try:
            import fcntl
        except ImportError:  # no flock: a holder is alive if its pid runs here
            pid = holder.get("pid")
            return not (isinstance(pid, int) and holder.get("host") == socket.gethostname() and _alive(pid))
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


def in_use(run_dir: Path) -> bool:
    """Whether a live run holds ``run_dir``'s lock (checked without writing anything)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as fh:
        free = RunLock._lock(fh, RunLock._read(fh))  # released again as the file closes
    return not free


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


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
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir() if p.name != LOCK_FILE)
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
    dumped = dump_config(config)
    atomic_write_text(run_dir / "config.yaml", dumped)
    logger.info("resolved config:\n%s", dumped.rstrip())


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


class RunDirectory:
    """What a run writes (only process 0 writes; every process may read): the log and config, the
    evaluation history, checkpoints, the chosen model and the summary. It holds no training state."""

    def __init__(
        self,
        path: Path,
        config: RunConfig,
        is_main: bool,
        trained_params: set[str],
        saved_tasks: list[str],
        saved_backbone_groups: tuple[str, ...] | None,
    ) -> None:
        self.path, self.config, self.is_main = Path(path), config, is_main
        self.trained_params, self.saved_tasks = trained_params, saved_tasks
        self.saved_backbone_groups = saved_backbone_groups

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def prepare(self, resume: bool, early_log: logging.handlers.MemoryHandler | None) -> None:
        if self.is_main:
            prepare_run_dir(self.path, self.config, resume, early_log)

    def write_history(self, history: list[dict]) -> None:
        if self.is_main:
            write_history(self.path, history)

    def write_summary(self, summary: dict) -> None:
        if self.is_main:
            write_summary(self.path, summary)

    def save_checkpoint(self, model: nn.Module, optimizer: Any, scheduler: dict, state: dict[str, Any]) -> None:
        """What can train (``trained_params``) and where the loop is; written beside the last one, then swapped in."""
        if self.is_main:
            save_checkpoint(self.path, model, optimizer, scheduler, state, self.trained_params)

    def load_checkpoint(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        return load_checkpoint(self.path, model, optimizer)

    def save_model(self, model: MultiTaskModel) -> None:
        """Write the run's model: the kept heads, and the backbone the strategy says to keep."""
        if not self.is_main:
            return
        check_finite(model, self.trained_params)  # frozen weights cannot have turned non-finite
        groups = self.saved_backbone_groups
        if model.lora is not None and groups is None:  # lora.save: merged
            model = copy.deepcopy(model)
            model.merge_lora()
        model.save(self.model_dir, tasks=self.saved_tasks, backbone_groups=groups)


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
