"""Per-label decision thresholds of multi-label heads, tuned once the best model is known.

A sigmoid head's 0.5 cut is rarely the best one: on a few rows per label a head's probabilities sit
far below 0.5 for most true labels, and a frozen encoder with one-vs-rest logistic regression predicts
nothing at all. Each label gets the threshold that maximises its F1 on rows the head did not fit:

- the validation split, where the run has one;
- else, for a head fitted in closed form (``frozen``, the default recipe's logistic heads), out-of-fold
  probabilities of the same one-vs-rest fit on the training rows (3-fold cross-validation);
- else (a head trained by gradient steps, no validation split), the head's own probabilities on the
  training rows, which mostly keeps 0.5 where the head separates them (ties keep the value nearest 0.5).

A task with ``threshold`` in its config keeps that value.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mtst.modeling.logistic import PREFERRED_C, fit_one_vs_rest
from mtst.modeling.tasktypes import tune_thresholds

if TYPE_CHECKING:
    from mtst.data import Split
    from mtst.modeling.model import MultiTaskModel
    from mtst.training.inputs import RunInputs

logger = logging.getLogger("mtst")

CV_FOLDS = 3
CV_MAX_ROWS = 4000  # out-of-fold probabilities need a sample of the training rows, not all of them


def tuned_tasks(model: MultiTaskModel, inputs: RunInputs) -> list[str]:
    """Multi-label tasks this run trained whose config does not fix a threshold."""
    config = inputs.config
    return [
        t
        for t, spec in model.tasks.items()
        if spec.type == "multi_label" and t in config.tasks and config.tasks[t].threshold is None
    ]


def tune(
    model: MultiTaskModel,
    inputs: RunInputs,
    closed_form: tuple[str, ...],
    train_embeddings: torch.Tensor | None,
    seed: int,
    batch_size: int,
) -> dict[str, list[float]]:
    """The tuned thresholds of ``model``'s multi-label tasks (see the module docstring for which rows).

    ``closed_form``: tasks whose head was fitted in closed form; ``train_embeddings``: the training rows'
    pooled embeddings under ``model``'s encoder where a cache holds them.
    """
    tasks = tuned_tasks(model, inputs)
    if not tasks:
        return {}
    out: dict[str, list[float]] = {}
    validation = inputs.data.splits.get("validation")
    held = [t for t in tasks if validation is not None and len(validation.rows_for(t))]
    out |= _on_own_outputs(model, inputs, "validation", held, batch_size, "validation ({} rows)")
    train = inputs.data.splits["train"]
    rest = [t for t in tasks if t not in out]
    fitted = [t for t in rest if t in closed_form and not model.tasks[t].hidden_size]
    for task in fitted:
        rows = _sample(train.rows_for(task), seed)
        features = _features(model, train, rows, train_embeddings, batch_size, model.tasks[task].normalize_input)
        scores = out_of_fold(features, train.targets[task][rows], seed)
        out[task] = tune_thresholds(scores, train.targets[task][rows])
        _log(task, out[task], f"{CV_FOLDS}-fold cross-validation on {len(rows)} training rows")
    own = [t for t in rest if t not in fitted]
    out |= _on_own_outputs(
        model, inputs, "train", own, batch_size, "the head's own training rows ({}; no validation split)"
    )
    return out


def _on_own_outputs(
    model: MultiTaskModel, inputs: RunInputs, split_name: str, tasks: list[str], batch_size: int, source: str
) -> dict[str, list[float]]:
    """Thresholds of ``tasks`` tuned on the model's own probabilities over a split's labelled rows (one pass)."""
    if not tasks:
        return {}
    split = inputs.data.splits[split_name]
    probs = model.predict_proba_ids(inputs.ids[split_name], tasks, batch_size)
    out = {}
    for task in tasks:
        rows = split.rows_for(task)
        out[task] = tune_thresholds(np.asarray(probs[task])[rows], split.targets[task][rows])
        _log(task, out[task], source.format(len(rows)))
    return out


def out_of_fold(features: torch.Tensor, targets: np.ndarray, seed: int, folds: int = CV_FOLDS) -> np.ndarray:
    """Probabilities of each row from a one-vs-rest fit on the other folds."""
    order = np.random.default_rng(seed).permutation(len(targets))
    scores = np.zeros(targets.shape, dtype=np.float64)
    for held in np.array_split(order, min(folds, len(targets))):
        train = np.setdiff1d(order, held)
        fit = fit_one_vs_rest(features[train], targets[train], PREFERRED_C)
        x = features[held].double()
        scores[held] = torch.sigmoid(x @ fit.weight.T + fit.bias).numpy()
    return scores


def _sample(rows: np.ndarray, seed: int) -> np.ndarray:
    if len(rows) <= CV_MAX_ROWS:
        return rows
    return np.sort(np.random.default_rng(seed).permutation(rows)[:CV_MAX_ROWS])


def _features(
    model: MultiTaskModel,
    train: Split,
    rows: np.ndarray,
    embeddings: torch.Tensor | None,
    batch_size: int,
    normalize: bool,
) -> torch.Tensor:
    if embeddings is not None:
        x = embeddings[torch.as_tensor(rows)].float()
    else:
        x = model.encoder.encode([train.texts[i] for i in rows], batch_size, normalize=False, convert_to="torch")
    return F.normalize(x.float(), dim=-1) if normalize else x.float()


def _log(task: str, values: list[float], source: str) -> None:
    logger.info("head %s: decision thresholds %s tuned on %s", task, [round(v, 2) for v in values], source)
