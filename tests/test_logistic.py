"""Linear heads fitted to convergence: cross-validated multinomial logistic regression."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mtst.modeling.logistic import C_GRID, _folds, fit_linear_head, fit_logistic


def accuracy(fit, x: torch.Tensor, y: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    return float(((x.double() @ fit.weight.T + fit.bias).argmax(1).numpy() == y).mean())


def test_separable_features_are_fitted_exactly() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    centres = rng.normal(size=(3, 16)) * 4
    x = torch.tensor(centres[y] + rng.normal(size=(60, 16)) * 0.3)
    fit = fit_logistic(x, y, 3)
    assert accuracy(fit, x, y) == 1.0
    assert fit.cv_accuracy == 1.0


def test_fewer_rows_than_dimensions_does_not_interpolate_noise() -> None:
    """Random labels on 24 rows of 384 dims: CV picks strong regularisation; held out stays at chance."""
    rng = np.random.default_rng(1)
    x = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(24, 384))), dim=1)  # as heads see them
    y = rng.integers(0, 3, 24)
    fit = fit_logistic(x, y, 3)
    assert fit.c in C_GRID and fit.c <= 1.0  # no strength beats the preferred one on noise
    assert float(fit.weight.norm()) < 5.0  # bounded, where an unregularised fit grows without limit
    unregularised = fit_logistic(x, y, 3, grid=(1e6,))
    assert accuracy(unregularised, x, y) == 1.0 and float(unregularised.weight.norm()) > 3 * float(fit.weight.norm())
    xt = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(3000, 384))), dim=1)
    yt = rng.integers(0, 3, 3000)
    assert abs(accuracy(fit, xt, yt) - 1 / 3) < 0.05


def test_folds_are_stratified_seeded_and_cover_every_row() -> None:
    y = np.array([0] * 10 + [1] * 5 + [2] * 3)
    folds = _folds(y, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(y)))
    for fold in folds:
        assert set(np.bincount(y[fold], minlength=3).tolist()) <= {1, 2, 3, 4}  # every class in every fold
    assert [f.tolist() for f in folds] == [f.tolist() for f in _folds(y, 3, seed=0)]
    assert [f.tolist() for f in folds] != [f.tolist() for f in _folds(y, 3, seed=1)]


def test_a_class_with_one_row_falls_back_to_c_1_and_the_head_is_written() -> None:
    rng = np.random.default_rng(2)
    x, y = torch.tensor(rng.normal(size=(9, 8))), np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    head = nn.Linear(8, 3)
    fit = fit_linear_head(head, x.float(), y)
    assert fit.c == 1.0 and fit.cv_accuracy is None
    assert torch.allclose(head.weight, fit.weight.float()) and torch.allclose(head.bias, fit.bias.float())


def test_large_data_chooses_the_strength_on_a_stratified_sample() -> None:
    from mtst.modeling.logistic import stratified_sample

    labels = np.array([0] * 9000 + [1] * 900 + [2] * 100)
    rows = stratified_sample(labels, 2000, seed=0)
    assert len(rows) == 2000 and len(set(rows.tolist())) == 2000
    assert np.bincount(labels[rows]).tolist() == [1800, 180, 20]
    assert stratified_sample(labels[:50], 2000, seed=0).tolist() == list(range(50))
