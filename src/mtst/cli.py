"""The ``mtst`` command line.

Rich tables when a person is watching, plain JSON Lines when the output is
piped. Every user error ends with one ``error:`` line and exit status 2, and
nothing is written.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtst.cli_io import (
    OutputClosed,
    encode_with_progress,
    gather_pairs,
    gather_texts,
    model_pairs,
    prediction_cell,
    write_embeddings,
    write_lines,
)
from mtst.config import INFERENCE_PRECISIONS, POOLING_MODES, ServeSettings
from mtst.errors import MtstError
from mtst.extras import require
from mtst.training.strategies import help_text as strategy_help

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


def _interactive() -> bool:
    return sys.stdout.isatty()


Precision = Enum("Precision", {p: p for p in INFERENCE_PRECISIONS}, type=str)  # type: ignore[misc]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="Inference precision. bf16: about 1.7x faster on a CPU with native bf16 (AVX512-BF16, AMX), "
        "embeddings at cosine 0.9999+ to fp32's; auto: bf16 where native, else fp32.",
    ),
]


def _load(
    model: str, pooling: Pooling | None = None, normalize: bool | None = None, precision: Precision | None = None
) -> Any:
    from mtst.modeling.model import is_export, load_encoder

    if is_export(model):
        return _load_export(Path(model), pooling, normalize, precision)
    with err_console.status(f"loading {model}", spinner="dots") if _interactive() else nullcontext():
        encoder = load_encoder(model, pooling=pooling.value if pooling else None, normalize=normalize)
    if precision is not None:
        encoder.set_inference_precision(precision.value)
    return encoder


def _load_export(
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


def _default_model() -> str:
    from mtst.modeling.encoder import DEFAULT_BACKBONE

    return os.environ.get("MTST_MODEL", DEFAULT_BACKBONE)


@app.command()
def encode(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.")] = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="File: .txt (one a line), .csv, .jsonl, .parquet.")
    ] = None,
    text_column: TextColumnOpt = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write embeddings to .npy or .jsonl.")] = None,
    model: ModelOpt = "",
    pooling: PoolingOpt = None,
    normalize: NormalizeOpt = None,
    batch_size: BatchOpt = 32,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Embed sentences."""
    if output is not None and output.suffix.lower() not in (".npy", ".jsonl"):
        raise MtstError(f"--output must end in .npy or .jsonl, got {output.name!r}")
    items = gather_texts(texts, input, text_column, "nothing to encode: give texts as arguments or --input FILE")
    encoder = _load(model or _default_model(), pooling, normalize, precision)
    embeddings = encode_with_progress(encoder, items, batch_size)
    if output is not None:
        write_embeddings(output, items, embeddings)
        err_console.print(f"wrote {len(items)} embeddings of dim {embeddings.shape[1]} to {output}", markup=False)
        return
    if _interactive():
        table = Table(title=f"{len(items)} embeddings · dim {embeddings.shape[1]} · {encoder.pooling} pooling")
        table.add_column("#", justify="right")
        table.add_column("text", overflow="ellipsis", max_width=50)
        table.add_column("norm", justify="right")
        table.add_column("first values")
        for i, (text, vec) in enumerate(zip(items, embeddings, strict=True)):
            head = ", ".join(f"{x:+.3f}" for x in vec[:4])
            table.add_row(str(i), text, f"{float((vec**2).sum() ** 0.5):.3f}", f"[{head}, …]")
        console.print(table)
    else:
        write_lines(
            json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vec]})
            for text, vec in zip(items, embeddings, strict=True)
        )


