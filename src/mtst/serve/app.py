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
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from mtst.config import ServeSettings
from mtst.data import text_problem
from mtst.extras import require
from mtst.modeling import tasktypes
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.predictions import Outputs, UnknownTaskError, input_tasks, records, spec_value
from mtst.serve.batcher import MicroBatcher
from mtst.serve.guard import Guard
from mtst.serve.metrics import Metrics

PAGE_PATH = Path(__file__).parent.parent / "static" / "index.html"


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


def task_info(spec: Any) -> dict[str, Any]:
    """What ``/info`` says of a task: its type and labels, and a multi-label task's decision thresholds."""
    info: dict[str, Any] = {"type": spec_value(spec, "type"), "labels": spec_value(spec, "labels")}
    if info["type"] == "multi_label":
        info["thresholds"] = tasktypes.thresholds(spec).round(4).tolist()
    return info
