"""The closed-form heads' L-BFGS (``mtst.standins.lbfgs``) against ``torch.optim.LBFGS``: the same iterates."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from mtst.standins.lbfgs import minimise


def _problem(seed: int, rows: int, dim: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=-1)
    y = torch.randint(0, classes, (rows,), generator=g)
    return x, y


def _solve(x: torch.Tensor, y: torch.Tensor, classes: int, c: float, max_iter: int, ours: bool) -> list[torch.Tensor]:
    w = torch.zeros(x.shape[1], classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(classes, dtype=x.dtype, requires_grad=True)

    def objective() -> torch.Tensor:
        return nn.functional.cross_entropy(x @ w + b, y, reduction="sum") + (w * w).sum() / (2 * c)

    if ours:
        minimise([w, b], objective, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10)
    else:
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=1e-7,
            tolerance_change=1e-10,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
    return [w.detach(), b.detach()]


@pytest.mark.parametrize(
    ("seed", "rows", "dim", "classes", "c", "max_iter"),
    [
        (0, 16, 32, 2, 1.0, 500),  # fewer rows than dimensions: the penalty decides
        (1, 48, 32, 6, 10.0, 500),
        (2, 200, 16, 3, 100.0, 500),  # many line searches with a weak penalty
        (3, 60, 24, 4, 0.1, 100),
        (4, 30, 8, 5, 1.0, 3),  # stopped by max_iter mid-way, as cross-validation's fits are
    ],
)
def test_minimise_takes_the_steps_of_torch_lbfgs(
    seed: int, rows: int, dim: int, classes: int, c: float, max_iter: int
) -> None:
    x, y = _problem(seed, rows, dim, classes)
    ours = _solve(x, y, classes, c, max_iter, ours=True)
    theirs = _solve(x, y, classes, c, max_iter, ours=False)
    assert float(ours[0].abs().max()) > 0  # it moved
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_minimise_reaches_the_minimum_of_a_quadratic() -> None:
    target = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64)
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    first = minimise([p], lambda: ((p - target) ** 2).sum(), max_iter=50)
    assert first == pytest.approx(float((target**2).sum()))
    assert torch.allclose(p.detach(), target, atol=1e-6)
    assert p.grad is not None  # the gradient of the last evaluation, as an optimizer leaves it


def test_minimise_stops_at_once_on_a_zero_gradient() -> None:
    p = torch.ones(2, dtype=torch.float64, requires_grad=True)
    minimise([p], lambda: (p * 0).sum())
    assert torch.equal(p.detach(), torch.ones(2, dtype=torch.float64))


def test_minimise_refuses_complex_tensors() -> None:
    with pytest.raises(ValueError, match="dense real"):
        minimise([torch.zeros(2, dtype=torch.complex64, requires_grad=True)], lambda: torch.zeros(()))


def test_fitting_logistic_heads_does_not_import_torch_dynamo() -> None:
    """A torch Optimizer imports torch._dynamo (1.7 s on two cores) on first use; the heads' fit has none."""
    code = (
        "import sys, numpy as np, torch\n"
        "from mtst.modeling.logistic import fit_logistic, fit_one_vs_rest\n"
        "x = torch.randn(24, 8)\n"
        "fit_logistic(x, np.arange(24) % 3, 3)\n"
        "fit_one_vs_rest(x, (np.arange(48).reshape(24, 2) % 3 == 0).astype(float))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
