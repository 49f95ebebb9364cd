from __future__ import annotations

import json
from itertools import pairwise

import pytest
import torch

from mtst.training.planning.plan import MAX_STRETCH_EPOCHS, step_budget
from mtst.training.runtime.optim import GroupScheduler, plan_param_groups, schedule_factor

from .test_freezing import NAMES


def test_layerwise_decay_and_head_lr() -> None:
    plan = plan_param_groups(NAMES, lr_backbone=1e-4, lr_head=1e-3, layer_decay=0.5, weight_decay=0.01)
    lr = {p.group: p.lr for p in plan.values()}
    assert lr["heads.category"] == lr["heads.sentiment"] == 1e-3
    assert lr["layers.3"] == pytest.approx(1e-4)
    assert lr["layers.2"] == pytest.approx(5e-5)
    assert lr["layers.0"] == pytest.approx(1e-4 * 0.5**3)
    assert lr["embeddings"] == pytest.approx(1e-4 * 0.5**4)
    assert lr["embeddings"] == min(lr.values())


def test_no_weight_decay_on_bias_and_layernorm() -> None:
    plan = plan_param_groups(NAMES, 1e-4, 1e-3, weight_decay=0.05)
    assert plan["encoder.backbone.embeddings.LayerNorm.weight"].weight_decay == 0.0
    assert plan["encoder.backbone.encoder.layer.1.output.LayerNorm.bias"].weight_decay == 0.0
    assert plan["heads.sentiment.1.bias"].weight_decay == 0.0
    assert plan["heads.category.1.weight"].weight_decay == 0.05
    assert plan["encoder.backbone.encoder.layer.0.attention.self.query.weight"].weight_decay == 0.05


def test_warmup_then_linear_decay() -> None:
    f = [schedule_factor("linear", s, total_steps=110, warmup_steps=10) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in pairwise(f[:10]))
    assert all(a >= b for a, b in pairwise(f[10:]))
    assert schedule_factor("linear", 110, 110, 10) == 0.0


def test_cosine_constant_cyclical() -> None:
    assert schedule_factor("cosine", 60, total_steps=110, warmup_steps=10) == pytest.approx(0.5)
    assert schedule_factor("constant", 90, 100, 10) == 1.0
    cyc = [schedule_factor("cyclical", s, 100, 0, cycle_steps=20) for s in range(60)]
    assert min(cyc) >= 0.1 - 1e-9 and max(cyc) == pytest.approx(1.0)
    assert cyc[5] == pytest.approx(cyc[25]) == pytest.approx(cyc[45])


def test_late_group_gets_its_own_warmup() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW(
        [{"params": [a], "lr": 1.0, "group": "heads.x"}, {"params": [b], "lr": 1.0, "group": "layers.1"}]
    )
    sched = GroupScheduler(opt, "constant", total_steps=100, warmup_steps=4)
    for _ in range(10):
        sched.step()
    sched.start_group("layers.1")
    assert opt.param_groups[0]["lr"] == 1.0
    assert opt.param_groups[1]["lr"] == pytest.approx(0.25)
    for _ in range(3):
        sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(1.0)
    state = sched.state_dict()
    sched.step()
    sched.load_state_dict(state)
    assert opt.param_groups[1]["lr"] == pytest.approx(1.0)


def test_lora_group_has_its_own_lr() -> None:
    names = ["encoder.backbone.encoder.layer.0.attention.self.query.lora_B.default.weight", "heads.t.1.weight"]
    plan = plan_param_groups(names, lr_backbone=1e-5, lr_head=1e-3, lr_lora=5e-4, num_layers=2)
    assert plan[names[0]].group == "lora" and plan[names[0]].lr == 5e-4
    assert plan[names[1]].lr == 1e-3


@pytest.mark.parametrize(
    ("steps_per_epoch", "epochs", "max_steps", "min_steps", "expected"),
    [
        (10, 3, None, None, 30),  # epochs worth
        (10, 2.5, None, None, 25),  # fractional epochs round up
        (10, 3, 7, 500, 7),  # max_steps wins over everything
        (10, 3, None, 20, 30),  # already past min_steps: unchanged
        (10, 3, None, 60, 60),  # small data stretched to min_steps
        (3, 3, None, 300, 3 * MAX_STRETCH_EPOCHS),  # but to at most MAX_STRETCH_EPOCHS epochs
        (1, 0.1, None, None, 1),  # never zero steps
    ],
)
def test_step_budget(
    steps_per_epoch: int, epochs: float, max_steps: int | None, min_steps: int | None, expected: int
) -> None:
    assert step_budget(steps_per_epoch, epochs, max_steps, min_steps) == expected


def test_adamw_is_fused_on_the_cpu_and_steps_as_the_default_kernel() -> None:
    from mtst.standins.adamw import adamw

    torch.manual_seed(0)
    weights = [torch.randn(8, 4, requires_grad=True), torch.randn(4, requires_grad=True)]
    grads = [torch.randn_like(w) for w in weights]
    copies = [w.detach().clone().requires_grad_(True) for w in weights]
    start = [w.detach().clone() for w in weights]
    fused = adamw(weights, lr=1e-2, weight_decay=0.01)
    plain = torch.optim.AdamW(copies, lr=1e-2, weight_decay=0.01)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    assert adamw([{"params": copies}], lr=1e-3).defaults["fused"]  # param-group dicts, as build_optimizer passes
    for _ in range(3):
        for ws, opt in ((weights, fused), (copies, plain)):
            for w, g in zip(ws, grads, strict=True):
                w.grad = g.clone()
            opt.step()
    for a, b, s in zip(weights, copies, start, strict=True):
        assert not torch.equal(a, s)  # it stepped
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def _step_both(light: object, reference: torch.optim.Optimizer, pairs: list, grads: list, lrs: list) -> None:
    """Step two optimizers over copies of the same weights with the same gradients and per-step LRs; the
    second weight has no gradient on the second step (an optimizer skips it, as a frozen one is)."""
    for step, lr in enumerate(lrs):
        for opt, side in ((light, 0), (reference, 1)):
            for group in opt.param_groups:
                group["lr"] = lr
            for i, (pair, g) in enumerate(zip(pairs, grads, strict=True)):
                pair[side].grad = None if (step == 1 and i == 1) else g * (step + 1)
            opt.step()
            opt.zero_grad(set_to_none=True)


