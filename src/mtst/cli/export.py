"""``mtst export``: a trained model as sentence-transformers, ONNX or OpenVINO."""

from __future__ import annotations

from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mtst.cli.app import (
    RunArg,
    TextColumnOpt,
    app,
    err_console,
    interactive,
)


class ExportFormat(str, Enum):
    sentence_transformers = "sentence-transformers"
    onnx = "onnx"
    openvino = "openvino"


@app.command()
def export(
    run: RunArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="Target format.")] = ExportFormat.onnx,
    quantize: Annotated[
        str | None,
        typer.Option(
            help="int8. onnx: dynamic int8 weights. openvino: static int8 (weights and activations, calibrated "
            "on --calibration texts), the fastest CPU path."
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="Texts like the ones the model will see (.txt one a line, .csv, .jsonl, .parquet) to calibrate "
            "--format openvino --quantize int8 on (at most 300 are used); default: the bundled demo's sentences."
        ),
    ] = None,
    text_column: TextColumnOpt = "text",
) -> None:
    """Write a trained model as a sentence-transformers directory, one ONNX graph (encoder + heads), or an
    OpenVINO model; `mtst encode --model`, `predict` and `serve` run the last two."""
    from mtst.export import export as run_export
    from mtst.fileio import dir_mb

    texts = None
    if calibration is not None:
        from mtst.data import read_texts

        texts = read_texts(calibration, text_column)
    with err_console.status(f"exporting {run}", spinner="dots") if interactive() else nullcontext():
        path = run_export(run, format.value, output, quantize, texts)
    size = dir_mb(path)
    err_console.print(f"wrote {format.value} export to {path} ({size:.1f} MB)", markup=False)