@app.command()
def similarity(
    a: Annotated[str, typer.Argument(help="First text.")],
    b: Annotated[str, typer.Argument(help="Second text.")],
    model: ModelOpt = "",
    pooling: PoolingOpt = None,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Cosine similarity of two texts."""
    from mtst.data import check_texts

    check_texts([a, b], "arguments")
    encoder = _load(model or _default_model(), pooling, precision=precision)
    score = float(encoder.similarity(a, b)[0, 0])
    if _interactive():
        console.print(f"cosine similarity: [bold]{score:.4f}[/bold]")
    else:
        write_lines([f"{score:.6f}"])


@app.command()
def search(
    corpus: Annotated[Path, typer.Option("--corpus", "-c", help="Corpus file (.txt, .csv, .jsonl, .parquet).")],
    query: Annotated[list[str], typer.Option("--query", "-q", help="Query text (repeatable).")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Hits per query.")] = 5,
    text_column: TextColumnOpt = "text",
    model: ModelOpt = "",
    pooling: PoolingOpt = None,
    batch_size: BatchOpt = 32,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Semantic search: the corpus entries closest to each query."""
    from mtst.data import check_texts, read_texts

    check_texts(query, "--query")
    docs = read_texts(corpus, text_column)
    encoder = _load(model or _default_model(), pooling, precision=precision)
    hits = encoder.search(query, docs, top_k=top_k, batch_size=batch_size)
    if _interactive():
        for q, row in zip(query, hits, strict=True):
            table = Table(title=f"query: {q}")
            table.add_column("rank", justify="right")
            table.add_column("score", justify="right")
            table.add_column("line", justify="right")
            table.add_column("text", overflow="fold")
            for rank, (idx, score) in enumerate(row, start=1):
                table.add_row(str(rank), f"{score:.4f}", str(idx + 1), docs[idx])
            console.print(table)
    else:
        write_lines(
            json.dumps({"query": q, "rank": rank, "score": round(score, 6), "index": idx, "text": docs[idx]})
            for q, row in zip(query, hits, strict=True)
            for rank, (idx, score) in enumerate(row, start=1)
        )


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config; default: the bundled demo.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: a.b=value.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory from its checkpoint.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Run directory.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also print the whole resolved config (always in config.yaml).")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run already in the output directory.")
    ] = False,
) -> None:
    """Fine-tune a multi-task model (with no CONFIG: the bundled product-review demo)."""
    from mtst.config import apply_overrides, dump_config, load_config, validate_config
    from mtst.report import metrics_table, retention_table
    from mtst.training.loop import TrainingInterrupted
    from mtst.training.rundir import resume_config
    from mtst.training.trainer import train as run_training

    if resume is not None:
        if config is not None:
            raise MtstError("give either a CONFIG or --resume RUN_DIR, not both")
        if overwrite:
            raise MtstError("--resume continues the run in RUN_DIR; --overwrite would replace it: give one of them")
        cfg = resume_config(resume)
        if set_:
            cfg = validate_config(apply_overrides(cfg.model_dump(mode="json"), set_), str(resume / "config.yaml"))
    else:
        cfg = load_config(config, set_ or [])
    if output_dir is not None and resume is None:
        cfg.output_dir = str(output_dir)
    if verbose and int(os.environ.get("RANK", "0")) == 0:
        err_console.rule("resolved config")
        err_console.print(dump_config(cfg).rstrip(), highlight=False, markup=False)
        err_console.rule()
    try:
        result = run_training(
            cfg, resume=resume is not None, console=err_console, show_progress=not quiet, overwrite=overwrite
        )
    except TrainingInterrupted as exc:  # Ctrl-C: where it stopped and how to continue (exit 130, as a shell does)
        err_console.print(f"[bold yellow]{escape(str(exc))}[/bold yellow]", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch, process 0 reports
        return
    if result.validation:
        err_console.print(f"best validation {cfg.training.metric}: {100 * result.validation[cfg.training.metric]:.1f}")
    if result.test:
        console.print(metrics_table(result.test, f"test metrics · {result.strategy} · {result.run_dir}"))
    else:
        console.print(f"no test split; model and metrics are in {result.run_dir}", markup=False)
    kept = retention_table(result.retention)
    if kept is not None:
        console.print(kept)
    err_console.print(
        f"{', '.join(result.stages)}, {result.train_seconds:.0f} s · model: {result.run_dir / 'model'} · "
        f"metrics: {result.run_dir / 'metrics.json'}",
        highlight=False,
    )


@app.command()
def compare(
    config: Annotated[Path | None, typer.Argument(help="YAML config; default: the bundled demo.")] = None,
    strategies: Annotated[
        str,
        typer.Option(
            help=f"Comma-separated, a number after ':' where one is taken. auto: the default recipe, "
            f"chosen from the data; {strategy_help()}",
        ),
    ] = "frozen,heads,top_k:2,gradual,full",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per strategy (training.seed, +1, ...).")] = 1,
    train_fractions: Annotated[str, typer.Option(help="Learning curve: fractions of the training rows.")] = "1.0",
    poolings: Annotated[str | None, typer.Option(help="Linear probe per pooling, e.g. cls,mean,max.")] = None,
    sts: Annotated[Path | None, typer.Option(help="Pairs file (sentence1, sentence2, score) for STS.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report directory.")] = Path("runs/compare"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value: a.b=value.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run strategies side by side on your data and write a report that recommends one."""
    from mtst.compare import load_sweep, measure_encoders, run_sweep, save_results
    from mtst.compare_report import recommend, strategy_table, summarize, write_report

    sweep = load_sweep(config, set_ or [], strategies, seeds, train_fractions, poolings, sts, output)
    runs = sweep.runs()
    err_console.print(f"[bold]mtst compare[/bold] · {len(runs)} runs · report in {escape(str(output))}")
    results, failures = run_sweep(sweep, err_console, show_progress=not quiet)
    if not results:
        save_results(sweep, results, {}, failures)
        reasons = "; ".join(f"{f.spec.name}: {' '.join(f.error.split())[:200]}" for f in failures)
        raise MtstError(f"every run of the sweep failed ({reasons}); details in {output / 'results.json'}")
    encoders = measure_encoders(sweep, results, err_console)
    payload = save_results(sweep, results, encoders, failures)
    written = write_report(payload, output)
    rows = summarize(payload)
    table = strategy_table(rows, sweep.config.training.metric)
    console.print(table)
    for sentence in recommend(payload, rows):
        console.print(sentence.replace("**", "").replace("`", ""), highlight=False)
    err_console.print(f"wrote {written['markdown']}, {written['html']} and {output / 'results.json'}", markup=False)
    if failures:
        names = ", ".join(f.spec.name for f in failures)
        err_console.print(
            f"[bold red]error:[/bold red] {len(failures)} of {len(runs)} runs failed ({names}); the report covers "
            f"the others and lists the failures",
            highlight=False,
        )
        raise typer.Exit(1)


RunArg = Annotated[Path, typer.Argument(help="A run directory or a saved model directory.")]
DataOpt = Annotated[Path, typer.Option("--data", "-d", help="CSV, JSONL, Parquet or a saved datasets dir.")]


def _load_model(run: Path, precision: Precision | None = None) -> Any:
    from mtst.modeling.model import MultiTaskModel

    with err_console.status(f"loading {run}", spinner="dots") if _interactive() else nullcontext():
        model = MultiTaskModel.load(run)
    if precision is not None:
        model.encoder.set_inference_precision(precision.value)
    return model


@app.command()
def evaluate(
    run: RunArg,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Labelled rows: CSV, JSONL, Parquet or a saved datasets dir.")
    ] = None,
    sts: Annotated[
        Path | None, typer.Option(help="Scored pairs (sentence1, sentence2, score): the embedding's STS Spearman.")
    ] = None,
    text_column: TextColumnOpt = "text",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write metrics as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Directory for confusion-matrix PNGs.")] = None,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Accuracy, macro-F1, per-class scores and confusion matrices of a trained model (--data), and the
    Spearman of its embedding's cosine on scored pairs (--sts)."""
    from mtst.evaluate import evaluate_file, read_sts, sts_spearman
    from mtst.report import confusion_table, metrics_table, per_class_table, plot_confusion

    if data is None and sts is None:
        raise MtstError("give --data (labelled rows) and/or --sts (scored sentence pairs)")
    if plot is not None:
        require("plots", "--plot")
    pairs = read_sts(sts) if sts is not None else None  # read before the model: a bad file fails fast
    model = _load_model(run, precision)
    results: dict[str, Any] = evaluate_file(model, data, text_column) if data is not None else {}
    if results:
        console.print(metrics_table(results, f"{data}"))
    for task, m in results.items():
        per_class = per_class_table(task, m)
        if per_class is not None:
            console.print(per_class)
        if "confusion" in m:
            console.print(confusion_table(task, m))
    if pairs is not None:
        results["sts"] = {"spearman": sts_spearman(model.encoder, pairs), "n": len(pairs[2])}
        console.print(
            f"STS Spearman x100 on {sts} ({len(pairs[2])} pairs): {100 * results['sts']['spearman']:.2f}", markup=False
        )
    if plot is not None:
        for task, m in results.items():
            if "confusion" in m:
                err_console.print(f"wrote {plot_confusion(task, m, plot / f'confusion_{task}.png')}", markup=False)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        err_console.print(f"wrote {output}", markup=False)


@app.command()
def predict(
    run: RunArg,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="File of texts (.txt, .csv, .jsonl...).")] = None,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to label.")] = None,
    text_column: TextColumnOpt = "text",
    pairs: Annotated[
        str | None,
        typer.Option(help="Two columns of --data, e.g. premise,hypothesis: predict the pair tasks on each row's pair."),
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated tasks; default all of the input's kind (texts or pairs).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write predictions as JSON Lines.")] = None,
    batch_size: BatchOpt = 32,
    backend: Annotated[
        str,
        typer.Option(
            help="torch, onnx (a directory written by mtst export: ONNX Runtime or OpenVINO, as it was "
            "exported), or auto: onnx for an export."
        ),
    ] = "auto",
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Label and class probabilities per task (entity spans with character offsets for tagging tasks; the
    label set of a multi-label task, the value of a regression task; with --pairs, the pair tasks)."""
    if output is not None and output.suffix.lower() != ".jsonl":
        raise MtstError(f"--output writes JSON Lines: name it .jsonl, got {output.name!r}")
    second: list[str] | None = None
    wanted = [t.strip() for t in tasks.split(",") if t.strip()] if tasks is not None else None
    if wanted == []:
        raise MtstError("--tasks: name at least one task (leave the option out for every task)")
    found = model_pairs(run, data, text_column, wanted) if pairs is None and not texts else None
    if found is not None:
        columns, items, second = found
        err_console.print(
            f"{data}: no column {text_column!r}; reading pairs from its columns {columns} (--pairs)", markup=False
        )
    elif pairs is not None:
        if texts:
            raise MtstError("--pairs reads its pairs from --data; give no texts as arguments")
        items, second = gather_pairs(data, pairs)
    else:
        items = gather_texts(texts, data, text_column, "nothing to predict: give texts as arguments or --data FILE")
    if backend == "auto":
        from mtst.modeling.model import is_export

        backend = "export" if is_export(run) else "torch"
    if backend in ("export", "onnx", "openvino"):
        rows = _load_export(run, precision=precision).predictor.predict(
            items, tasks=wanted, batch_size=batch_size, pairs=second
        )
    elif backend == "torch":
        rows = _load_model(run, precision).predict(items, tasks=wanted, batch_size=batch_size, pairs=second)
    else:
        raise MtstError(f"--backend: {backend!r}; use auto, torch or onnx")
    records = [{"text": t, **r} for t, r in zip(items, rows, strict=True)]
    if second is not None:
        records = [{"text": t, "text_pair": p, **r} for t, p, r in zip(items, second, rows, strict=True)]
    if output is not None:
        from mtst.fileio import atomic_write_text

        atomic_write_text(output, "".join(json.dumps(r) + "\n" for r in records))
        err_console.print(f"wrote {len(records)} predictions to {output}", markup=False)
    elif _interactive():
        table = Table(title=f"predictions · {run}")
        table.add_column("text", overflow="fold", max_width=60)
        if second is not None:
            table.add_column("text_pair", overflow="fold", max_width=60)
        for task in rows[0]:
            table.add_column(task)
        for rec in records:
            firsts = [rec["text"]] + ([rec["text_pair"]] if second is not None else [])
            table.add_row(*firsts, *(prediction_cell(v) for k, v in rec.items() if k not in ("text", "text_pair")))
        console.print(table)
    else:
        write_lines(json.dumps(rec) for rec in records)


_SERVE = ServeSettings()  # the server's defaults, shown and used by the options below


@app.command()
def serve(
    run: RunArg,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="MTST_API_KEY", help="Require this key (header X-API-Key).", show_default=False)
    ] = None,
    max_texts: Annotated[int, typer.Option(min=1, help="Texts per request.")] = _SERVE.max_texts,
    max_chars: Annotated[int, typer.Option(min=1, help="Characters per text.")] = _SERVE.max_chars,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Request body size limit.")] = (
        _SERVE.max_body_bytes / 2**20
    ),
    max_concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight before 429.")] = (
        _SERVE.max_concurrency
    ),
    timeout: Annotated[float, typer.Option(min=0.01, help="Seconds per request before 504.")] = _SERVE.timeout_s,
    read_timeout: Annotated[
        float, typer.Option(min=0.01, help="Seconds a client has to send its request (408 or closed after).")
    ] = _SERVE.read_timeout_s,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long a batch waits for more requests.")] = (
        _SERVE.batch_wait_ms
    ),
    max_batch: Annotated[
        int, typer.Option(min=1, help="Texts one forward pass takes, gathered across requests.")
    ] = _SERVE.max_batch,
    max_padding: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Padded batches (exports, --no-packing): the share of padding at which a batch's texts are "
            "split into passes of similar lengths.",
        ),
    ] = _SERVE.max_padding,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes, each with its share of the CPU threads and its own /metrics; more than 1 "
            "helps only with many concurrent clients.",
        ),
    ] = _SERVE.workers,
    precision: PrecisionOpt = Precision(_SERVE.precision),
    packing: Annotated[
        bool,
        typer.Option(
            help="Pack each batch's texts end to end, so texts of mixed lengths cost their own tokens, not the "
            "longest one's (a trained model whose backbone gives the same outputs packed; exports pad).",
        ),
    ] = _SERVE.packing,
) -> None:
    """Serve a trained model over HTTP: /encode, /predict, /similarity, /info, /metrics, /openapi.json, a page at /."""
    from mtst.serve import serve as run_server

    settings = ServeSettings(
        max_texts=max_texts,
        max_chars=max_chars,
        max_body_bytes=int(max_body_mb * 2**20),
        max_concurrency=max_concurrency,
        timeout_s=timeout,
        read_timeout_s=read_timeout,
        batch_wait_ms=batch_wait_ms,
        max_batch=max_batch,
        max_padding=max_padding,
        workers=workers,
        precision=precision.value,
        packing=packing,
        api_key=api_key,
    )
    run_server(run, host, port, settings, announce=lambda line: err_console.print(line, highlight=False, markup=False))


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
    from mtst.compare import dir_mb
    from mtst.export import export as run_export

    texts = None
    if calibration is not None:
        from mtst.data import read_texts

        texts = read_texts(calibration, text_column)
    with err_console.status(f"exporting {run}", spinner="dots") if _interactive() else nullcontext():
        path = run_export(run, format.value, output, quantize, texts)
    size = dir_mb(path)
    err_console.print(f"wrote {format.value} export to {path} ({size:.1f} MB)", markup=False)


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
