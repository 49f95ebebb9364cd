"""The run directory: what a training run writes, and reading a run back to resume it.

One place for its layout, so that a fresh run clears exactly what an earlier
run left (a stale ``model/`` or checkpoint must never pass for this run's).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from mtst.checkpoint import CHECKPOINT_DIR
from mtst.config import RunConfig, dump_config, validate_config
from mtst.errors import MtstError

logger = logging.getLogger("mtst")

RUN_OUTPUTS = (CHECKPOINT_DIR, "model", "metrics.jsonl", "metrics.json", "train.log")


def prepare_run_dir(run_dir: Path, config: RunConfig, resume: bool) -> None:
    """Create the directory (clearing an earlier run's outputs unless resuming), log to it, save the config."""
    if not resume and run_dir.exists():
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    attach_log_file(run_dir)
    (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")


def attach_log_file(run_dir: Path) -> None:
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


def write_history(run_dir: Path, history: list[dict]) -> None:
    """``metrics.jsonl``: one line per evaluation, replaced whole so a reader never sees half a file."""
    tmp = run_dir / ".metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in history), encoding="utf-8")
    tmp.replace(run_dir / "metrics.jsonl")


def write_summary(run_dir: Path, summary: dict) -> None:
    """``metrics.json``: the finished run's figures (what ``mtst compare`` and reports read)."""
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


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
