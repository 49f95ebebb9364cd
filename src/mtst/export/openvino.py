"""OpenVINO: an export that runs int8 on CPUs with VNNI or AMX.

The ONNX graph of :mod:`mtst.export` is read by OpenVINO and, with
``quantize="int8"``, quantised statically (weights and activations) by NNCF
on calibration texts: about 3.3x sentence-transformers' fp32 speed at STS-B
Spearman within 0.01 point of fp32 on a CPU with VNNI (benchmarks/README.md,
"Inference precision"), where onnxruntime's dynamic int8 gave 1.9x at -0.4.
Without int8 dot-product instructions (an AVX2-only CPU) the same graph ran no
faster than fp32 while onnxruntime's dynamic int8 still gave 1.9x, so such a
CPU is named when an int8 model is exported or loaded on it
(:func:`int8_dot_product`). Static quantisation needs texts whose
activations look like the ones it will see: the user's own texts where
given, else the bundled demo's.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.constants import ONNX_META
from mtst.errors import MtstError
from mtst.export.onnx import ONNX_NAME, write_onnx
from mtst.fileio import atomic_directory
from mtst.modeling.model import MultiTaskModel

logger = logging.getLogger(__name__)

OPENVINO_NAME = "openvino_model.xml"  # beside it, openvino_model.bin holds the weights
CALIBRATION_LIMIT = 300  # texts, NNCF's own default subset size
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo's names for int8 dot products
NO_INT8_NOTE = (
    "this CPU has no int8 dot-product instructions (VNNI or AMX): OpenVINO's static int8 runs no faster "
    "than fp32 here (benchmarks/README.md, 'Inference precision'); `--format onnx --quantize int8` is the faster "
    "int8 path on such a CPU"
)


def int8_dot_product(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU multiplies int8 natively (AVX512-VNNI, AVX-VNNI or AMX), where OpenVINO's int8 pays;
    None where that cannot be told (no ``/proc/cpuinfo``, a CPU that is not x86)."""
    import platform

    import torch

    probes = ("_is_vnni_supported", "_is_amx_tile_supported")  # torch.cpu's own (avx512_vnni and AMX only)
    if any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes):
        return True
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return None
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return None if flags is None else any(flag in flags for flag in INT8_FLAGS)


@functools.cache
def note_slow_int8() -> None:
    """Warn (once a process) where an int8 OpenVINO model is made or run on a CPU it does not speed up."""
    if int8_dot_product() is False:
        logger.warning(NO_INT8_NOTE)


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

    def __init__(self, path: Path, threads: int | None = None, int8: bool = False) -> None:
        ov = require_openvino()
        if int8:
            note_slow_int8()
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


def export_openvino(
    model: MultiTaskModel, output: Path, quantize: str | None = None, calibration: Sequence[str] | None = None
) -> Path:
    """The ONNX export read into OpenVINO (``openvino_model.xml``/``.bin`` instead of ``model.onnx``);
    ``quantize="int8"`` quantises it statically on ``calibration`` texts (default: the bundled demo's)."""
    if quantize not in (None, "int8"):
        raise MtstError(f"--quantize: {quantize!r} is not supported; use int8")
    require_openvino(quantize)  # a missing extra fails before anything is traced or written
    if quantize == "int8":
        note_slow_int8()
    with atomic_directory(output) as tmp:
        write_onnx(model, tmp, None)
        inputs = None
        if quantize == "int8":
            texts = list(calibration) if calibration is not None else demo_texts()
            inputs = calibration_inputs(model.encoder.tokenizer, texts, model.encoder.max_length)
        convert(tmp / ONNX_NAME, tmp / OPENVINO_NAME, inputs)
        (tmp / ONNX_NAME).unlink()
        meta = json.loads((tmp / ONNX_META).read_text(encoding="utf-8"))
        meta.update(
            runtime="openvino",
            quantize=quantize,
            calibration_texts=None if inputs is None else len(inputs),
        )
        (tmp / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n")
    return output
