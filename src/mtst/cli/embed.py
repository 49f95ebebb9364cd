"""``mtst encode``, ``similarity`` and ``search``: embeddings of texts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mtst.cli.app import (
    BatchOpt,
    ModelOpt,
    NormalizeOpt,
    PoolingOpt,
    Precision,
    PrecisionOpt,
    TextColumnOpt,
    app,
    console,
    default_model,
    err_console,
    interactive,
    load_any_encoder,
)
from mtst.cli.io import (
    encode_with_progress,
    gather_texts,
    write_embeddings,
    write_lines,
)
from mtst.errors import MtstError


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
    encoder = load_any_encoder(model or default_model(), pooling, normalize, precision)
    embeddings = encode_with_progress(encoder, items, batch_size)
    if output is not None:
        write_embeddings(output, items, embeddings)
        err_console.print(f"wrote {len(items)} embeddings of dim {embeddings.shape[1]} to {output}", markup=False)
        return
    if interactive():
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
    encoder = load_any_encoder(model or default_model(), pooling, precision=precision)
    score = float(encoder.similarity(a, b)[0, 0])
    if interactive():
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
    encoder = load_any_encoder(model or default_model(), pooling, precision=precision)
    hits = encoder.search(query, docs, top_k=top_k, batch_size=batch_size)
    if interactive():
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
