"""OpenVINO: an export that runs int8 on CPUs with VNNI or AMX.

The ONNX graph of :mod:`mtst.export` is read by OpenVINO and, with
``quantize="int8"``, quantised statically (weights and activations) by NNCF
on calibration texts: about 3.3x sentence-transformers' fp32 speed at STS-B
Spearman within 0.01 point of fp32 (benchmarks/README.md, "Inference
precision"), where onnxruntime's dynamic int8 gave 1.9x at -0.4. Static
quantisation needs texts whose activations look like the ones it will see:
the user's own texts where given, else the bundled demo's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.errors import MtstError

OPENVINO_NAME = "openvino_model.xml"  # beside it, openvino_model.bin holds the weights
CALIBRATION_LIMIT = 300  # texts, NNCF's own default subset size


def require_openvino(quantize: str | None = None) -> Any:
    """The openvino module (and, for ``quantize="int8"``, nncf importable), or an error naming the extra."""
    try:
        import openvino
    except ImportError as exc:
        raise MtstError("the openvino format needs openvino and nncf: pip install 'mtst[openvino]'") from exc
    if quantize is not None:
        _nncf()
    return openvino


def _nncf() -> Any:
    # NNCF sends usage telemetry unless told it runs in CI; an export must not phone home.
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf
    except ImportError as exc:
        raise MtstError("int8 OpenVINO export needs nncf: pip install 'mtst[openvino]'") from exc
    return nncf


def demo_texts() -> list[str]:
    """The bundled demo's training texts: general English sentences, the calibration set when none is given."""
    from mtst.data import read_texts
    from mtst.demo import DEMO_DIR

    return read_texts(DEMO_DIR / "train.csv", "text")


def calibration_inputs(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[dict[str, np.ndarray]]:
    """The graph's inputs for each calibration text, one text each (padded positions would widen the
    activation ranges): at most ``CALIBRATION_LIMIT`` texts, evenly spread over the given ones."""
    if not texts:
        raise MtstError("--calibration: no texts to calibrate int8 on")
    step = max(1, len(texts) // CALIBRATION_LIMIT)
    inputs = []
    for text in list(texts[::step][:CALIBRATION_LIMIT]):
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        inputs.append({k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    return inputs


def convert(onnx_path: Path, target: Path, calibration: Sequence[dict[str, np.ndarray]] | None = None) -> None:
    """Write ``target`` (an OpenVINO IR) from ``onnx_path``; with ``calibration`` (the graph's inputs, from
    :func:`calibration_inputs`) quantised to static int8."""
    ov = require_openvino()
    model = ov.Core().read_model(str(onnx_path))
    if calibration is not None:
        nncf = _nncf()
        nncf.set_log_level(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):  # its progress bars; the CLI shows its own spinner
            model = nncf.quantize(
                model,
                nncf.Dataset(list(calibration)),
                model_type=nncf.ModelType.TRANSFORMER,  # keeps softmax and layer norms in floating point
                preset=nncf.QuantizationPreset.MIXED,  # asymmetric activations: GELU's outputs are not centred
                subset_size=len(calibration),
            )
    ov.save_model(model, str(target), compress_to_fp16=False)


class OpenVinoSession:
    """A compiled OpenVINO model behind onnxruntime's ``run(None, feeds)``, so one predictor serves both."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ov = require_openvino()
        # f32, not the bf16 OpenVINO picks by itself on bf16 CPUs: an int8 graph ran faster so (683 against
        # 575 sentences/s) and a fp32 export keeps fp32's embeddings exactly.
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, _names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(feeds)  # copies the outputs: the request's buffers are reused
        return [result[output] for output in self.compiled.outputs]
