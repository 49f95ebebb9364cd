"""``mtst serve``: a trained model behind HTTP (FastAPI + uvicorn).

Concurrent requests are micro-batched: each request's texts join a queue, and
one worker runs a single forward pass over everything that arrived within
``batch_wait_ms`` (up to ``max_batch`` texts), so throughput under load
approaches offline encoding. Limits fail fast with a status that names them:
too many texts or characters -> 422, body over the payload limit -> 413
(before any parsing or tokenisation), body not received within the read
timeout -> 408, over the concurrency cap -> 429 (only requests whose body has
arrived count), per-request timeout -> 504, missing API key -> 401. The API
schema is at ``/openapi.json`` and a page to try the model at ``/``; nothing
is fetched from elsewhere, so both work offline.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from mtst.config import ServeSettings
from mtst.data import text_problem
from mtst.errors import MtstError
from mtst.extras import require
from mtst.guard import Guard
from mtst.modeling import tasktypes
from mtst.modeling.model import MultiTaskModel, is_export
from mtst.modeling.predictions import Outputs, UnknownTaskError, input_tasks, records, spec_value
from mtst.serve_metrics import Metrics

PAGE_PATH = Path(__file__).parent / "static" / "index.html"


class TextsIn(BaseModel):
    texts: list[str] = Field(description="Texts to process, in order.")


class PredictIn(BaseModel):
    texts: list[str] | None = Field(default=None, description="Texts for the single-text tasks, in order.")
    pairs: list[list[str]] | None = Field(
        default=None, description="Pairs of texts [[a, b], ...] for the pair tasks, in order (instead of texts)."
    )
    tasks: list[str] | None = Field(
        default=None, min_length=1, description="Tasks to predict (at least one); default all of the input's kind."
    )


class EncodeIn(TextsIn):
    normalize: bool | None = Field(default=None, description="L2-normalise; default: the model's setting.")


class SimilarityIn(BaseModel):
    a: list[str] = Field(description="First list of texts.")
    b: list[str] = Field(description="Second list of texts; scores are cosine similarities a x b.")


class MicroBatcher:
    """Joins the texts of concurrent requests into one forward pass on a single worker thread."""

    def __init__(self, model: MultiTaskModel, settings: ServeSettings, metrics: Metrics) -> None:
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future]] | None = None
        self.task: asyncio.Task | None = None
        # One thread runs every forward pass: the model and its tokenizer are never used concurrently.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mtst-batch")

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str]) -> Outputs:
        """Embeddings and class probabilities of ``texts``, computed in a shared batch."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        assert self.queue is not None
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            size = len(items[0][0])
            deadline = loop.time() + self.settings.batch_wait_ms / 1000
            while size < self.settings.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
                items.append(item)
                size += len(item[0])
            items = [(texts, fut) for texts, fut in items if not fut.cancelled()]
            if not items:
                continue
            texts = [t for chunk, _ in items for t in chunk]
            self.metrics.observe_batch(len(texts))
            try:
                result = await loop.run_in_executor(self.executor, self._infer, texts)
            except Exception as exc:
                # One request's texts must not fail its neighbours': run each request alone, so that
                # only the one that breaks the forward pass gets the error. The worker keeps going.
                if len(items) == 1:
                    _settle(items[0][1], exc=exc)
                    continue
                for chunk, fut in items:
                    try:
                        _settle(fut, await loop.run_in_executor(self.executor, self._infer, chunk))
                    except Exception as single:
                        _settle(fut, exc=single)
                continue
            start = 0
            for chunk, fut in items:
                _settle(fut, result.rows(start, start + len(chunk)))
                start += len(chunk)

    @torch.inference_mode()
    def _infer(self, texts: list[str]) -> Outputs:
        """Every single-text task of the model (and the embeddings) in one forward pass."""
        model = self.model
        return model.outputs(texts, model.text_tasks, self.settings.max_batch, self.settings.max_padding)


