"""Linear sentence heads fitted by logistic regression on the encoder as it stands.

``frozen`` ends here (its heads are the whole result); every other strategy can
start here (``training.head_init: logistic``): the heads begin at the optimum
for the current encoder instead of at random, so the first steps do not spend
the encoder's gradient on a random head (linear probing, then fine-tuning).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from mtst.modeling.logistic import (
    C_GRID,
    PREFERRED_C,
    LinearFit,
    fit_linear_head,
    fit_one_vs_rest,
    fit_ridge,
    stratified_sample,
)
from mtst.training.planning.heads import linear_sentence_heads

if TYPE_CHECKING:
    from mtst.data import Split
    from mtst.modeling.model import MultiTaskModel

logger = logging.getLogger("mtst")

# Rows a warm start fits each head on: encoding them costs about as much as 40 training steps.
WARM_START_ROWS = 2000
# A warm start's strength beside other tasks: fixed, so the penalty keeps the head's weights (and the
# gradient it sends into the shared encoder) moderate. Cross-validation can pick a weak penalty and a
# large head whose gradients then swamp the other tasks' (a tagging task beside a warm-started
# sentiment head lost most of its F1 with the CV choice, none with C=1).
WARM_START_C = 1.0


def warm_start_c(num_tasks: int) -> float | None:
    """The warm start's strength: cross-validated (None) where the head is the model's only task, which
    has no neighbour to swamp (benchmarks/README.md "Full data"); ``WARM_START_C`` beside other tasks."""
    return None if num_tasks == 1 else WARM_START_C


def fit_heads(
    model: MultiTaskModel,
    train: Split,
    seed: int,
    embeddings: torch.Tensor | None = None,
    max_rows: int | None = None,
    batch_size: int = 64,
    only: tuple[str, ...] | None = None,
    c: float | None = None,
) -> None:
    """Fit every linear sentence head on the training rows (``c``: this strength; None: chosen by
    cross-validation; each fit's strength is logged).

    ``embeddings``: the training split's pooled embeddings when a cache holds them; else the rows
    are encoded now. ``max_rows``: fit each head on a stratified sample of at most this many rows
    (a warm start needs a good head, not the best one, and encoding every row would cost a
    fraction of an epoch). ``only``: these tasks' heads (default: every head).
    """
    wanted = set(model.tasks if only is None else only)
    tasks = [t for t in linear_sentence_heads(model) if t in wanted]
    skipped = sorted(wanted - set(tasks))
    if skipped:
        logger.info("logistic heads: %s keep their initial weights (not linear sentence heads)", skipped)
    if not tasks:
        return
    rows_of = {task: _fit_rows(train, task, max_rows, seed) for task in tasks}
    needed = np.unique(np.concatenate(list(rows_of.values())))
    if embeddings is None:  # encode() runs in eval mode and restores the modules' modes
        emb = model.encoder.encode([train.texts[i] for i in needed], batch_size, normalize=False, convert_to="torch")
    else:
        emb = embeddings[torch.as_tensor(needed)]
    grid = C_GRID if c is None else (c,)
    for task in tasks:
        rows = rows_of[task]
        features = emb[torch.as_tensor(np.searchsorted(needed, rows))].float()  # ``needed`` is sorted
        if model.tasks[task].normalize_input:
            features = torch.nn.functional.normalize(features, dim=-1)
        spec = model.tasks[task]
        if spec.type == "pair_classification":  # the second texts encoded now: a cache holds the first ones
            features = _pair_features(model, train, rows, features, batch_size)
        if spec.type == "multi_label":
            fitted = fit_one_vs_rest(features, train.targets[task][rows], PREFERRED_C if c is None else c)
            _set_linear(model.heads[task][-1], fitted)
            logger.info(
                "head %s fitted by one-vs-rest logistic regression on %d rows (C=%g)", task, len(rows), fitted.strength
            )
            continue
        if spec.type == "regression":
            scaled = (train.targets[task][rows] - (spec.target_mean or 0.0)) / (spec.target_std or 1.0)
            fitted = fit_ridge(features, scaled, seed=seed)
            _set_linear(model.heads[task][-1], fitted)
            logger.info("head %s fitted by ridge regression on %d rows (penalty %g)", task, len(rows), fitted.strength)
            continue
        fit = fit_linear_head(model.heads[task][-1], features, train.labels[task][rows], seed, grid)
        cv = "" if fit.cv_accuracy is None else f", cross-validated accuracy {100 * fit.cv_accuracy:.1f}"
        logger.info("head %s fitted by logistic regression on %d rows (C=%g%s)", task, len(rows), fit.c, cv)


def _fit_rows(train: Split, task: str, max_rows: int | None, seed: int) -> np.ndarray:
    """The training rows a head is fitted on: all of its rows, or a (stratified, for labels) seeded sample."""
    rows = train.rows_for(task)
    if max_rows is not None and task in train.targets:
        return np.sort(np.random.default_rng(seed).permutation(rows)[:max_rows])
    if max_rows is not None:
        return rows[stratified_sample(train.labels[task][rows], max_rows, seed)]
    return rows


def _pair_features(
    model: MultiTaskModel, train: Split, rows: np.ndarray, first: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """A pair head's input ``[u, v, |u - v|, u * v]``: the second texts encoded now beside the first ones'."""
    assert train.second is not None
    v = model.encoder.encode([train.second[i] for i in rows], batch_size, normalize=False, convert_to="torch").float()
    return torch.cat([first, v, (first - v).abs(), first * v], dim=-1)


def _set_linear(linear: torch.nn.Linear, fit: LinearFit) -> None:
    with torch.no_grad():
        linear.weight.copy_(fit.weight.to(linear.weight.dtype))
        linear.bias.copy_(fit.bias.to(linear.bias.dtype))


def fit_closed_form(
    model: MultiTaskModel,
    train: Split,
    seed: int,
    embeddings: torch.Tensor | None,
    batch_size: int,
    fitted: tuple[str, ...],
) -> None:
    """``frozen``'s whole training: no gradient step; the ``fitted`` heads are fitted to convergence on the
    frozen embeddings (multinomial logistic regression, L-BFGS, strength cross-validated on the training
    rows). Heads in ``training.freeze`` are not among ``fitted`` and keep their weights."""
    model.eval()
    if len(fitted) < len(model.tasks):
        logger.info("heads in training.freeze keep their weights: %s", sorted(set(model.tasks) - set(fitted)))
    fit_heads(model, train, seed, embeddings, None, batch_size, fitted)
