"""Checks on the real bundled all-MiniLM-L6-v2 (slower: seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtst.modeling.backbone import bundled_model_path
from mtst.modeling.encoder import SentenceEncoder
from mtst.modeling.encoder import native_bf16 as NATIVE_BF16  # before the suite makes it answer False

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


def test_demo_training_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mtst train` with no config: the bundled demo on the real backbone, well above chance, in the
    precision a user's machine gives it (bf16 where native, as the README's first command runs)."""
    from mtst.cli import main

    monkeypatch.setattr("mtst.training.trainer.native_bf16", NATIVE_BF16)  # the machine's own answer
    monkeypatch.setattr("mtst.modeling.encoder.native_bf16", NATIVE_BF16)

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


def test_reduced_precision_paths_keep_the_embedding(real_encoder: SentenceEncoder, tmp_path: Path) -> None:
    """bf16 inference and the int8 ONNX export stay close to fp32 on real text; int8 with one scale per
    tensor fell to a mean cosine of 0.958 on this model, one per channel keeps 0.99."""
    pytest.importorskip("onnxruntime")
    from mtst.export import OnnxPredictor, export_onnx
    from mtst.modeling.model import MultiTaskModel

    texts = _sentences(50)[1:]
    fp32 = real_encoder.encode(texts)

    def cosine(x: np.ndarray) -> np.ndarray:
        return (x * fp32).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(fp32, axis=1))

    encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    encoder.set_inference_precision("bf16")
    assert cosine(encoder.encode(texts)).min() > 0.999
    int8 = OnnxPredictor(export_onnx(MultiTaskModel.from_backbone({}, backbone="all-MiniLM-L6-v2"), tmp_path, "int8"))
    assert cosine(int8.encode(texts)).mean() > 0.98
