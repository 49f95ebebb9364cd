"""Span masking and the auxiliary masked-LM task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtst.config import validate_config
from mtst.modeling.mlm import mask_batch, span_mask, word_starts
from mtst.modeling.model import MultiTaskModel
from mtst.training.trainer import setup_run, train
from tests.conftest import make_tasks

# 40 words; words 5, 6 and 20 have three sub-tokens each.
WORD_IDS: list[int | None] = [None]
for w in range(40):
    WORD_IDS += [w] * (3 if w in (5, 6, 20) else 1)
WORD_IDS.append(None)
N_TOKENS = len(WORD_IDS) - 2


def masked_runs(mask: np.ndarray) -> list[int]:
    """Lengths (in words) of the contiguous masked runs."""
    words = word_starts(WORD_IDS)
    flags = [bool(mask[a]) for a, _ in words]
    runs, current = [], 0
    for f in [*flags, False]:
        if f:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_span_masking_budget_and_whole_words() -> None:
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(500):
        mask = span_mask(WORD_IDS, rng, mask_ratio=0.15, max_span=10, span_p=0.2)
        assert not mask[0] and not mask[-1], "special tokens are never masked"
        for a, b in word_starts(WORD_IDS):
            assert mask[a:b].all() or not mask[a:b].any(), "a word is masked whole or not at all"
        counts.append(mask.sum())
    budget = round(0.15 * N_TOKENS)
    assert min(counts) >= budget and max(counts) <= budget + 2  # +2: the tail of one multi-token word
    assert abs(np.mean(counts) / N_TOKENS - 0.15) < 0.02


def test_span_lengths_follow_the_setting() -> None:
    rng = np.random.default_rng(1)
    single = [r for _ in range(300) for r in masked_runs(span_mask(WORD_IDS, rng, 0.15, max_span=1))]
    long = [r for _ in range(300) for r in masked_runs(span_mask(WORD_IDS, rng, 0.15, max_span=10, span_p=0.2))]
    # span_length 1 masks words one at a time, so runs are short (adjacent picks can touch);
    # geometric spans give long runs.
    assert np.mean(single) < 1.5 < np.mean(long)
    assert max(long) >= 4


def test_mask_batch_replacement_shares() -> None:
    rng = np.random.default_rng(2)
    ids = torch.arange(1000, 1000 + len(WORD_IDS)).repeat(400, 1)
    masked, labels = mask_batch(ids, [WORD_IDS] * 400, rng, mask_token_id=103, vocab_size=30000)
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])
    as_mask = (masked[chosen] == 103).float().mean().item()
    unchanged = (masked[chosen] == ids[chosen]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.03 and abs(unchanged - 0.1) < 0.03
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_mlm_loss_falls(tiny_backbone_dir: Path) -> None:
    torch.manual_seed(0)
    tasks = {**make_tasks(), "mlm": make_tasks()["category"].model_copy(update={"type": "masked_lm", "labels": []})}
    model = MultiTaskModel.from_backbone(tasks, backbone=str(tiny_backbone_dir))
    texts = ["the pan rusted and the handle broke off", "a wonderful gripping novel i loved every page"] * 4
    _, word_ids = model.encoder.tokenize_words(texts)
    batch = model.encoder.tokenize(texts)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(60):
        masked, labels = mask_batch(batch["input_ids"], word_ids, rng, 103, len(model.encoder.tokenizer), 0.3, 3)
        loss = model.masked_lm_loss("mlm", {"input_ids": masked, "attention_mask": batch["attention_mask"]}, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


def mlm_config(tiny_backbone_dir: Path, tiny_data: dict[str, str], run_dir: Path, mlm: dict | None) -> dict:
    tasks: dict = {"category": {}, "sentiment": {"hidden_size": 8}}
    if mlm is not None:
        tasks = {"mlm": {"type": "masked_lm", **mlm}, **tasks}  # listed first: must not shift other heads' init
    return {
        "model": {"backbone": str(tiny_backbone_dir), "max_length": 32},
        "tasks": tasks,
        "data": dict(tiny_data),
        "training": {"batch_size": 8, "epochs": 2, "min_steps": None, "lr_head": 1e-2, "lr_backbone": 1e-3},
        "output_dir": str(run_dir),
    }


def test_mlm_weight_zero_equals_no_mlm(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    base = train(validate_config(mlm_config(tiny_backbone_dir, tiny_data, tmp_path / "a", None)), show_progress=False)
    zero = train(
        validate_config(mlm_config(tiny_backbone_dir, tiny_data, tmp_path / "b", {"weight": 0.0})), show_progress=False
    )
    assert [e["train_loss"] for e in base.history] == [e["train_loss"] for e in zero.history]
    assert base.test == zero.test
    a, b = MultiTaskModel.load(tmp_path / "a"), MultiTaskModel.load(tmp_path / "b")
    assert "mlm" not in b.tasks, "the MLM head is dropped from the saved model by default"
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_mlm_task_trains_and_is_auxiliary(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    cfg = validate_config(mlm_config(tiny_backbone_dir, tiny_data, tmp_path, {"weight": 0.5, "keep_head": True}))
    loop = setup_run(cfg, show_progress=False)
    before = loop.model.heads["mlm"].dense.weight.detach().clone()
    loop.fit()
    assert not torch.equal(before, loop.model.heads["mlm"].dense.weight)
    saved = MultiTaskModel.load(tmp_path)
    assert "mlm" in saved.tasks and "mlm" not in saved.prediction_tasks
    assert set(saved.predict(["a pan"])[0]) == {"category", "sentiment"}


def test_auxiliary_task_left_out_of_selection(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    raw = mlm_config(tiny_backbone_dir, tiny_data, tmp_path, None)
    raw["tasks"]["category"] = {"auxiliary": True, "keep_head": False}
    raw["training"]["max_steps"] = 3
    result = train(validate_config(raw), show_progress=False)
    val = result.validation
    assert "category/accuracy" in val, "auxiliary tasks are still reported"
    assert val["mean_macro_f1"] == pytest.approx(val["sentiment/macro_f1"])
    assert list(MultiTaskModel.load(tmp_path).tasks) == ["sentiment"]


def test_all_auxiliary_is_refused() -> None:
    from mtst.errors import ConfigError

    with pytest.raises(ConfigError, match="main task"):
        validate_config({"tasks": {"mlm": {"type": "masked_lm"}}, "data": {"train": "x.csv"}})
