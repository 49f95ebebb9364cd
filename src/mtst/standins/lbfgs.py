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
    """A step length along ``d`` meeting the strong Wolfe conditions: bracket, then zoom."""
    d_norm = d.abs().max()
    g = g.clone(memory_format=torch.contiguous_format)
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    bracket: list[Any] = []
    bracket_f: list[Any] = []
    bracket_g: list[Tensor] = []
    bracket_gtd: list[Any] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g = [g_prev, g_new.clone(memory_format=torch.contiguous_format)]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g = [g_prev, g_new.clone(memory_format=torch.contiguous_format)]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev = tmp, f_new
        g_prev = g_new.clone(memory_format=torch.contiguous_format)
        gtd_prev = gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # a trial too near the bracket's ends twice running (or outside it) moves to 0.1 of its width inside
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos] = g_new.clone(memory_format=torch.contiguous_format)
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos] = g_new.clone(memory_format=torch.contiguous_format)
            bracket_gtd[low_pos] = gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


class _Flat:
    """The parameters seen as one flat vector: their gradient, a step along a direction, a copy."""

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.numel = sum(p.numel() for p in self.params)

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
    flat = _Flat(params)
    max_eval = max_iter * 5 // 4

    def closure() -> float:
        for p in flat.params:
            p.grad = None
        with torch.enable_grad():
            loss = objective()
            loss.backward()
        return float(loss)

    def directional(x: list[Tensor], t: float | Tensor, d: Tensor) -> tuple[float, Tensor]:
        flat.add(t, d)
        loss = closure()
        grad = flat.grad()
        flat.set(x)
        return loss, grad

    with torch.no_grad():
        loss = first = closure()
        current_evals = 1
        flat_grad = flat.grad()
        if flat_grad.abs().max() <= tolerance_grad:
            return first
        d = t = prev_flat_grad = None
        old_dirs: list[Tensor] = []
        old_stps: list[Tensor] = []
        ro: list[Tensor] = []
        al: list = [None] * history_size
        h_diag: float | Tensor = 1
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            if n_iter == 1:
                d = flat_grad.neg()
            else:
                y = flat_grad.sub(prev_flat_grad)
                s = d.mul(t)
                ys = y.dot(s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / y.dot(y)
                q = flat_grad.neg()
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q.add_(old_dirs[i], alpha=-al[i])
                d = r = torch.mul(q, h_diag)
                for i in range(len(old_dirs)):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r.add_(old_stps[i], alpha=al[i] - be_i)
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
                directional, flat.clone(), t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
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