def test_light_adamw_steps_as_torch_fused_adamw_bit_for_bit() -> None:
    from mtst.standins.adamw import LightAdamW, adamw

    torch.manual_seed(0)
    weights = [torch.randn(8, 4), torch.randn(4), torch.randn(3, 3)]
    pairs = [(w.clone().requires_grad_(True), w.clone().requires_grad_(True)) for w in weights]
    grads = [torch.randn_like(w) for w in weights]
    light = adamw([a for a, _ in pairs], lr=1e-2, weight_decay=0.01)
    assert isinstance(light, LightAdamW) and light.defaults["fused"]
    reference = torch.optim.AdamW([b for _, b in pairs], lr=1e-2, weight_decay=0.01, fused=True)
    _step_both(light, reference, pairs, grads, [1e-2, 5e-3, 2e-2, 1e-3])
    for (a, b), w in zip(pairs, weights, strict=True):
        assert not torch.equal(a.detach(), w)  # it stepped
        assert torch.equal(a.detach(), b.detach())
        assert a.grad is None
    theirs = reference.state[pairs[0][1]]
    ours = light.state[pairs[0][0]]
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)  # moments, step


def test_adamw_falls_back_to_torch_adamw_without_the_functional_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtst.standins import adamw as optim

    assert optim.functional_adamw_available()
    monkeypatch.setattr(optim, "_adamw_update", None)
    assert not optim.functional_adamw_available()
    fallback = optim.adamw([torch.zeros(2, requires_grad=True)], lr=1e-3)
    assert isinstance(fallback, torch.optim.AdamW) and fallback.defaults["fused"]
    monkeypatch.setattr(optim, "_adamw_update", lambda params, lr: None)  # a signature it cannot call
    assert not optim.functional_adamw_available()


def _groups(weights: list[torch.Tensor]) -> list[dict]:
    """Two param groups with the extra keys build_optimizer and GroupScheduler add."""
    return [
        {"params": weights[:2], "lr": 1e-2, "weight_decay": 0.01, "group": "layers.0", "names": ["a", "b"]},
        {"params": weights[2:], "lr": 1e-3, "weight_decay": 0.0, "group": "head", "names": ["c"], "base_lr": 1e-3},
    ]


def _train(opt: object, weights: list[torch.Tensor], grads: list[torch.Tensor], steps: range) -> None:
    for step in steps:
        for w, g in zip(weights, grads, strict=True):
            w.grad = g * (step + 1)
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("fused", [True, None], ids=["fused", "per-tensor"])  # None: torch's choice off the CPU
@pytest.mark.parametrize("first", ["light", "torch"])
def test_light_adamw_state_dicts_are_torch_adamw_state_dicts(first: str, fused: bool | None) -> None:
    """A checkpoint written with either optimizer resumes in the other (runs written before LightAdamW resume),
    and the resumed steps are the steps an uninterrupted run takes."""
    from mtst.standins.adamw import LightAdamW
    from mtst.training.runtime.checkpoint import _flatten_optimizer, _unflatten_optimizer

    torch.manual_seed(1)
    start = [torch.randn(6, 3), torch.randn(3), torch.randn(2, 6)]
    grads = [torch.randn_like(w) for w in start]

    def make(kind: str) -> tuple[object, list[torch.Tensor]]:
        weights = [w.clone().requires_grad_(True) for w in start]
        if kind == "light":
            return LightAdamW(_groups(weights), lr=1e-2, fused=fused), weights
        return torch.optim.AdamW(_groups(weights), lr=1e-2, fused=fused), weights

    straight, straight_w = make("torch")
    _train(straight, straight_w, grads, range(5))
    before, before_w = make(first)
    _train(before, before_w, grads, range(3))
    tensors, meta = _flatten_optimizer(before.state_dict())  # through a checkpoint's files, JSON and all
    saved = _unflatten_optimizer({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(meta)))
    reference = make("torch")[0]  # an unstepped torch optimizer's layout, for comparison
    after, after_w = make("torch" if first == "light" else "light")
    with torch.no_grad():
        for w, b in zip(after_w, before_w, strict=True):
            w.copy_(b)
    after.load_state_dict(saved)
    assert [g["names"] for g in after.param_groups] == [["a", "b"], ["c"]]  # the extra keys come back
    assert after.param_groups[0]["params"][0] is after_w[0]
    _train(after, after_w, grads, range(3, 5))
    for a, b in zip(after_w, straight_w, strict=True):
        assert torch.equal(a.detach(), b.detach())
    ours, theirs = LightAdamW(_groups(start), lr=1e-2, fused=fused).state_dict(), reference.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]  # the same layout, key for key


def test_light_adamw_refuses_a_state_of_other_groups() -> None:
    from mtst.standins.adamw import LightAdamW

    opt = LightAdamW([torch.zeros(2, requires_grad=True)], lr=1e-3)
    other = LightAdamW([torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)], lr=1e-3)
    with pytest.raises(ValueError, match="other parameter groups"):
        opt.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": opt.param_groups[0]["params"]})
