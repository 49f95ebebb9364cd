"""What a finished run returns and records: :class:`TrainResult` and the ``metrics.json`` summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    run_dir: Path
    test: dict[str, dict]
    validation: dict[str, float]
    history: list[dict]
    trainable_parameters: int
    total_parameters: int
    train_seconds: float
    steps: int
    strategy: str = ""  # the strategy that ran (``auto`` resolved)
    stages: tuple[str, ...] = ()  # what ran, in words: "contrastive stage 200 steps", "logistic heads", ...


def stages_run(
    contrastive_steps: int, warm_start: bool, closed_form: bool, steps: int, stopped_early: bool, resumed_at: int | None
) -> tuple[str, ...]:
    """What a run did, in the words the console ends with."""
    stages = []
    if contrastive_steps:
        stages.append(f"contrastive stage {contrastive_steps} steps")
    if warm_start:
        stages.append("heads warm-started by logistic regression")
    if closed_form:
        stages.append("logistic heads")
    elif resumed_at is not None:
        stages.append(f"steps {resumed_at}-{steps} (resumed)")
    else:
        stages.append(f"{steps} steps" + (" (stopped early)" if stopped_early else ""))
    return tuple(stages)


def summary(result: TrainResult, precision: str, best_step: int | None, stopped_early: bool, **extra: Any) -> dict:
    """``metrics.json``: the finished run's figures (what ``mtst compare`` and reports read)."""
    return {
        "strategy": result.strategy,
        "precision": precision,
        "steps": result.steps,
        "best_step": best_step,
        "stopped_early": stopped_early,
        "train_seconds": round(result.train_seconds, 2),
        "trainable_parameters": result.trainable_parameters,
        "total_parameters": result.total_parameters,
        **extra,
    }
