"""Export: sentence-transformers directory and ONNX graph, parity with the torch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtst.cli import main
from mtst.export import OnnxPredictor, export
from mtst.modeling.model import MultiTaskModel
from tests.conftest import SENTENCES, make_tasks


@pytest.fixture
def saved_model(tiny_backbone_dir: Path, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tasks = make_tasks()
    tasks["tags"] = tasks["category"].model_copy(update={"type": "token_classification", "labels": ["O", "B-X"]})
    model = MultiTaskModel.from_backbone(tasks, backbone=str(tiny_backbone_dir), pooling="max")
    return model.save(tmp_path / "model")


def assert_same_class_predictions(model: MultiTaskModel, export_predictor: OnnxPredictor) -> None:
    """The export's labels and probabilities of the sentence tasks are the torch model's."""
    ours = model.predict(SENTENCES, tasks=["category", "sentiment"])
    theirs = export_predictor.predict(SENTENCES, tasks=["category", "sentiment"])
    for a, b in zip(ours, theirs, strict=True):
        for task in ("category", "sentiment"):
            assert a[task]["label"] == b[task]["label"]
            assert np.allclose(
                list(a[task]["probabilities"].values()), list(b[task]["probabilities"].values()), atol=1e-4
            )


def test_sentence_transformers_export_gives_the_same_embeddings(saved_model: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    out = export(saved_model, "sentence-transformers", tmp_path / "st")
    st = SentenceTransformer(str(out), device="cpu")
    model = MultiTaskModel.load(saved_model)
    ours = model.encode(SENTENCES, convert_to="torch")
    theirs = torch.as_tensor(st.encode(SENTENCES, convert_to_numpy=True))
    cos = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
    assert cos.min() > 0.9999
    heads = json.loads((out / "mtst_heads" / "config.json").read_text())
    assert set(heads["tasks"]) == {"category", "sentiment", "tags"}


def test_onnx_matches_torch(saved_model: Path, tmp_path: Path) -> None:
    import logging

    heard: list[str] = []
    listener = logging.Handler()
    listener.emit = lambda record: heard.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("torch.onnx").addHandler(listener)  # torch.onnx logs to its own stderr handler
    try:
        out = export(saved_model, "onnx", tmp_path / "onnx")
    finally:
        logging.getLogger("torch.onnx").removeHandler(listener)
    assert not [m for m in heard if "torchvision" in m]  # the exporter's notes on operators mtst never uses
    model = MultiTaskModel.load(saved_model)
    onnx = OnnxPredictor(out)
    raw = onnx.run(SENTENCES)
    with torch.inference_mode():
        for i, text in enumerate(SENTENCES):  # one at a time: no padding on the torch side
            feats = model(model.encoder.tokenize([text]))
            assert np.allclose(raw["sentence_embedding"][i], feats["sentence_embedding"][0].numpy(), atol=1e-4)
            for task in ("category", "sentiment", "tags"):
                assert np.allclose(raw[f"logits_{task}"][i], feats["logits"][task][0].numpy(), atol=1e-4), task
    assert_same_class_predictions(model, onnx)
    assert np.allclose(onnx.encode(SENTENCES), model.encode(SENTENCES), atol=1e-4)
    # Token tasks: the same words, tags and entity spans as the torch model.
    texts = [*SENTENCES, "Price: $12.50, from Acme!"]
    for a, b in zip(model.predict(texts, tasks=["tags"]), onnx.predict(texts, tasks=["tags"]), strict=True):
        assert a["tags"]["words"] == b["tags"]["words"] and a["tags"]["tags"] == b["tags"]["tags"]
        assert [(e["start"], e["end"], e["type"]) for e in a["tags"]["entities"]] == [
            (e["start"], e["end"], e["type"]) for e in b["tags"]["entities"]
        ]
        assert np.allclose(
            [e["score"] for e in a["tags"]["entities"]], [e["score"] for e in b["tags"]["entities"]], atol=1e-4
        )
    assert any(r["tags"]["entities"] for r in model.predict(texts, tasks=["tags"]))  # the check above compared spans


def test_int8_export_and_cli(saved_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "q"
    assert main(["export", str(saved_model), "-o", str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    assert json.loads((out / "mtst_onnx.json").read_text())["quantize"] == "int8"
    assert main(["predict", str(out), "--backend", "onnx", "--tasks", "category", *SENTENCES[:2]]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in lines] == SENTENCES[:2] and "label" in lines[0]["category"]
    # without --backend, predict sees the export for what it is
    assert main(["predict", str(out), "--tasks", "category", *SENTENCES[:2]]) == 0
    assert [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()] == lines
    assert main(["evaluate", str(out), "--data", str(tmp_path / "none.csv")]) == 2  # a torch command names it
    assert "is an mtst export (ONNX or OpenVINO)" in capsys.readouterr().err.replace("\n", " ")
    assert (
        main(
            [
                "export",
                str(saved_model),
                "-o",
                str(tmp_path / "x"),
                "--format",
                "sentence-transformers",
                "--quantize",
                "int8",
            ]
        )
        == 2
    )


def test_export_batches_bound_padding_as_the_server_asks(saved_model: Path, tmp_path: Path) -> None:
    """A micro-batch of mixed lengths runs as tight batches, longest first, with the same outputs."""
    onnx = OnnxPredictor(export(saved_model, "onnx", tmp_path / "onnx"))
    masks: list[np.ndarray] = []
    run = onnx.session.run
    onnx.session.run = lambda names, feeds: masks.append(feeds["attention_mask"]) or run(names, feeds)
    texts = ["short", "a much longer text with many more words in it than the others have", *SENTENCES]
    whole = onnx.outputs(texts, ["category"], batch_size=64)
    assert len(masks) == 1 and 1 - masks[0].mean() > 0.2  # one batch, mostly padding
    masks.clear()
    split = onnx.outputs(texts, ["category"], batch_size=64, max_padding=0.2)
    assert len(masks) > 1
    assert [m.shape[1] for m in masks] == sorted((m.shape[1] for m in masks), reverse=True)  # longest first
    assert all(1 - m.mean() <= 0.2 for m in masks)
    assert np.allclose(whole.embeddings, split.embeddings, atol=1e-5)
    assert np.allclose(whole.probs["category"], split.probs["category"], atol=1e-5)


def test_an_exports_precision_is_its_own() -> None:
    from mtst.errors import MtstError
    from mtst.export import check_precision

    for precision in (None, "fp32", "auto"):  # auto: the best the export has, i.e. what it was written with
        check_precision(precision)
    with pytest.raises(MtstError, match="--precision bf16: an export runs at the precision it was written with"):
        check_precision("bf16")
