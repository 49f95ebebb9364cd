"""The ``mtst`` application: its options, the loaders the commands share, and the entry point.

Rich tables when a person is watching, plain JSON Lines when the output is
piped. Every user error ends with one ``error:`` line and exit status 2, and
nothing is written. The commands live beside this module, one module per kind of work.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from mtst.cli.io import OutputClosed
from mtst.config import INFERENCE_PRECISIONS, POOLING_MODES
from mtst.errors import MtstError

app = typer.Typer(
    name="mtst",
    help="Multi-task sentence transformers: encode, train, compare, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


Pooling = Enum("Pooling", {mode: mode for mode in POOLING_MODES}, type=str)  # type: ignore[misc]


ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Backbone (name, HF id or local dir) or a trained mtst model/run."),
]
PoolingOpt = Annotated[Pooling | None, typer.Option(help="Pooling; default: the checkpoint's own.")]
NormalizeOpt = Annotated[
    bool | None, typer.Option("--normalize/--no-normalize", help="L2-normalise embeddings; default: checkpoint's.")
]
TextColumnOpt = Annotated[str, typer.Option(help="Column holding the text in CSV/JSONL/Parquet input.")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Texts per forward pass.")]


def _version(value: bool) -> None:
    if value:
        from mtst.version import dependency_versions

        typer.echo(" ".join(f"{name} {version}" for name, version in dependency_versions().items()))
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Versions of mtst and its libraries."),
    ] = False,
) -> None:
    """Multi-task sentence transformers: encode, train, compare, serve."""


def interactive() -> bool:
    return sys.stdout.isatty()


Precision = Enum("Precision", {p: p for p in INFERENCE_PRECISIONS}, type=str)  # type: ignore[misc]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="Inference precision. bf16: about 1.7x faster on a CPU with native bf16 (AVX512-BF16, AMX), "
        "embeddings at cosine 0.9999+ to fp32's; auto: bf16 where native, else fp32.",
    ),
]


def load_any_encoder(
    model: str, pooling: Pooling | None = None, normalize: bool | None = None, precision: Precision | None = None
) -> Any:
    from mtst.modeling.model import load_encoder
    from mtst.modeling.saved import is_export

    if is_export(model):
        return load_export_encoder(Path(model), pooling, normalize, precision)
    with err_console.status(f"loading {model}", spinner="dots") if interactive() else nullcontext():
        encoder = load_encoder(model, pooling=pooling.value if pooling else None, normalize=normalize)
    if precision is not None:
        encoder.set_inference_precision(precision.value)
    return encoder


def load_export_encoder(
    path: Path, pooling: Pooling | None = None, normalize: bool | None = None, precision: Precision | None = None
) -> Any:
    """The encoder of a directory written by ``mtst export --format onnx|openvino``."""
    from mtst.export import OnnxPredictor, check_precision

    if pooling is not None:
        raise MtstError(f"--pooling: {path} is an export, whose pooling was fixed when it was written")
    check_precision(None if precision is None else precision.value)
    encoder = OnnxPredictor(path).encoder
    if normalize is not None:
        encoder.normalize = normalize
    return encoder


def default_model() -> str:
    from mtst.modeling.encoder import DEFAULT_BACKBONE

    return os.environ.get("MTST_MODEL", DEFAULT_BACKBONE)


RunArg = Annotated[Path, typer.Argument(help="A run directory or a saved model directory.")]
DataOpt = Annotated[Path, typer.Option("--data", "-d", help="CSV, JSONL, Parquet or a saved datasets dir.")]


def load_trained(run: Path, precision: Precision | None = None) -> Any:
    from mtst.modeling.model import MultiTaskModel

    with err_console.status(f"loading {run}", spinner="dots") if interactive() else nullcontext():
        model = MultiTaskModel.load(run)
    if precision is not None:
        model.encoder.set_inference_precision(precision.value)
    return model


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for any user error)."""
    try:
        app(args=argv, prog_name="mtst")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MtstError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except OutputClosed:  # `mtst predict ... | head -1`: the reader has what it wanted
        return 0
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
