"""``onnx``: encoder and every prediction head in one graph with dynamic batch and sequence length, inputs
``input_ids`` and ``attention_mask``, outputs ``sentence_embedding`` (before normalisation) and
``logits_<task>``; the tokenizer and an ``mtst_onnx.json`` (tasks, labels, pooling) go beside it, which
is all :class:`~mtst.export.runtime.OnnxPredictor` needs. ``quantize="int8"`` adds dynamic int8
quantisation of the weights (onnxruntime)."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from mtst.constants import ONNX_META
from mtst.errors import MtstError
from mtst.export.common import plain_model
from mtst.fileio import atomic_directory
from mtst.modeling.model import MultiTaskModel

ONNX_NAME = "model.onnx"
PAIRS_NAME = "pairs.onnx"  # the pair heads, where the model has pair tasks


class _Graph(nn.Module):
    """Encoder + prediction heads as a tensor-in, tensors-out module for tracing."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.tasks = model.text_tasks

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model({"input_ids": input_ids, "attention_mask": attention_mask}, tasks=self.tasks)
        return (feats["sentence_embedding"], *(feats["logits"][t] for t in self.tasks))


class _PairGraph(nn.Module):
    """The pair heads on two texts' pooled embeddings (the encoder graph gives them)."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.tasks = [t for t in model.prediction_tasks if t not in model.text_tasks]

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model.forward_heads({"sentence_embedding": first, "pair_embedding": second}, self.tasks)
        return tuple(feats["logits"][t] for t in self.tasks)


def _export_pair_heads(model: MultiTaskModel, path: Path) -> list[str]:
    """``pairs.onnx``: the pair heads, from the two embeddings of each pair to each pair task's logits."""
    graph = _PairGraph(model).eval()
    outputs = [f"logits_{t}" for t in graph.tasks]
    sample = torch.randn(2, model.encoder.dim)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (sample, sample.flip(0)),
            str(path),
            input_names=["first", "second"],
            output_names=outputs,
            dynamic_shapes={"first": {0: batch}, "second": {0: batch}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return outputs


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Errors only from ``name`` meanwhile: the ONNX exporter logs a warning per torchvision operator it
    skips when torchvision is not installed, which an mtst graph never uses."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(model: MultiTaskModel, output: Path, quantize: str | None = None) -> Path:
    """One ONNX graph for encoder and heads, with the tokenizer and task metadata beside it."""
    with atomic_directory(output) as tmp:
        write_onnx(model, tmp, quantize)
    return output


def check_precision(precision: str | None) -> None:
    """Refuse a reduced inference precision for an export: its precision was fixed when it was written
    (``--quantize``); ``fp32`` and ``auto`` (the best the export has) run it as it is."""
    if precision not in (None, "fp32", "auto"):
        raise MtstError(
            f"--precision {precision}: an export runs at the precision it was written with (--quantize at "
            "export); --precision applies to a trained model"
        )


def write_onnx(model: MultiTaskModel, tmp: Path, quantize: str | None) -> None:
    """The ONNX export's files, written into ``tmp``."""
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MtstError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'mtst[onnx]'") from exc
    model = plain_model(model).eval()
    graph = _Graph(model).eval()
    sample = model.encoder.tokenize(["an example sentence for export", "a second one"])
    outputs = ["sentence_embedding", *(f"logits_{t}" for t in graph.tasks)]
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2, max=model.encoder.max_length)
    with torch.no_grad(), warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecations
        torch.onnx.export(
            graph,
            (sample["input_ids"], sample["attention_mask"]),
            str(tmp / ONNX_NAME),
            input_names=["input_ids", "attention_mask"],
            output_names=outputs,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        plain = tmp / "model.fp32.onnx"
        graph_proto = onnx.load(str(tmp / ONNX_NAME))
        del graph_proto.graph.value_info[:]  # the exporter's traced shapes confuse re-inference
        onnx.save(graph_proto, str(plain))
        (tmp / ONNX_NAME).unlink()
        # One scale per output channel: with one per tensor the embeddings of all-MiniLM-L6-v2 fell to
        # cosine 0.958 of fp32's; per channel they keep 0.992 (benchmarks/README.md, "Inference precision").
        quantize_dynamic(str(plain), str(tmp / ONNX_NAME), weight_type=QuantType.QInt8, per_channel=True)
        plain.unlink()
    elif quantize is not None:
        raise MtstError(f"--quantize: {quantize!r} is not supported; use int8")
    pair_outputs = (
        _export_pair_heads(model, tmp / PAIRS_NAME) if len(model.text_tasks) < len(graph.model.prediction_tasks) else []
    )
    model.encoder.tokenizer.save_pretrained(tmp)
    meta = {**model.config_dict(model.prediction_tasks), "outputs": outputs, "quantize": quantize}
    if pair_outputs:
        meta["pair_outputs"] = pair_outputs
    (tmp / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n")
