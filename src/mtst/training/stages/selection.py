"""Model selection: which evaluation is the best so far, and when to stop for lack of gain.

Pure functions of the loop's state (saved in every checkpoint, so a resumed
run selects as an uninterrupted one would); saving the chosen model is the
run directory's job.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtst.training.state import LoopState

logger = logging.getLogger("mtst")

TIE = 1e-12  # a later evaluation must beat the best by more than rounding to replace it


def judge(state: LoopState, score: float, patience: int | None, metric: str) -> bool:
    """Record ``score`` (the selection metric of the evaluation at ``state.global_step``): True when it is
    the best so far; else count an evaluation without gain and stop after ``patience`` of them."""
    if state.best is None or score > state.best + TIE:
        state.best, state.best_step, state.bad_evals = score, state.global_step, 0
        return True
    state.bad_evals += 1
    if patience and state.bad_evals >= patience:
        state.stopped_early = True
        logger.info("early stopping at step %d: no gain in %s", state.global_step, metric)
    return False
