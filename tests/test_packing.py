"""Packed inference: texts laid end to end in rows give each text what its padded pass gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtst.modeling.encoder import SentenceEncoder, pad_batch
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.packing import PACK_TOKENS, block_mask, pack_rows, packed_inputs, probe
from tests.conftest import SENTENCES, make_tasks

TEXTS = [*SENTENCES, "ok", "a much longer text than the others, " * 6, "two words"]


@pytest.mark.parametrize(
    "lengths, width",
    [([5, 3, 9, 2, 2, 7], 10), ([64] * 3, 64), ([1], 64), ([70, 3, 4], 70), ([], 64)],
)
def test_pack_rows_places_every_text_once_within_the_width(lengths: list[int], width: int) -> None:
    rows = pack_rows(lengths, width)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= width for row in rows)
    # first fit, longest first: no two rows could be merged
    totals = sorted(sum(lengths[i] for i in row) for row in rows)
    assert len(totals) < 2 or totals[0] + totals[1] > width


def test_packed_inputs_restart_positions_and_map_back() -> None:
    seqs = [[101, 5, 6, 102], [101, 7, 102], [101, 102]]
    batch = pad_batch(seqs, 0)
    packed = packed_inputs(batch["input_ids"], batch["attention_mask"])
    assert packed["input_ids"].shape[0] == 1 and packed["input_ids"].shape[1] == 9  # 9 real tokens, one row
    for i, seq in enumerate(seqs):
        where = packed["segment"][0] == i
        assert packed["input_ids"][0][where].tolist() == seq
        assert packed["position_ids"][0][where].tolist() == list(range(len(seq)))
        flat = batch["input_ids"].reshape(-1)
        assert flat[packed["source"][0][where]].tolist() == seq
    assert PACK_TOKENS >= 9


def test_block_mask_lets_a_text_see_only_itself() -> None:
    segment = torch.tensor([[0, 0, 1, 1, 1, -1]])
    mask = block_mask(segment, "4d")[0, 0]
    assert mask[0].tolist() == [True, True, False, False, False, False]
    assert mask[3].tolist() == [False, False, True, True, True, False]
    assert mask[5].tolist() == [False] * 5 + [True]  # padding sees itself only: no empty softmax row
    assert block_mask(segment, "3d").dtype == torch.long
    with pytest.raises(ValueError, match="4d, 3d"):
        block_mask(segment, "2d")


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_packed_inference_matches_padded(tiny_backbone_dir: Path, pooling: str) -> None:
    torch.manual_seed(0)
    tasks = make_tasks()
    tasks["tags"] = tasks["category"].model_copy(update={"type": "token_classification", "labels": ["O", "B-X"]})
    model = MultiTaskModel.from_backbone(tasks, backbone=str(tiny_backbone_dir), pooling=pooling).eval()
    padded = model.outputs(TEXTS, model.text_tasks, 4, 0.2)
    emb, probs = padded.embeddings, padded.probs
    assert model.encoder.set_packing(True) and model.encoder.packing in ("4d", "3d")
    packed = model.outputs(TEXTS, model.text_tasks, 4, 0.2)
    packed_emb, packed_probs = packed.embeddings, packed.probs
    np.testing.assert_allclose(packed_emb, emb, atol=1e-5)
    for task in ("category", "sentiment"):
        np.testing.assert_allclose(packed_probs[task], probs[task], atol=1e-5)
    for got, want in zip(packed_probs["tags"], probs["tags"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    model.encoder.set_packing(False)
    unpacked = model.encoder.encode(TEXTS)
    model.encoder.set_packing(True)
    np.testing.assert_allclose(model.encoder.encode(TEXTS), unpacked, atol=1e-6)


def test_packed_batches_ignore_max_padding_only_without_gradients(tiny_encoder: SentenceEncoder) -> None:
    ids = tiny_encoder.tokenize_ids(TEXTS)
    with torch.inference_mode():
        padded = [chunk for chunk, _ in tiny_encoder.length_sorted_batches(ids, 64, max_padding=0.0)]
        assert len(padded) > 1
        tiny_encoder.set_packing(True)
        assert [len(c) for c, _ in tiny_encoder.length_sorted_batches(ids, 64, max_padding=0.0)] == [len(TEXTS)]
    assert len([c for c, _ in tiny_encoder.length_sorted_batches(ids, 64, max_padding=0.0)]) == len(padded)


def test_training_passes_are_never_packed(tiny_encoder: SentenceEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_encoder.set_packing(True)
    calls: list[dict] = []
    forward = tiny_encoder.backbone.forward
    monkeypatch.setattr(tiny_encoder.backbone, "forward", lambda **kw: calls.append(kw) or forward(**kw))
    batch = tiny_encoder.tokenize(TEXTS[:3])
    tiny_encoder(dict(batch))["sentence_embedding"].sum().backward()
    assert "position_ids" not in calls[-1]
    with torch.no_grad():
        tiny_encoder(dict(batch))
    assert "position_ids" in calls[-1]


def test_a_backbone_that_differs_packed_pads_instead(
    tiny_encoder: SentenceEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positions counted another way (as RoBERTa counts from its padding id) change the outputs: the probe
    finds no agreeing mask, packing stays off, and inference pads as before."""
    forward = tiny_encoder.backbone.forward

    def shifted(**kw):  # type: ignore[no-untyped-def]
        if "position_ids" in kw:
            kw["position_ids"] = kw["position_ids"] + 2
        return forward(**kw)

    monkeypatch.setattr(tiny_encoder.backbone, "forward", shifted)
    assert probe(tiny_encoder.backbone, tiny_encoder.tokenize_ids(TEXTS[:2]), tiny_encoder.pad_id) is None
    assert tiny_encoder.set_packing(True) is False and tiny_encoder.packing is None
    expected = tiny_encoder.encode(TEXTS)
    np.testing.assert_allclose(tiny_encoder.encode(TEXTS), expected, atol=0)


def test_a_backbone_without_position_ids_pads_instead(
    tiny_encoder: SentenceEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    forward = tiny_encoder.backbone.forward

    def strict(input_ids, attention_mask=None):  # type: ignore[no-untyped-def]  # as DistilBERT's takes
        return forward(input_ids=input_ids, attention_mask=attention_mask)

    monkeypatch.setattr(tiny_encoder.backbone, "forward", strict)
    assert tiny_encoder.set_packing(True) is False
    assert tiny_encoder.set_packing(False) is False
