"""L-BFGS with a strong Wolfe line search, as a function: the solver of the closed-form heads.

The algorithm and every floating-point step are those of ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``
(BSD-3-Clause, after minFunc), run once to ``max_iter`` iterations: the same iterates, bit for bit
(``tests/test_lbfgs.py`` compares them). It is a function rather than a ``torch.optim.Optimizer``
because the first ``Optimizer`` a process builds imports ``torch._dynamo`` (``torch._disable_dynamo``
on ``add_param_group``): 1.7 s on a 2-core CPU, more than every logistic head of a few-shot run takes to
fit. Nothing here is compiled or traced, so nothing needs it. With the stand-ins off (:mod:`mtst.standins`)
:func:`minimise` runs ``torch.optim.LBFGS`` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mtst.standins import enabled

Objective = Callable[[], Tensor]


def _cubic_interpolate(x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: tuple | None = None) -> Any:
    """Minimiser of the cubic through two points with values and slopes (floats or 0-d tensors), clamped to
    ``bounds``."""
    xmin_bound, xmax_bound = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square.sqrt()
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(
    obj_func: Callable[[list[Tensor], Any, Tensor], tuple[float, Tensor]],
    x: list[Tensor],
    t: Any,
    d: Tensor,
    f: float,
    g: Tensor,
    gtd: Tensor,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, Tensor, Any, int]:
    """A step length along ``d`` meeting the strong Wolfe conditions: bracket, then zoom. Returns the loss,
    gradient and step there, and the evaluations it took."""
    d_norm = d.abs().max()
    g = g.clone(memory_format=torch.contiguous_format)
    search = _Search(obj_func, x, d, f, gtd, c1, c2)
    bracket, done = _bracket(search, t, g, max_ls)
    low = _zoom(search, bracket, done, d_norm, tolerance_change, max_ls)
    return bracket.f[low], bracket.g[low], bracket.t[low], search.evals


@dataclass
class _Search:
    """One line search: the objective along ``d`` from ``x`` (loss ``f``, slope ``gtd``) and what it cost."""

    obj_func: Callable[[list[Tensor], Any, Tensor], tuple[float, Tensor]]
    x: list[Tensor]
    d: Tensor
    f: float
    gtd: Tensor
    c1: float
    c2: float
    evals: int = 0
    iterations: int = 0

    def evaluate(self, t: Any) -> tuple[float, Tensor, Tensor]:
        f_new, g_new = self.obj_func(self.x, t, self.d)
        self.evals += 1
        return f_new, g_new, g_new.dot(self.d)

    def sufficient_decrease_fails(self, t: Any, f_new: float) -> bool:
        return bool(f_new > (self.f + self.c1 * t * self.gtd))

    def curvature_holds(self, gtd_new: Tensor) -> bool:
        return bool(abs(gtd_new) <= -self.c2 * self.gtd)


@dataclass
class _Bracket:
    """Step lengths with their losses, gradients and slopes (one point once the conditions hold)."""

    t: list[Any]
    f: list[Any]
    g: list[Tensor]
    gtd: list[Any] = field(default_factory=list)


def _bracket(s: _Search, t: Any, g: Tensor, max_ls: int) -> tuple[_Bracket, bool]:
    """Steps grow until an interval holding a point of the conditions is found (or a point is): the
    bracket, and whether its one point already meets them."""
    f_new, g_new, gtd_new = s.evaluate(t)
    t_prev, f_prev, g_prev, gtd_prev = 0, s.f, g, s.gtd
    while s.iterations < max_ls:
        if s.sufficient_decrease_fails(t, f_new) or (s.iterations > 1 and f_new >= f_prev):
            g_keep = g_new.clone(memory_format=torch.contiguous_format)
            return _Bracket([t_prev, t], [f_prev, f_new], [g_prev, g_keep], [gtd_prev, gtd_new]), False
        if s.curvature_holds(gtd_new):
            return _Bracket([t], [f_new], [g_new]), True
        if gtd_new >= 0:
            g_keep = g_new.clone(memory_format=torch.contiguous_format)
            return _Bracket([t_prev, t], [f_prev, f_new], [g_prev, g_keep], [gtd_prev, gtd_new]), False
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev = tmp, f_new
        g_prev = g_new.clone(memory_format=torch.contiguous_format)
        gtd_prev = gtd_new
        f_new, g_new, gtd_new = s.evaluate(t)
        s.iterations += 1
    return _Bracket([0, t], [s.f, f_new], [g, g_new]), False


def _zoom(s: _Search, b: _Bracket, done: bool, d_norm: Tensor, tolerance_change: float, max_ls: int) -> int:
    """The bracket narrowed by cubic interpolation until a point meets the conditions; its position."""
    insuf_progress = False
    low_pos, high_pos = (0, 1) if b.f[0] <= b.f[-1] else (1, 0)
    while not done and s.iterations < max_ls:
        if abs(b.t[1] - b.t[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(b.t[0], b.f[0], b.gtd[0], b.t[1], b.f[1], b.gtd[1])
        # a trial too near the bracket's ends twice running (or outside it) moves to 0.1 of its width inside
        eps = 0.1 * (max(b.t) - min(b.t))
        if min(max(b.t) - t, t - min(b.t)) < eps:
            if insuf_progress or t >= max(b.t) or t <= min(b.t):
                t = max(b.t) - eps if abs(t - max(b.t)) < abs(t - min(b.t)) else min(b.t) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new, gtd_new = s.evaluate(t)
        s.iterations += 1
        if s.sufficient_decrease_fails(t, f_new) or f_new >= b.f[low_pos]:
            b.t[high_pos], b.f[high_pos] = t, f_new
            b.g[high_pos] = g_new.clone(memory_format=torch.contiguous_format)
            b.gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if b.f[0] <= b.f[1] else (1, 0)
        else:
            if s.curvature_holds(gtd_new):
                done = True
            elif gtd_new * (b.t[high_pos] - b.t[low_pos]) >= 0:
                b.t[high_pos], b.f[high_pos] = b.t[low_pos], b.f[low_pos]
                b.g[high_pos], b.gtd[high_pos] = b.g[low_pos], b.gtd[low_pos]
            b.t[low_pos], b.f[low_pos] = t, f_new
            b.g[low_pos] = g_new.clone(memory_format=torch.contiguous_format)
            b.gtd[low_pos] = gtd_new
    return low_pos


class _Flat:
    """The parameters seen as one flat vector: the objective and its gradient, a step along a direction, a copy."""

    def __init__(self, params: Sequence[Tensor], objective: Objective) -> None:
        self.params = list(params)
        self.numel = sum(p.numel() for p in self.params)
        self.objective = objective

    def evaluate(self) -> float:
        """The objective's value, its gradient left on the parameters."""
        for p in self.params:
            p.grad = None
        with torch.enable_grad():
            loss = self.objective()
            loss.backward()
        return float(loss)

    def directional(self, x: list[Tensor], t: float | Tensor, d: Tensor) -> tuple[float, Tensor]:
        """The loss and gradient at ``x + t d``; the parameters are ``x`` again afterwards."""
        self.add(t, d)
        loss = self.evaluate()
        grad = self.grad()
        self.set(x)
        return loss, grad

    def grad(self) -> Tensor:
        return torch.cat([p.new(p.numel()).zero_() if p.grad is None else p.grad.view(-1) for p in self.params], 0)

    def add(self, step_size: float | Tensor, update: Tensor) -> None:
        offset = 0
        for p in self.params:
            p.add_(update[offset : offset + p.numel()].view_as(p), alpha=step_size)
            offset += p.numel()

    def clone(self) -> list[Tensor]:
        return [p.clone(memory_format=torch.contiguous_format) for p in self.params]

    def set(self, values: Sequence[Tensor]) -> None:
        for p, v in zip(self.params, values, strict=True):
            p.copy_(v)


