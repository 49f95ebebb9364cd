"""``mtst serve``: a trained model or an export over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from mtst.cli.app import (
    Precision,
    PrecisionOpt,
    RunArg,
    app,
    err_console,
)
from mtst.config import ServeSettings

_SERVE = ServeSettings()  # the server's defaults, shown and used by the options below


HostOpt = Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server to the network.")]
PortOpt = Annotated[int, typer.Option(min=1, max=65535)]
KeyOpt = Annotated[
    str | None, typer.Option(envvar="MTST_API_KEY", help="Require this key (header X-API-Key).", show_default=False)
]
TextsOpt = Annotated[int, typer.Option(min=1, help="Texts per request.")]
CharsOpt = Annotated[int, typer.Option(min=1, help="Characters per text.")]
BodyOpt = Annotated[float, typer.Option(min=0.001, help="Request body size limit.")]
ConcurrencyOpt = Annotated[int, typer.Option(min=1, help="Requests in flight before 429.")]
TimeoutOpt = Annotated[float, typer.Option(min=0.01, help="Seconds per request before 504.")]
ReadTimeoutOpt = Annotated[
    float, typer.Option(min=0.01, help="Seconds a client has to send its request (408 or closed after).")
]
WaitOpt = Annotated[float, typer.Option(min=0, help="How long a batch waits for more requests.")]
BatchOpt = Annotated[int, typer.Option(min=1, help="Texts one forward pass takes, gathered across requests.")]
PaddingOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Padded batches (exports, --no-packing): the share of padding at which a batch's texts are "
        "split into passes of similar lengths.",
    ),
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Server processes, each with its share of the CPU threads and its own /metrics; more than 1 "
        "helps only with many concurrent clients.",
    ),
]
PackingOpt = Annotated[
    bool,
    typer.Option(
        help="Pack each batch's texts end to end, so texts of mixed lengths cost their own tokens, not the "
        "longest one's (a trained model whose backbone gives the same outputs packed; exports pad).",
    ),
]


@app.command()
def serve(
    run: RunArg,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    api_key: KeyOpt = None,
    max_texts: TextsOpt = _SERVE.max_texts,
    max_chars: CharsOpt = _SERVE.max_chars,
    max_body_mb: BodyOpt = _SERVE.max_body_bytes / 2**20,
    max_concurrency: ConcurrencyOpt = _SERVE.max_concurrency,
    timeout: TimeoutOpt = _SERVE.timeout_s,
    read_timeout: ReadTimeoutOpt = _SERVE.read_timeout_s,
    batch_wait_ms: WaitOpt = _SERVE.batch_wait_ms,
    max_batch: BatchOpt = _SERVE.max_batch,
    max_padding: PaddingOpt = _SERVE.max_padding,
    workers: WorkersOpt = _SERVE.workers,
    precision: PrecisionOpt = Precision(_SERVE.precision),
    packing: PackingOpt = _SERVE.packing,
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
