"""Checks on the real bundled all-MiniLM-L6-v2 (slower: seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtst.modeling.backbone import bundled_model_path
from mtst.modeling.encoder import SentenceEncoder

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _sentences(n: int = 50) -> list[str]:
    sst = DATA / "sst2" / "test.jsonl"
    if sst.exists():
        rows = [json.loads(line)["text"] for line in sst.read_text().splitlines()[:n]]
    else:
        rows = [f"Sentence number {i} talks about {w}." for i, w in enumerate(["cats", "tax law", "rain"] * 20)][:n]
    rows[0] = "a " + "very " * 300 + "long sentence that must be truncated the same way"
    return rows


def test_parity_with_sentence_transformers(real_encoder: SentenceEncoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(bundled_model_path()), device="cpu")
    texts = _sentences(50)
    expected = reference.encode(texts, batch_size=16, convert_to_numpy=True)
    ours = real_encoder.encode(texts, batch_size=16)
    cos = (ours * expected).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(expected, axis=1))
    assert cos.min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_similarity_ranks_paraphrase_above_unrelated(real_encoder: SentenceEncoder) -> None:
    sim = real_encoder.similarity(
        ["A man is playing a guitar."], ["Someone plays the guitar.", "The stock market fell sharply today."]
    )[0]
    assert sim[0] > sim[1] + 0.3


def test_demo_training_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mtst train` with no config: the bundled demo on the real backbone, well above chance."""
    from mtst.cli import main

    assert main(["train", "--quiet", "--output-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "category" in out and "sentiment" in out
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())["test"]
    assert metrics["category/accuracy"] > 0.8  # chance: 0.2
    assert metrics["sentiment/accuracy"] > 0.6  # chance: 0.33
    assert main(["predict", str(tmp_path / "demo"), "The blender broke after a week."]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["category"]["label"] == "kitchen"
    assert pred["sentiment"]["label"] == "negative"
    report = tmp_path / "eval.json"
    from mtst.demo import DEMO_DIR

    assert main(["evaluate", str(tmp_path / "demo"), "--data", str(DEMO_DIR / "test.csv"), "-o", str(report)]) == 0
    assert json.loads(report.read_text())["category"]["accuracy"] == metrics["category/accuracy"]
