"""Linear heads fitted to convergence: multinomial logistic regression by L-BFGS, strength chosen by CV.

A head on fixed features has a convex loss: it needs an optimiser run to its
minimum, not a step budget, and a regularisation strength suited to the row
count (with fewer rows than dimensions an unregularised fit interpolates).
The strength is chosen by stratified k-fold cross-validation on the training
rows; the penalty is scaled like scikit-learn's ``C`` (loss summed over rows),
so a larger dataset is regularised less per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtst.standins.lbfgs import minimise

C_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
PREFERRED_C = 1.0
CV_MARGIN = 0.02  # held-out accuracy a strength must gain over the preferred one to be chosen
CV_MAX_ROWS = 2000  # choosing a strength needs a sample, not every row: bounds the cost on large data


@dataclass(frozen=True)
class LogisticFit:
    weight: torch.Tensor  # (classes, dim)
    bias: torch.Tensor  # (classes,)
    c: float  # the inverse regularisation strength used
    cv_accuracy: float | None  # mean held-out accuracy of that strength (None: not cross-validated)


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    num_labels: int,
    c: float,
    max_iter: int = 500,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise sum of cross-entropies + ||W||^2 / (2C) (bias unpenalised) with L-BFGS, in double precision.

    ``start``: the solution for a stronger penalty, a warm start along an ascending grid.
    """
    if start is None:
        w = torch.zeros(x.shape[1], num_labels, dtype=x.dtype, requires_grad=True)
        b = torch.zeros(num_labels, dtype=x.dtype, requires_grad=True)
    else:
        w, b = (t.clone().requires_grad_(True) for t in start)
    _minimise(
        [w, b], lambda: nn.functional.cross_entropy(x @ w + b, y, reduction="sum") + (w * w).sum() / (2 * c), max_iter
    )
    return w.detach(), b.detach()


def _minimise(params: list[torch.Tensor], objective: Callable[[], torch.Tensor], max_iter: int = 500) -> None:
    """Run L-BFGS (strong Wolfe line search) on a smooth convex ``objective`` of ``params``, in place."""
    minimise(params, objective, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10)


def _folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Stratified folds: each class's rows dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        for i, row in enumerate(rows):
            folds[(offset + i) % k].append(int(row))
        offset += len(rows)
    return [np.asarray(sorted(f)) for f in folds if f]


def stratified_sample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Every row when there are at most ``limit``; else a seeded sample keeping each class's share (>= 1 row)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [
        rng.permutation(rows)[: max(1, round(limit * len(rows) / len(labels)))]
        for rows in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(keep))


def fit_logistic(
    features: torch.Tensor,
    labels: np.ndarray,
    num_labels: int,
    grid: Sequence[float] = C_GRID,
    folds: int = 3,
    seed: int = 0,
) -> LogisticFit:
    """A strength on ``grid`` by stratified ``folds``-fold CV, then a fit on every row with it.

    The strength closest to ``PREFERRED_C`` among those within ``CV_MARGIN`` of the best held-out accuracy.

    With fewer than 2 rows in some class, CV cannot hold rows out: C=1 is used (a one-value grid: that value).
    """
    x = features.detach().double().cpu()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    counts = np.bincount(y.numpy(), minlength=num_labels)
    present = counts[counts > 0]
    k = int(min(folds, present.min())) if len(present) else 0
    best_c, best_acc = (float(grid[0]) if len(grid) == 1 else 1.0), None
    if k >= 2 and len(grid) > 1:
        grid = sorted(grid)
        cv_rows = stratified_sample(y.numpy(), CV_MAX_ROWS, seed)
        splits = [cv_rows[f] for f in _folds(y.numpy()[cv_rows], k, seed)]
        correct = np.zeros(len(grid))
        for held in splits:
            train = np.setdiff1d(cv_rows, held)
            start = None
            for i, c in enumerate(grid):  # ascending C: each fit starts from the previous one
                start = _fit(x[train], y[train], num_labels, c, max_iter=100, start=start)
                correct[i] += int(((x[held] @ start[0] + start[1]).argmax(1) == y[held]).sum())
        scores = correct / len(cv_rows)
        # C=1 on normalised features is the strength that holds across datasets; cross-validation moves
        # away from it only for a clear gain (held-out accuracy more than CV_MARGIN better), since on a
        # few dozen rows its differences are mostly noise (benchmarks/head_fit.py).
        close = [i for i in range(len(grid)) if scores[i] >= scores.max() - CV_MARGIN]
        i = min(close, key=lambda j: (abs(np.log(grid[j] / PREFERRED_C)), grid[j]))
        best_c, best_acc = float(grid[i]), float(scores[i])
    w, b = _fit(x, y, num_labels, best_c)
    return LogisticFit(w.T.contiguous(), b, best_c, best_acc)