def _settle(future: asyncio.Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Give a waiting request its result or error (unless it already gave up)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def text_problems(texts: Sequence[Any], field_name: str, max_chars: int) -> str | None:
    """The first text a request may not hold, as a message naming its index (None when all are fine).

    The same rule as the CLI: a text is a non-blank string of valid Unicode (no lone surrogates,
    which no tokenizer accepts) of at most ``max_chars`` characters.
    """
    for i, text in enumerate(texts):
        problem = text_problem(text)
        if problem:
            return f"{field_name}[{i}]: {problem}"
        if len(text) > max_chars:
            return f"{field_name}[{i}]: {len(text)} characters is over the limit of {max_chars}"
    return None


def create_app(model: MultiTaskModel, settings: ServeSettings | None = None, name: str = "model") -> Any:
    """The FastAPI application serving ``model``: a trained model or an export's ``OnnxPredictor``."""
    require("serve", "the HTTP server")
    from fastapi import FastAPI

    settings = settings or ServeSettings()
    model.eval()
    metrics = Metrics()
    batcher = MicroBatcher(model, settings, metrics)

    async def lifespan(app: Any) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="mtst model server",
        description=f"Multi-task sentence encoder `{name}`: tasks {', '.join(model.prediction_tasks)}.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN: blank pages offline
        redoc_url=None,
    )
    routes: set[str] = set()  # filled once every route is declared (below)
    app.add_middleware(Guard, settings=settings, metrics=metrics, routes=routes)
    _add_text_routes(app, model, settings, batcher)
    _add_info_routes(app, model, settings, metrics, name)
    routes.update(route.path for route in app.routes)
    return app


def _rounded(values: np.ndarray) -> list:
    # float64 first: a float32 rounded to 6 places still prints as 0.8123450040817261 in JSON
    return np.round(values.astype(np.float64), 6).tolist()


def _normalized(emb: np.ndarray) -> np.ndarray:
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _add_text_routes(app: Any, model: MultiTaskModel, settings: ServeSettings, batcher: MicroBatcher) -> None:
    """``/encode``, ``/predict`` and ``/similarity``: texts checked at the edge, then one shared forward pass."""
    from fastapi import HTTPException

    specs = model.task_specs()

    def check_texts(texts: Sequence[str], field_name: str = "texts") -> None:
        if not texts:
            raise HTTPException(422, f"{field_name}: give at least one text")
        if len(texts) > settings.max_texts:
            raise HTTPException(422, f"{field_name}: {len(texts)} texts is over the limit of {settings.max_texts}")
        problem = text_problems(texts, field_name, settings.max_chars)
        if problem:
            raise HTTPException(422, problem)

    async def run(texts: list[str]) -> Outputs:
        try:
            return await asyncio.wait_for(batcher.submit(texts), settings.timeout_s)
        except TimeoutError:
            raise HTTPException(504, f"no result within the {settings.timeout_s:g} s request timeout") from None
        except Exception as exc:  # this request's texts broke the forward pass (its neighbours' did not)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise HTTPException(500, f"these texts could not be processed: {reason}") from None

    @app.post("/encode")
    async def encode(body: EncodeIn) -> dict[str, Any]:
        check_texts(body.texts)
        emb = (await run(body.texts)).embeddings
        wanted = model.encoder.normalize if body.normalize is None else body.normalize
        emb = _normalized(emb) if wanted else emb
        return {"embeddings": _rounded(emb), "dim": int(emb.shape[1])}

    @app.post("/predict")
    async def predict(body: PredictIn) -> dict[str, Any]:
        if (body.texts is None) == (body.pairs is None):
            raise HTTPException(422, 'give "texts" (single-text tasks) or "pairs" (pair tasks), one of the two')
        try:
            tasks = input_tasks(specs, body.tasks, body.pairs is not None)
        except UnknownTaskError as exc:
            raise HTTPException(422, f"tasks: {exc}") from None
        if body.texts is not None:
            check_texts(body.texts)
            return {"predictions": records(body.texts, specs, await run(body.texts), tasks)}
        pairs = body.pairs or []
        bad = next((i for i, p in enumerate(pairs) if len(p) != 2), None)
        if bad is not None:
            raise HTTPException(422, f"pairs[{bad}]: a pair is two texts, got {len(pairs[bad])}")
        first, second = [a for a, _ in pairs], [b for _, b in pairs]
        check_texts(first, "pairs (first texts)")
        check_texts(second, "pairs (second texts)")
        emb = (await run([*first, *second])).embeddings
        out = Outputs(emb[: len(first)], model.pair_outputs(emb[: len(first)], emb[len(first) :], tasks))
        return {"predictions": records(first, specs, out, tasks)}

    @app.post("/similarity")
    async def similarity(body: SimilarityIn) -> dict[str, Any]:
        check_texts(body.a, "a")
        check_texts(body.b, "b")
        emb = _normalized((await run([*body.a, *body.b])).embeddings)
        return {"scores": _rounded(emb[: len(body.a)] @ emb[len(body.a) :].T)}


