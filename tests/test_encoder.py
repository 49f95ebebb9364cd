from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtst.errors import ModelLoadError
from mtst.modeling.backbone import bundled_model_path, resolve_backbone
from mtst.modeling.encoder import SentenceEncoder, split_sorted

from .conftest import SENTENCES


def test_bundled_defaults_come_from_sentence_transformers_files() -> None:
    source = resolve_backbone("all-MiniLM-L6-v2")
    assert source.local
    assert (source.pooling, source.normalize, source.max_length) == ("mean", True, 256)
    assert Path(source.path) == bundled_model_path()


def test_plain_hf_directory_defaults(tiny_backbone_dir: Path) -> None:
    source = resolve_backbone(str(tiny_backbone_dir))
    assert (source.pooling, source.normalize, source.max_length) == ("mean", False, None)


def test_sentence_transformers_pooling_config_is_read(tmp_path: Path, tiny_backbone_dir: Path) -> None:
    for f in tiny_backbone_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    encoder = SentenceEncoder.from_pretrained(str(tmp_path))
    assert (encoder.pooling, encoder.normalize) == ("cls", False)


def test_broken_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_backbone(str(tmp_path))


def test_pickle_only_weights_are_refused(tmp_path: Path, tiny_backbone_dir: Path) -> None:
    (tmp_path / "config.json").write_text((tiny_backbone_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelLoadError, match="never unpickles"):
        resolve_backbone(str(tmp_path))


def test_missing_path_is_not_mistaken_for_a_hub_id() -> None:
    with pytest.raises(ModelLoadError, match="no such directory"):
        resolve_backbone("./does/not/exist")


@pytest.mark.parametrize(("pooling", "normalize"), itertools.product(["cls", "mean", "max"], [False, True]))
def test_encode_shapes_and_norms(tiny_encoder: SentenceEncoder, pooling: str, normalize: bool) -> None:
    emb = tiny_encoder.encode(SENTENCES, batch_size=2, pooling=pooling, normalize=normalize)
    assert isinstance(emb, np.ndarray)
    assert emb.shape == (len(SENTENCES), 32)
    assert np.isfinite(emb).all()
    norms = np.linalg.norm(emb, axis=1)
    if normalize:
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    else:
        assert not np.allclose(norms, 1.0, atol=1e-3)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_padding_never_changes_an_embedding(tiny_encoder: SentenceEncoder, pooling: str) -> None:
    """Each item of a padded batch equals its own single call (batch invariance)."""
    together = tiny_encoder.encode(SENTENCES, batch_size=len(SENTENCES), pooling=pooling)
    for i, text in enumerate(SENTENCES):
        alone = tiny_encoder.encode([text], pooling=pooling)[0]
        np.testing.assert_allclose(together[i], alone, atol=1e-5)
    other_batches = tiny_encoder.encode(SENTENCES, batch_size=2, pooling=pooling)
    np.testing.assert_allclose(together, other_batches, atol=1e-5)


def test_encode_keeps_caller_order(tiny_encoder: SentenceEncoder) -> None:
    forward = tiny_encoder.encode(SENTENCES)
    backward = tiny_encoder.encode(SENTENCES[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)


def test_encode_empty_list_and_single_string(tiny_encoder: SentenceEncoder) -> None:
    assert tiny_encoder.encode([]).shape == (0, 32)
    assert tiny_encoder.encode("hello").shape == (32,)
    assert isinstance(tiny_encoder.encode(["a"], convert_to="torch"), torch.Tensor)


def test_encode_restores_training_mode(tiny_encoder: SentenceEncoder) -> None:
    tiny_encoder.train()
    tiny_encoder.encode(["x"])
    assert tiny_encoder.training


def test_search_finds_an_exact_copy_first(tiny_encoder: SentenceEncoder) -> None:
    hits = tiny_encoder.search([SENTENCES[3]], SENTENCES, top_k=3)
    assert len(hits) == 1 and len(hits[0]) == 3
    assert hits[0][0][0] == 3
    assert hits[0][0][1] == pytest.approx(1.0, abs=1e-5)
    scores = [s for _, s in hits[0]]
    assert scores == sorted(scores, reverse=True)


def test_search_with_one_query_returns_its_hits(tiny_encoder: SentenceEncoder) -> None:
    """A string query gets ``[(index, cosine), ...]`` as the README shows; a list gets one such list each."""
    hits = tiny_encoder.search(SENTENCES[3], SENTENCES, top_k=2)
    assert [type(h) for h in hits] == [tuple, tuple]
    assert hits == tiny_encoder.search([SENTENCES[3]], SENTENCES, top_k=2)[0]
    assert tiny_encoder.search("anything", [], top_k=2) == []


def test_similarity_is_symmetric_cosine(tiny_encoder: SentenceEncoder) -> None:
    sim = tiny_encoder.similarity(SENTENCES[:2], SENTENCES[:2])
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)


def test_truncation_at_max_length(tiny_backbone_dir: Path) -> None:
    encoder = SentenceEncoder.from_pretrained(tiny_backbone_dir, max_length=8)  # a Path as well as a str
    ids = encoder.tokenize_ids(["word " * 50])
    assert len(ids[0]) == 8


@pytest.mark.parametrize("max_padding", [None, 0.0, 0.2, 0.5])
def test_padding_bounded_batches(max_padding: float | None) -> None:
    """Chunks keep the order, never pass batch_size, and pad at most max_padding of their tokens."""
    rng = np.random.default_rng(0)
    lengths = sorted(rng.integers(1, 60, size=200).tolist(), reverse=True)
    order = list(range(200))
    chunks = list(split_sorted(order, lengths, 16, max_padding))
    assert [i for c in chunks for i in c] == order
    assert all(1 <= len(c) <= 16 for c in chunks)
    if max_padding is None:
        assert [len(c) for c in chunks] == [16] * 12 + [8]
    else:
        for c in chunks:
            real = sum(lengths[i] for i in c)
            assert 1 - real / (len(c) * lengths[c[0]]) <= max_padding + 1e-12
        if max_padding <= 0.2:
            assert len(chunks) > 13  # the bound did split some chunks
