"""Leaving Python: a trained model as a sentence-transformers directory or one ONNX graph.

* ``sentence-transformers``: the backbone, tokenizer, pooling (and normalise)
  modules in the layout ``SentenceTransformer(path)`` loads, so it gives the
  same embeddings; the task heads are saved beside it (``mtst_heads/``).
* ``onnx``: encoder and every prediction head in one graph with dynamic batch
  and sequence length, inputs ``input_ids`` and ``attention_mask``, outputs
  ``sentence_embedding`` (before normalisation) and ``logits_<task>``; the
  tokenizer and an ``mtst_onnx.json`` (tasks, labels, pooling) go beside it,
  which is all :class:`OnnxPredictor` needs. ``quantize="int8"`` adds dynamic
  int8 quantisation of the weights (onnxruntime).

LoRA adapters are merged into the backbone first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mtst.constants import ONNX_META
from mtst.errors import MtstError
from mtst.export.onnx import check_precision, export_onnx
from mtst.export.openvino import export_openvino
from mtst.export.runtime import ExportEncoder, OnnxPredictor
from mtst.export.sentence_transformers import export_sentence_transformers
from mtst.modeling.model import MultiTaskModel

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "FORMATS",
    "ExportEncoder",
    "OnnxPredictor",
    "check_precision",
    "export",
    "export_onnx",
    "export_openvino",
    "export_sentence_transformers",
]

FORMATS = ("sentence-transformers", "onnx", "openvino")


def export(
    run: str | Path,
    fmt: str,
    output: Path,
    quantize: str | None = None,
    calibration: Sequence[str] | None = None,
) -> Path:
    """Export a run or model directory; ``fmt`` is one of :data:`FORMATS`. ``calibration``: texts for
    ``openvino`` int8 (default: the bundled demo's)."""
    if fmt not in FORMATS:
        raise MtstError(f"--format: {fmt!r}; use {', '.join(FORMATS)}")
    if quantize and fmt == "sentence-transformers":
        raise MtstError("--quantize applies to --format onnx or openvino")
    if calibration is not None and not (fmt == "openvino" and quantize == "int8"):
        raise MtstError("--calibration applies to --format openvino --quantize int8 (static int8 needs texts)")
    model = MultiTaskModel.load(run)
    if (
        output.exists()
        and any(output.iterdir())
        and not (output / "modules.json").exists()
        and not (output / ONNX_META).exists()
    ):
        raise MtstError(f"{output} exists and is not an earlier export; choose an empty or new directory")
    if fmt == "onnx":
        return export_onnx(model, output, quantize)
    if fmt == "openvino":
        return export_openvino(model, output, quantize, calibration)
    return export_sentence_transformers(model, output)