def _add_info_routes(app: Any, model: MultiTaskModel, settings: ServeSettings, metrics: Metrics, name: str) -> None:
    """``/health``, ``/info``, ``/metrics`` and the page at ``/``."""
    from fastapi.responses import HTMLResponse, PlainTextResponse

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        encoder = model.encoder
        limits = ("max_texts", "max_chars", "max_body_bytes", "max_concurrency", "timeout_s", "read_timeout_s")
        return {
            "model": name,
            "backbone": encoder.reference,
            "pooling": encoder.pooling,
            "normalize": encoder.normalize,
            "embedding_dim": encoder.dim,
            "max_length": encoder.max_length,
            "tasks": {t: task_info(s) for t, s in model.task_specs().items()},
            "limits": {key: getattr(settings, key) for key in limits},
            "workers": settings.workers,
            "precision": encoder.inference_precision,
            "packing": getattr(encoder, "packing", None) is not None,  # an export's graph takes padded batches
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> str:
        return metrics.render()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (
            PAGE_PATH.read_text(encoding="utf-8")
            .replace("__NAME__", json.dumps(name))
            .replace("__KEYED__", json.dumps(bool(settings.api_key)))
        )


SERVE_ENV = "MTST_SERVE_SPEC"


def check_port(host: str, port: int) -> None:
    """Fail with the port's name when it cannot be bound (before the server starts and logs)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MtstError(f"--host {host}: not an address this machine can bind ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise MtstError(f"--port {port}: cannot listen on {host}:{port} ({reason}); choose another port") from None


def serve(
    run: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Load a model and serve it until interrupted, in one process or several (``settings.workers``).

    The model is loaded and the port checked first, so that a bad run or a busy port fails
    once, with its message; ``announce`` then hears where the server listens.
    """
    require("serve", "mtst serve")
    import uvicorn

    settings = settings or ServeSettings()
    if settings.api_key is None:
        settings.api_key = os.environ.get("MTST_API_KEY") or None
    model = load_served(run, settings)
    check_port(host, port)
    if announce is not None:
        announce(f"serving {run} on http://{host}:{port} (a page to try it at /, the API schema at /openapi.json)")
    from mtst.serve_http import protocol

    http = protocol(settings.read_timeout_s)  # a late request head closes its connection
    workers = settings.workers
    if workers == 1:
        uvicorn.run(create_app(model, settings, str(run)), host=host, port=port, log_level="info", http=http)
        return
    del model
    threads = max(1, torch.get_num_threads() // workers)
    os.environ[SERVE_ENV] = json.dumps({"run": str(run), "settings": asdict(settings), "threads": threads})
    uvicorn.run(
        f"{__name__}:app_from_env", factory=True, workers=workers, host=host, port=port, log_level="info", http=http
    )


def app_from_env() -> Any:
    """The application of one server process started by :func:`serve` (reads its spec from the environment)."""
    from mtst.serve_http import protocol

    spec = json.loads(os.environ[SERVE_ENV])
    torch.set_num_threads(spec["threads"])
    protocol(spec["settings"]["read_timeout_s"])  # this process's connections get the same head deadline
    settings = ServeSettings(**spec["settings"])
    return create_app(load_served(spec["run"], settings), settings, spec["run"])


def load_served(run: str | Path, settings: ServeSettings) -> Any:
    """The model to serve: a trained model (at ``settings.precision``, which is set to what it resolved to),
    or an export of ``mtst export --format onnx|openvino``, run as it was exported."""
    if is_export(run):
        from mtst.export import OnnxPredictor, check_precision

        check_precision(settings.precision)
        return OnnxPredictor(run, threads=torch.get_num_threads())
    model = MultiTaskModel.load(run)
    settings.precision = model.encoder.set_inference_precision(settings.precision)
    settings.packing = model.encoder.set_packing(settings.packing)
    return model


def task_info(spec: Any) -> dict[str, Any]:
    """What ``/info`` says of a task: its type and labels, and a multi-label task's decision thresholds."""
    info: dict[str, Any] = {"type": spec_value(spec, "type"), "labels": spec_value(spec, "labels")}
    if info["type"] == "multi_label":
        info["thresholds"] = tasktypes.thresholds(spec).round(4).tolist()
    return info
