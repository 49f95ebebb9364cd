"""Caches of frozen work give the same training as the uncached path, and never go stale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtst.modeling.encoder import SentenceEncoder
from mtst.training.runtime.cache import cache_key
from mtst.training.trainer import StepEvent, setup_run

from .conftest import save_tiny_bert
from .test_training import make_config


@pytest.fixture(scope="module")
def no_dropout_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(
        tmp_path_factory.mktemp("tiny-bert-nodrop"),
        seed=1,
        num_hidden_layers=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _losses(backbone: Path, data: dict[str, str], run_dir: Path, **training) -> tuple[list[float], str | None, dict]:
    """Per-step losses, the cache in use, and every figure scored: validation at each evaluation, then test."""
    cfg = make_config(backbone, data, run_dir, max_steps=20, eval_every=5, **training)
    for task in cfg.tasks.values():
        task.dropout = 0.0
    losses: list[float] = []
    loop = setup_run(cfg, callbacks=[lambda event: losses.append(event.loss)], show_progress=False)
    mode = loop.inputs.cache.mode
    if mode == "prefix":  # validation is scored from its own prefix, through the trainable layers only
        assert loop.inputs.cache.eval_prefix is not None
    result = loop.fit()
    scores = {"validation": [h["validation"] for h in loop.state.history], "test": result.test}
    return losses, mode, scores


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({"strategy": "heads"}, "pooled"),
        ({"strategy": "top_k", "top_k": 1}, "prefix"),
        ({"strategy": "full", "freeze": ["embeddings", "layers.0"]}, "prefix"),
    ],
)
def test_cached_training_matches_uncached(
    no_dropout_backbone: Path,
    tiny_data: dict[str, str],
    tmp_path: Path,
    settings: dict,
    mode: str,
) -> None:
    cached, cached_mode, cached_scores = _losses(no_dropout_backbone, tiny_data, tmp_path / "a", **settings)
    plain, plain_mode, plain_scores = _losses(no_dropout_backbone, tiny_data, tmp_path / "b", cache=False, **settings)
    assert (cached_mode, plain_mode) == (mode, None)
    assert len(cached) == len(plain) == 20
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(plain), atol=1e-5, rtol=0)
    # Validation (from the pooled or prefix cache) and test (from cached embeddings where the backbone
    # stayed frozen) give the same figures as the model's own pass.
    assert len(cached_scores["validation"]) == 4 and cached_scores["test"]
    assert cached_scores == plain_scores


def test_gradual_moves_the_cache_boundary_down(
    no_dropout_backbone: Path,
    tiny_data: dict[str, str],
    tmp_path: Path,
) -> None:
    seen: list[tuple[str | None, int | None]] = []
    cfg = make_config(
        no_dropout_backbone, tiny_data, tmp_path, strategy="gradual", max_steps=8, gradual={"stage_steps": 2}
    )

    def record(event: StepEvent) -> None:
        seen.append((event.cache_mode, event.cache_boundary))

    loop = setup_run(cfg, callbacks=[record], show_progress=False)
    loop.fit()
    assert seen[0] == ("pooled", None)
    assert seen[2] == ("prefix", 2)
    assert seen[4] == ("prefix", 1)
    assert seen[6] == (None, None)  # every layer trains: nothing frozen left to cache


def test_over_budget_prefix_falls_back(
    no_dropout_backbone: Path,
    tiny_data: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = make_config(no_dropout_backbone, tiny_data, tmp_path, strategy="top_k", top_k=1, cache_memory_mb=1e-6)
    loop = setup_run(cfg, show_progress=False)
    assert loop.inputs.cache.mode is None


def test_cache_key_changes_with_everything_that_matters(no_dropout_backbone: Path, tiny_backbone_dir: Path) -> None:
    enc = SentenceEncoder.from_pretrained(str(no_dropout_backbone))
    texts = ["one text", "another"]
    base = cache_key(enc, texts, "pooled")
    assert cache_key(enc, texts, "pooled") == base
    assert cache_key(enc, [*texts, "more"], "pooled") != base
    assert cache_key(enc, ["one text!", "another"], "pooled") != base
    assert cache_key(enc, texts, "prefix", 2) != base
    assert cache_key(SentenceEncoder.from_pretrained(str(tiny_backbone_dir)), texts, "pooled") != base
    assert cache_key(SentenceEncoder.from_pretrained(str(no_dropout_backbone), pooling="max"), texts, "pooled") != base
    assert cache_key(SentenceEncoder.from_pretrained(str(no_dropout_backbone), max_length=16), texts, "pooled") != base
    enc.set_inference_precision("bf16")  # a bf16 run's embeddings are not an fp32 run's
    assert cache_key(enc, texts, "pooled") != base
    with torch.no_grad():
        next(enc.backbone.parameters()).add_(1.0)
    assert cache_key(enc, texts, "pooled") != base


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_layers_run_one_by_one_give_the_whole_model(tmp_path: Path, attention: str) -> None:
    """The prefix path (embeddings, then each layer with mtst's own extended mask) reproduces the model's
    forward pass on padded batches, under both attention kernels, through public APIs only."""
    from transformers import AutoModel

    from mtst.training.runtime.cache import run_layers

    path = save_tiny_bert(tmp_path / "bert", num_hidden_layers=3)
    backbone = AutoModel.from_pretrained(path, attn_implementation=attention).eval()
    ids = torch.randint(5, 1000, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    with torch.inference_mode():
        whole = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = run_layers(backbone, backbone.embeddings(input_ids=ids), mask, 0, 1)
        split = run_layers(backbone, hidden, mask, 1, 3)  # a prefix, then the rest: the cache's two halves
    keep = mask.bool()
    torch.testing.assert_close(split[keep], whole[keep], atol=1e-5, rtol=1e-5)


def test_a_backbone_whose_layers_disagree_runs_without_a_prefix_cache(
    tmp_path: Path, tiny_data: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """If a future transformers changes what a layer takes, the check catches it and the run trains on the
    whole encoder (no crash, no wrong numbers)."""
    from mtst.training.runtime import cache

    path = save_tiny_bert(tmp_path / "bert", num_hidden_layers=3)

    def broken(backbone, hidden, mask, start, stop):  # type: ignore[no-untyped-def]
        raise TypeError("BertLayer.forward() got an unexpected keyword argument 'attention_mask'")

    monkeypatch.setattr(cache, "run_layers", broken)
    cfg = make_config(path, tiny_data, tmp_path / "run", strategy="top_k", top_k=1, max_steps=3)
    loop = setup_run(cfg, show_progress=False)
    assert loop.inputs.cache.mode is None
    assert loop.fit().steps == 3