class _History:
    """The last ``size`` steps and gradient changes: L-BFGS's two-loop recursion turns a gradient into a
    direction with them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.dirs: list[Tensor] = []
        self.stps: list[Tensor] = []
        self.ro: list[Tensor] = []
        self.al: list = [None] * size
        self.h_diag: float | Tensor = 1

    def add(self, y: Tensor, s: Tensor) -> None:
        """A gradient change ``y`` over a step ``s``, kept where the curvature along it is positive."""
        ys = y.dot(s)
        if ys > 1e-10:
            if len(self.dirs) == self.size:
                self.dirs.pop(0)
                self.stps.pop(0)
                self.ro.pop(0)
            self.dirs.append(y)
            self.stps.append(s)
            self.ro.append(1.0 / ys)
            self.h_diag = ys / y.dot(y)

    def direction(self, flat_grad: Tensor) -> Tensor:
        q = flat_grad.neg()
        for i in range(len(self.dirs) - 1, -1, -1):
            self.al[i] = self.stps[i].dot(q) * self.ro[i]
            q.add_(self.dirs[i], alpha=-self.al[i])
        d = r = torch.mul(q, self.h_diag)
        for i in range(len(self.dirs)):
            be_i = self.dirs[i].dot(r) * self.ro[i]
            r.add_(self.stps[i], alpha=self.al[i] - be_i)
        return d


def minimise(
    params: Sequence[Tensor],
    objective: Objective,
    max_iter: int = 20,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    lr: float = 1.0,
) -> float:
    """Minimise ``objective()`` (a scalar of ``params``, which require grad) in place; returns its
    first value. Stops after ``max_iter`` iterations (``max_iter * 5 // 4`` evaluations), at a gradient
    of at most ``tolerance_grad``, or when the loss or the step changes by less than ``tolerance_change``."""
    if any(p.is_complex() or p.is_sparse for p in params):
        raise ValueError("minimise takes dense real tensors")
    if not enabled():
        return _torch_lbfgs(params, objective, max_iter, tolerance_grad, tolerance_change, history_size, lr)
    flat = _Flat(params, objective)
    max_eval = max_iter * 5 // 4
    with torch.no_grad():
        loss = first = flat.evaluate()
        current_evals = 1
        flat_grad = flat.grad()
        if flat_grad.abs().max() <= tolerance_grad:
            return first
        d = t = prev_flat_grad = None
        history = _History(history_size)
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            if n_iter == 1:
                d = flat_grad.neg()
            else:
                history.add(flat_grad.sub(prev_flat_grad), d.mul(t))
                d = history.direction(flat_grad)
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
            else:
                prev_flat_grad.copy_(flat_grad)
            prev_loss = loss
            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr if n_iter == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break
            loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                flat.directional, flat.clone(), t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
            )
            flat.add(t, d)
            current_evals += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or flat_grad.abs().max() <= tolerance_grad:
                break
            if d.mul(t).abs().max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break
    return first


def _torch_lbfgs(
    params: Sequence[Tensor],
    objective: Objective,
    max_iter: int,
    tolerance_grad: float,
    tolerance_change: float,
    history_size: int,
    lr: float,
) -> float:
    """The same minimisation through ``torch.optim.LBFGS`` (the stand-ins off): one ``step``, as here."""
    optimizer = torch.optim.LBFGS(
        list(params),
        lr=lr,
        max_iter=max_iter,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        with torch.enable_grad():
            loss = objective()
            loss.backward()
        return loss

    return float(optimizer.step(closure).detach())