def fit_linear_head(
    linear: nn.Linear, features: torch.Tensor, labels: np.ndarray, seed: int = 0, grid: Sequence[float] = C_GRID
) -> LogisticFit:
    """Fit ``linear`` (a head's output layer) on fixed features, to convergence; returns the fit
    (``grid``: the strengths to choose from; one value: that strength, no cross-validation)."""
    fit = fit_logistic(features, labels, linear.out_features, grid=grid, seed=seed)
    with torch.no_grad():
        linear.weight.copy_(fit.weight.to(linear.weight.dtype))
        linear.bias.copy_(fit.bias.to(linear.bias.dtype))
    return fit


# ------------------------------------------------------------------ multi-label and regression heads
@dataclass(frozen=True)
class LinearFit:
    weight: torch.Tensor  # (outputs, dim)
    bias: torch.Tensor  # (outputs,)
    strength: float  # C of a one-vs-rest fit; the ridge penalty of a regression fit


def fit_one_vs_rest(features: torch.Tensor, targets: np.ndarray, c: float = PREFERRED_C) -> LinearFit:
    """One logistic regression per label column of a 0/1 ``targets`` matrix, all in one L-BFGS run
    (the labels' losses are separate terms of one sum): sum of binary cross-entropies + ||W||^2 / (2C)."""
    x = features.detach().double().cpu()
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    w = torch.zeros(x.shape[1], y.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(y.shape[1], dtype=x.dtype, requires_grad=True)
    bce = nn.functional.binary_cross_entropy_with_logits
    _minimise([w, b], lambda: bce(x @ w + b, y, reduction="sum") + (w * w).sum() / (2 * c))
    return LinearFit(w.detach().T.contiguous(), b.detach(), c)


RIDGE_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)


def _ridge(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ridge regression with an unpenalised intercept."""
    mean_x, mean_y = x.mean(0), y.mean()
    xc = x - mean_x
    w = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=x.dtype), xc.T @ (y - mean_y))
    return w, mean_y - mean_x @ w


def fit_ridge(
    features: torch.Tensor, targets: np.ndarray, grid: Sequence[float] = RIDGE_GRID, folds: int = 3, seed: int = 0
) -> LinearFit:
    """A regression head on fixed features: ridge regression, its penalty chosen on ``grid`` by k-fold
    held-out squared error (no cross-validation with fewer than 2 rows per fold)."""
    x = features.detach().double().cpu()
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    best = float(grid[len(grid) // 2]) if len(grid) > 1 else float(grid[0])
    if len(grid) > 1 and len(y) >= 2 * folds:
        order = np.random.default_rng(seed).permutation(len(y))
        errors = np.zeros(len(grid))
        for held in np.array_split(order, folds):
            train = np.setdiff1d(order, held)
            for i, alpha in enumerate(grid):
                w, b = _ridge(x[train], y[train], alpha)
                errors[i] += float(((x[held] @ w + b - y[held]) ** 2).sum())
        best = float(grid[int(np.argmin(errors))])
    w, b = _ridge(x, y, best)
    return LinearFit(w[None, :].contiguous(), b.reshape(1), best)
