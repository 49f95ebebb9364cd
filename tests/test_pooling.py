from __future__ import annotations

import pytest
import torch

from mtst.modeling.pooling import normalize, pool


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],  # last position is padding
            [[-1.0, 0.0], [1.0, 2.0], [5.0, -6.0]],
        ]
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return tokens, mask


def test_cls_takes_first_token(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    tokens, mask = batch
    assert torch.equal(pool(tokens, mask, "cls"), torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))


def test_mean_ignores_padding(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    tokens, mask = batch
    assert torch.allclose(pool(tokens, mask, "mean"), torch.tensor([[2.0, 3.0], [5 / 3, -4 / 3]]))


def test_max_ignores_padding_even_when_it_is_largest(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    tokens, mask = batch
    assert torch.equal(pool(tokens, mask, "max"), torch.tensor([[3.0, 4.0], [5.0, 2.0]]))


def test_max_handles_all_negative_values() -> None:
    tokens = torch.tensor([[[-5.0], [-3.0], [0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(tokens, mask, "max").item() == -3.0


def test_unknown_mode_names_allowed_values(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="cls, mean, max"):
        pool(*batch, "median")


def test_normalize_gives_unit_rows() -> None:
    out = normalize(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    assert torch.allclose(out.norm(dim=-1), torch.ones(2))
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8]))


def test_spearman_matches_scipy_with_ties() -> None:
    import numpy as np

    from mtst.evaluate import spearman

    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=200).astype(float)
    b = a + rng.normal(size=200)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
