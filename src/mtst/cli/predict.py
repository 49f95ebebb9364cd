"""``mtst evaluate`` and ``mtst predict``: a trained model on labelled or new rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mtst.cli.app import (
    BatchOpt,
    Precision,
    PrecisionOpt,
    RunArg,
    TextColumnOpt,
    app,
    console,
    err_console,
    interactive,
    load_export_encoder,
    load_trained,
)
from mtst.cli.io import (
    gather_pairs,
    gather_texts,
    model_pairs,
    prediction_cell,
    write_lines,
)
from mtst.errors import MtstError
from mtst.extras import require


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
    model = load_trained(run, precision)
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


def _show(run: Path, records: list[dict], output: Path | None, pairs: bool) -> None:
    """Predictions to ``output`` (JSON Lines), as a table on a terminal, else as JSON Lines on stdout."""
    if output is not None:
        from mtst.fileio import atomic_write_text

        atomic_write_text(output, "".join(json.dumps(r) + "\n" for r in records))
        err_console.print(f"wrote {len(records)} predictions to {output}", markup=False)
    elif interactive():
        table = Table(title=f"predictions · {run}")
        table.add_column("text", overflow="fold", max_width=60)
        if pairs:
            table.add_column("text_pair", overflow="fold", max_width=60)
        for task in (k for k in records[0] if k not in ("text", "text_pair")):
            table.add_column(task)
        for rec in records:
            firsts = [rec["text"]] + ([rec["text_pair"]] if pairs else [])
            table.add_row(*firsts, *(prediction_cell(v) for k, v in rec.items() if k not in ("text", "text_pair")))
        console.print(table)
    else:
        write_lines(json.dumps(rec) for rec in records)


PairsOpt = Annotated[
    str | None,
    typer.Option(help="Two columns of --data, e.g. premise,hypothesis: predict the pair tasks on each row's pair."),
]
TasksOpt = Annotated[
    str | None, typer.Option(help="Comma-separated tasks; default all of the input's kind (texts or pairs).")
]
BackendOpt = Annotated[
    str,
    typer.Option(
        help="torch, onnx (a directory written by mtst export: ONNX Runtime or OpenVINO, as it was "
        "exported), or auto: onnx for an export."
    ),
]


@app.command()
def predict(
    run: RunArg,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="File of texts (.txt, .csv, .jsonl...).")] = None,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to label.")] = None,
    text_column: TextColumnOpt = "text",
    pairs: PairsOpt = None,
    tasks: TasksOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write predictions as JSON Lines.")] = None,
    batch_size: BatchOpt = 32,
    backend: BackendOpt = "auto",
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
        from mtst.modeling.saved import is_export

        backend = "export" if is_export(run) else "torch"
    if backend in ("export", "onnx", "openvino"):
        rows = load_export_encoder(run, precision=precision).predictor.predict(
            items, tasks=wanted, batch_size=batch_size, pairs=second
        )
    elif backend == "torch":
        rows = load_trained(run, precision).predict(items, tasks=wanted, batch_size=batch_size, pairs=second)
    else:
        raise MtstError(f"--backend: {backend!r}; use auto, torch or onnx")
    records = [{"text": t, **r} for t, r in zip(items, rows, strict=True)]
    if second is not None:
        records = [{"text": t, "text_pair": p, **r} for t, p, r in zip(items, second, rows, strict=True)]
    _show(run, records, output, second is not None)
