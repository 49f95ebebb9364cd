"""What a finished run returns and records: :class:`TrainResult` and the ``metrics.json`` summary."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    retention: dict[str, Any] = field(default_factory=dict)  # what the model kept of its start (training.keep)
    stage_check: dict[str, Any] | None = None  # the contrastive stage against the encoder before it (validation)


def stages_run(
    phases: tuple[str, ...],
    contrastive_steps: int,
    steps: int,
    stopped_early: bool,
    resumed_at: int | None,
    method: str = "logistic regression",
) -> tuple[str, ...]:
    """What a run did (its ``plan.phases``), in the words the console ends with (``method``: how its heads
    were fitted, :func:`mtst.modeling.tasktypes.fit_method`)."""
    words = {
        "contrastive": f"contrastive stage {contrastive_steps} steps",
        "warm_start": f"heads warm-started by {method}",
        "closed_form": "logistic heads" if method == "logistic regression" else f"heads fitted by {method}",
        "steps": f"steps {resumed_at}-{steps} (resumed)"
        if resumed_at is not None
        else f"{steps} steps" + (" (stopped early)" if stopped_early else ""),
    }
    return tuple(words[p] for p in phases if p in words and (p != "contrastive" or contrastive_steps))


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
