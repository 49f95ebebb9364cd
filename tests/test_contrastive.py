"""The contrastive stage: balanced label batches, pair masks, losses, its plan, and what it does to a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtst.config import validate_config
from mtst.modeling.model import MultiTaskModel
from mtst.standins.adamw import LightAdamW
from mtst.training.planning.plan import DataStats, build_plan, contrastive_steps
from mtst.training.stages import contrastive
from mtst.training.stages.contrastive import contrastive_loss, label_batches, pair_masks
from mtst.training.trainer import setup_run

from .conftest import save_tiny_bert

M = -100  # no label for this task


# ------------------------------------------------------------------ batches
def test_batches_are_balanced_over_classes_and_respect_labels() -> None:
    y = np.array([0] * 10 + [1] * 10 + [2] * 10 + [M] * 5)
    for task, rows in label_batches({"t": y}, batch_size=12, steps=20, seed=0):
        assert task == "t"
        labels = y[rows]
        assert M not in labels  # rows without this task's label never enter its batches
        counts = np.bincount(labels, minlength=3)
        assert set(counts[counts > 0]) == {4}  # equal rows per class present
        assert len(rows) == len(set(rows.tolist()))


def test_every_class_in_a_batch_has_a_positive_pair_even_with_many_classes() -> None:
    y = np.repeat(np.arange(40), 3)
    batches = label_batches({"t": y}, batch_size=16, steps=50, seed=1)
    for _, rows in batches:
        counts = np.bincount(y[rows])
        assert counts[counts > 0].min() >= 2
    seen = np.unique(np.concatenate([rows for _, rows in batches]))
    assert len(seen) == len(y)  # the seeded passes reach every row


def test_multi_task_rows_without_a_label_are_skipped_for_that_task_only() -> None:
    a = np.array([0, 1, 0, 1, M, M, M, M])
    b = np.array([M, M, M, M, 0, 1, 0, 1])
    batches = label_batches({"a": a, "b": b}, batch_size=4, steps=6, seed=0)
    assert [t for t, _ in batches] == ["a", "b"] * 3  # tasks take turns
    for task, rows in batches:
        assert set(rows.tolist()) <= ({0, 1, 2, 3} if task == "a" else {4, 5, 6, 7})


def test_batches_are_seeded_and_a_task_with_one_class_has_none() -> None:
    y = np.array([0, 1] * 20)
    first = label_batches({"t": y}, 8, 5, seed=3)
    again = label_batches({"t": y}, 8, 5, seed=3)
    other = label_batches({"t": y}, 8, 5, seed=4)
    assert all((a[1] == b[1]).all() for a, b in zip(first, again, strict=True))
    assert any((a[1] != b[1]).any() for a, b in zip(first, other, strict=True))
    assert label_batches({"t": np.zeros(10, dtype=int)}, 8, 5, seed=0) == []


def test_pair_masks_split_every_off_diagonal_pair() -> None:
    pos, neg = pair_masks(torch.tensor([0, 0, 1, 2, 1]))
    assert not pos.diagonal().any() and not neg.diagonal().any()
    assert int(pos.sum()) == 4  # (0,1), (2,4) both ways
    assert bool((pos | neg | torch.eye(5, dtype=torch.bool)).all())
    assert not bool((pos & neg).any())


# ------------------------------------------------------------------- losses
@pytest.mark.parametrize("kind", ["cosine", "supcon"])
def test_loss_prefers_embeddings_that_cluster_by_label(kind: str) -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    clustered = torch.eye(3).repeat_interleave(2, dim=0) + 0.01 * torch.randn(
        6, 3, generator=torch.Generator().manual_seed(0)
    )
    mixed = clustered[torch.tensor([0, 2, 4, 1, 3, 5])]
    assert contrastive_loss(clustered, labels, kind) < contrastive_loss(mixed, labels, kind)
    if kind == "cosine":  # same label identical, different labels orthogonal: nothing left to learn
        assert float(contrastive_loss(torch.eye(3).repeat_interleave(2, dim=0), labels, kind)) == pytest.approx(0.0)


def test_loss_has_gradients_and_rejects_an_unknown_kind() -> None:
    emb = torch.randn(4, 8, requires_grad=True)
    contrastive_loss(emb, torch.tensor([0, 0, 1, 1])).backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="allowed: cosine, supcon"):
        contrastive_loss(emb, torch.tensor([0, 0, 1, 1]), "triplet")


# --------------------------------------------------------------------- plan
def plan(strategy: str, enabled: bool | None = True, **training: Any):
    config = validate_config(
        {
            "tasks": {"a": {}, "b": {}},
            "data": {"train": "x.csv"},
            "training": {"strategy": strategy, "contrastive": {"enabled": enabled}, **training},
        }
    )
    stats = DataStats(labelled_rows=48, class_counts={"a": (8, 8, 8), "b": (24, 24)})
    return build_plan(config, 4, stats)


@pytest.mark.parametrize(
    ("strategy", "settings", "groups"),
    [
        ("frozen", {}, {"layers.0", "layers.1", "layers.2", "layers.3", "backbone_other"}),
        ("frozen", {"contrastive": {"enabled": True, "top_k": 1}}, {"layers.3", "backbone_other"}),
        ("top_k", {"top_k": 2}, {"layers.2", "layers.3", "backbone_other"}),
        ("lora", {}, {"lora"}),
        ("full", {"freeze": ["embeddings"]}, {"layers.0", "layers.1", "layers.2", "layers.3", "backbone_other"}),
    ],
)
def test_the_stage_trains_what_the_strategy_trains(strategy: str, settings: dict, groups: set[str]) -> None:
    p = plan(strategy, **settings)
    assert p.contrastive is not None
    assert set(p.contrastive.groups) == groups
    assert p.contrastive.tasks == ("a", "b")
    assert p.contrastive.steps == 30 + 45  # each task its own budget: 30 passes over 24 rows, over 48 rows
    assert set(p.contrastive.groups) <= p.trained_groups  # checkpoints keep what the stage trained


def test_tasks_with_many_classes_sit_the_stage_out() -> None:
    config = validate_config(
        {
            "tasks": {"few": {}, "many": {}},
            "data": {"train": "x.csv"},
            "training": {"strategy": "frozen", "contrastive": {"enabled": True}},
        }
    )
    stats = DataStats(labelled_rows=400, class_counts={"few": (200, 200), "many": (8,) * 50})
    assert build_plan(config, 4, stats).contrastive.tasks == ("few",)
    everyone = config.model_copy(deep=True)
    everyone.training.contrastive.max_classes = None
    assert build_plan(everyone, 4, stats).contrastive.tasks == ("few", "many")
    only_many = DataStats(labelled_rows=400, class_counts={"many": (8,) * 50})
    assert build_plan(config, 4, only_many).contrastive is None


def test_the_stage_is_off_unless_asked_and_sized_by_the_data() -> None:
    assert plan("frozen", enabled=None).contrastive is None
    assert plan("frozen", enabled=False).contrastive is None
    assert contrastive_steps(16, 32, 30, 20, 150) == 30  # fewer rows than a batch: one batch is every row
    assert contrastive_steps(48, 32, 30, 20, 150) == 45
    assert contrastive_steps(4, 32, 2, 20, 150) == 20  # at least min_steps
    assert contrastive_steps(10_000, 32, 30, 20, 200) == 200  # at most max_steps


# -------------------------------------------------------------------- stage
@pytest.fixture(scope="module")
def nodrop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(
        tmp_path_factory.mktemp("bert-c"), seed=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def _raw(backbone: Path, data: dict[str, str], out: Path, **training: Any) -> dict[str, Any]:
    contrastive = {"enabled": True, "min_steps": 16, "max_steps": 16, "batch_size": 8, "lr": 1e-3}
    contrastive.update(training.pop("contrastive", {}))
    return {
        "model": {"backbone": str(backbone), "max_length": 32},
        "tasks": {"category": {}, "sentiment": {}},
        "data": {"train": data["train"], "test": data["test"]},
        "training": {"strategy": "frozen", "contrastive": contrastive, **training},
        "output_dir": str(out),
    }


def _config(backbone: Path, data: dict[str, str], out: Path, **training: Any) -> Any:
    return validate_config(_raw(backbone, data, out, **training))


def _separation(model_or_encoder: Any, texts: list[str], labels: np.ndarray) -> float:
    """Mean cosine of same-label pairs minus that of different-label pairs."""
    emb = torch.nn.functional.normalize(
        torch.as_tensor(model_or_encoder.encode(texts, normalize=False, convert_to="torch")).float(), dim=-1
    )
    sim = emb @ emb.T
    same = torch.as_tensor(labels[:, None] == labels[None, :])
    return float(sim[same & ~torch.eye(len(texts), dtype=torch.bool)].mean() - sim[~same].mean())


def test_the_stage_draws_same_label_sentences_together(nodrop: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    loop = setup_run(_config(nodrop, tiny_data, tmp_path / "run"), show_progress=False)
    train = loop.inputs.data.splits["train"]
    labels = train.labels["category"]
    before = _separation(loop.model.encoder, train.texts, labels)
    frozen_before = {n: p.detach().clone() for n, p in loop.model.named_parameters() if "embeddings" in n}
    made = []
    real = contrastive.adamw

    def spy(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(contrastive, "adamw", spy)
        loop.fit()
    assert len(made) == 1 and isinstance(made[0], LightAdamW) and made[0].defaults["fused"]  # on the CPU: fused
    assert loop.stages_done is not None and len(loop.stages_done.contrastive_losses) == 2 * 16  # 16 steps per task
    assert all(np.isfinite(loop.stages_done.contrastive_losses))
    saved = MultiTaskModel.load(tmp_path / "run" / "model")
    assert _separation(saved.encoder, train.texts, labels) > before + 0.02
    for name, p in saved.named_parameters():  # the stage trained the layers, not the embeddings
        if name in frozen_before:
            assert torch.equal(p, frozen_before[name]), name


@pytest.mark.parametrize(
    "training",
    [{}, {"strategy": "full", "max_steps": 2, "contrastive": {"enabled": False}}],
    ids=["stage-then-logistic-heads", "full"],
)
def test_a_training_run_does_not_import_torch_dynamo(
    training: dict, nodrop: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    """Neither the default few-shot run (contrastive stage, then logistic heads) nor a run of optimizer steps
    builds a ``torch.optim.Optimizer``, whose first use imports ``torch._dynamo``: 1.7 s of a 20 s run on two
    cores."""
    raw = _raw(nodrop, tiny_data, tmp_path / "run", **training)
    code = (
        "import sys, json\n"
        "from mtst.config import validate_config\n"
        "from mtst.training.trainer import train\n"
        f"config = validate_config(json.loads({json.dumps(json.dumps(raw))}))\n"
        "train(config, show_progress=False)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "run" / "model").is_dir()


def test_prefix_cache_gives_the_losses_of_the_whole_encoder(
    nodrop: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    losses = {}
    for cache in (True, False):
        config = _config(nodrop, tiny_data, tmp_path / str(cache), cache=cache, contrastive={"top_k": 1})
        loop = setup_run(config, show_progress=False)
        loop.fit()
        assert loop.stages_done is not None
        losses[cache] = loop.stages_done.contrastive_losses
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    assert losses[True][-1] < losses[True][0]


def test_tight_split_trades_padding_against_passes() -> None:
    from mtst.modeling.encoder import tight_split

    assert tight_split([10, 10, 9, 9]) == [[0, 1, 2, 3]]  # 4 tokens of padding: not worth a pass
    assert tight_split([60, 58, 12, 11, 10], pass_cost=100) == [[0, 1], [2, 3, 4]]  # 144 tokens saved
    assert tight_split([60, 58, 12, 11, 10]) == [[0, 1, 2, 3, 4]]  # not worth the default cost of a pass
    assert tight_split([5, 4, 3, 2, 1], pass_cost=0) == [[0], [1], [2], [3], [4]]
    assert tight_split([]) == []


def test_stage_features_run_in_tight_sub_batches_and_match_one_padded_batch(tiny_model: MultiTaskModel) -> None:
    from mtst.data import Split
    from mtst.training.runtime.batches import Batcher

    texts = ["short", "a much longer sentence " * 30, "mid size text here", "tiny", "another long one " * 25]
    encoder = tiny_model.encoder.eval()
    ids = encoder.tokenize_ids(texts)
    batcher = Batcher(Split("train", texts, {}), ids, None, encoder.pad_id, [])
    rows = np.array([3, 1, 0, 4, 2])
    calls: list[int] = []
    encoder.register_forward_hook(lambda module, args, out: calls.append(int(args[0]["input_ids"].shape[1])))
    split = batcher.features(encoder, rows, torch.device("cpu"))
    assert len(calls) > 1 and max(calls) == max(len(ids[i]) for i in rows)
    whole = encoder(batcher.inputs(rows, torch.device("cpu")))
    torch.testing.assert_close(split["sentence_embedding"], whole["sentence_embedding"], atol=1e-5, rtol=1e-4)
    assert torch.equal(split["attention_mask"], whole["attention_mask"])
    real = whole["attention_mask"].bool()
    torch.testing.assert_close(split["token_embeddings"][real], whole["token_embeddings"][real], atol=1e-5, rtol=1e-4)
    split["sentence_embedding"].sum().backward()
    grads = [p.grad for p in encoder.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_stage_features_packed_match_one_padded_batch_with_its_gradients(tiny_model: MultiTaskModel) -> None:
    """Packed (``contrastive.packing``): one pass over the batch's real tokens gives the padded batch's
    features and the same gradients on every backbone weight."""
    from mtst.data import Split
    from mtst.training.runtime.batches import Batcher

    texts = ["short", "a much longer sentence " * 30, "mid size text here", "tiny", "another long one " * 25]
    encoder = tiny_model.encoder.eval()
    ids = encoder.tokenize_ids(texts)
    batcher = Batcher(Split("train", texts, {}), ids, None, encoder.pad_id, [])
    rows = np.array([3, 1, 0, 4, 2])
    kind = encoder.pack_kind()
    assert kind is not None

    def run(pack: str | None) -> tuple[dict, list[torch.Tensor]]:
        encoder.zero_grad(set_to_none=True)
        feats = (
            batcher.features(encoder, rows, torch.device("cpu"), pack)
            if pack
            else encoder(batcher.inputs(rows, torch.device("cpu")))
        )
        (feats["sentence_embedding"] ** 2).sum().backward()
        return feats, [p.grad.clone() for p in encoder.backbone.parameters() if p.grad is not None]

    packed, packed_grads = run(kind)
    whole, whole_grads = run(None)
    torch.testing.assert_close(packed["sentence_embedding"], whole["sentence_embedding"], atol=1e-5, rtol=1e-4)
    assert torch.equal(packed["attention_mask"], whole["attention_mask"])
    real = whole["attention_mask"].bool()
    torch.testing.assert_close(packed["token_embeddings"][real], whole["token_embeddings"][real], atol=1e-5, rtol=1e-4)
    assert len(packed_grads) == len(whole_grads) > 0
    for got, want in zip(packed_grads, whole_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3)
    assert any(g.abs().sum() > 0 for g in packed_grads)
