"""Where a run is (:class:`LoopState`, saved in every checkpoint) and what callbacks see of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtst.training.planning.plan import TrainingPlan


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint, so resuming restores it exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    stage: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


@dataclass
class StepEvent:
    """What a callback sees after each optimizer step (and after each evaluation)."""

    state: LoopState
    model: Any  # the MultiTaskModel being trained
    plan: TrainingPlan
    loss: float | None = None
    evaluation: dict[str, Any] | None = None  # the history entry, on evaluation events
    cache_mode: str | None = None  # "pooled", "prefix" or None: where the steps start from
    cache_boundary: int | None = None  # the first trainable layer, for a prefix cache


class Callback:
    """Hooks in the style of transformers' ``TrainerCallback``; override the ones you need.

    A plain function given as a callback is called as ``on_step_end``.
    """

    def on_train_begin(self, event: StepEvent) -> None: ...

    def on_step_end(self, event: StepEvent) -> None: ...

    def on_evaluate(self, event: StepEvent) -> None: ...

    def on_train_end(self, event: StepEvent) -> None: ...


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[StepEvent], None]) -> None:
        self.fn = fn

    def on_step_end(self, event: StepEvent) -> None:
        self.fn(event)


def as_callbacks(items: Sequence[Callback | Callable[[StepEvent], None]]) -> list[Callback]:
    return [c if isinstance(c, Callback) else _FunctionCallback(c) for c in items]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run; the message says where it stopped and how to continue."""


def interrupted(run_dir: Path, state: LoopState, total_steps: int, during: str | None, checkpoint: int | None) -> str:
    """Where an interrupted run stopped (``during`` a stage before the steps, else at its step) and how to go
    on from there: from its newest checkpoint, or from the start where it wrote none."""
    where = f"during {during}" if during else f"at step {state.global_step} of {total_steps}"
    if checkpoint is None:
        return f"interrupted {where}, before any checkpoint: start again with `mtst train ... --overwrite`"
    return (
        f"interrupted {where}; the checkpoint at step {checkpoint} is kept: "
        f"continue with `mtst train --resume {run_dir}`"
    )
