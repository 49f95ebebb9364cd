from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from mtst.constants import IGNORE_INDEX
from mtst.errors import ModelLoadError
from mtst.modeling.heads import HeadSpec
from mtst.modeling.model import MultiTaskModel

from .conftest import SENTENCES, make_tasks


def _features(model: MultiTaskModel, texts: list[str]) -> dict:
    return model.encoder.tokenize(texts)


@pytest.mark.parametrize(
    ("pooling", "normalize", "head_type"),
    itertools.product(["cls", "mean", "max"], [False, True], ["classification", "token_classification"]),
)
def test_forward_features_dict(tiny_backbone_dir: Path, pooling: str, normalize: bool, head_type: str) -> None:
    model = MultiTaskModel.from_backbone(
        make_tasks(head_type), backbone=str(tiny_backbone_dir), pooling=pooling, normalize=normalize
    )
    feats = model(_features(model, SENTENCES))
    batch, seq = feats["input_ids"].shape
    assert feats["token_embeddings"].shape == (batch, seq, 32)
    assert feats["sentence_embedding"].shape == (batch, 32)
    assert feats["logits"]["category"].shape == (batch, 3)
    expected = (batch, 3) if head_type == "classification" else (batch, seq, 3)
    assert feats["logits"]["sentiment"].shape == expected
    labels = {
        "category": torch.tensor([0, 1, 2, 0, 1]),
        "sentiment": torch.zeros(expected[:-1], dtype=torch.long),
    }
    loss, per_task = model.compute_loss(feats, labels)
    assert torch.isfinite(loss)
    assert set(per_task) == {"category", "sentiment"}
    loss.backward()
    head_grad = model.heads["sentiment"][-1].weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0


def test_missing_labels_are_ignored_per_task(tiny_model: MultiTaskModel) -> None:
    """A row without a sentiment label adds nothing to that loss; its category still counts."""
    tiny_model.eval()
    feats = tiny_model(_features(tiny_model, SENTENCES[:2]))
    cat = torch.tensor([0, 2])
    _, full = tiny_model.compute_loss(feats, {"category": cat, "sentiment": torch.tensor([IGNORE_INDEX, 1])})
    row1_only = torch.nn.functional.cross_entropy(feats["logits"]["sentiment"][1:], torch.tensor([1]))
    assert torch.allclose(full["sentiment"], row1_only)
    both_cat = torch.nn.functional.cross_entropy(feats["logits"]["category"], cat)
    assert torch.allclose(full["category"], both_cat)


def test_task_without_any_label_adds_nothing(tiny_model: MultiTaskModel) -> None:
    feats = tiny_model(_features(tiny_model, SENTENCES[:2]))
    none = torch.full((2,), IGNORE_INDEX)
    loss, per_task = tiny_model.compute_loss(feats, {"category": torch.tensor([0, 1]), "sentiment": none})
    assert "sentiment" not in per_task
    assert torch.isfinite(loss)
    weighted, _ = tiny_model.compute_loss(
        feats, {"category": torch.tensor([0, 1]), "sentiment": none}, weights={"category": 2.0}
    )
    assert torch.allclose(weighted, 2 * loss)


def test_save_load_round_trip(tiny_model: MultiTaskModel, tmp_path: Path) -> None:
    tiny_model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    loaded = MultiTaskModel.load(tmp_path / "m")
    assert loaded.tasks == tiny_model.tasks
    assert loaded.encoder.pooling == tiny_model.encoder.pooling
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["tasks"]["category"]
    assert "label_columns" not in saved and "thresholds" not in saved  # unset keys: older releases read the file
    before = tiny_model.predict_proba(SENTENCES)
    after = loaded.predict_proba(SENTENCES)
    for task in before:
        assert torch.equal(torch.as_tensor(before[task]), torch.as_tensor(after[task]))
    assert (tiny_model.encode(SENTENCES) == loaded.encode(SENTENCES)).all()


def test_saving_twice_replaces_the_directory(tiny_model: MultiTaskModel, tmp_path: Path) -> None:
    tiny_model.save(tmp_path / "m")
    tiny_model.save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_pickle_model_is_refused(tiny_model: MultiTaskModel, tmp_path: Path) -> None:
    tiny_model.save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    (tmp_path / "m" / "model.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelLoadError, match="never unpickles"):
        MultiTaskModel.load(tmp_path / "m")


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not an mtst model"):
        MultiTaskModel.load(tmp_path)


def test_predict_gives_labels_and_probabilities(tiny_model: MultiTaskModel) -> None:
    rows = tiny_model.predict(SENTENCES[:2])
    assert len(rows) == 2
    assert rows[0]["category"]["label"] in {"books", "kitchen", "toys"}
    assert sum(rows[0]["sentiment"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ModelLoadError, match="unknown task"):
        tiny_model.predict(SENTENCES[:1], tasks=["nope"])


def test_head_spec_validation() -> None:
    with pytest.raises(ValueError, match="unique"):
        HeadSpec(labels=["a", "a"])
    with pytest.raises(ValueError):
        HeadSpec(labels=["a", "b"], type="regression")
    with pytest.raises(ValueError):
        HeadSpec(labels=["only-one"])
