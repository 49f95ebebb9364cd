"""The server's front door: auth, body size, the time to send a body and concurrency, checked before
any parsing; every request counted in :class:`~mtst.serve.metrics.Metrics`.

:class:`Guard` is a plain ASGI middleware (Starlette's ``BaseHTTPMiddleware``
streams every response through an extra task, which costs a visible share of
a small request's time under load).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtst.config import ServeSettings
    from mtst.serve.metrics import Metrics


class _ClientGone(Exception):
    """The client closed the connection before its body arrived."""


class Guard:
    """Auth, payload size, the time to send a body, and concurrency, before any parsing; metrics for every request.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` streams every
    response through an extra task, which costs a visible share of a small
    request's time under load. A request's body is read here, within
    ``read_timeout_s`` (408 after), before it counts against ``max_concurrency``:
    clients that send slowly hold a socket, never a slot that a ready request needs.
    """

    OPEN_PATHS = ("/", "/health", "/openapi.json")
    OTHER_PATH = "other"  # the metrics label of every path the app does not serve
    READING_PER_SLOT = 4  # bodies being received at once, per concurrency slot, before 503

    def __init__(self, app: Any, settings: ServeSettings, metrics: Metrics, routes: set[str]) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.routes = routes  # known paths: metrics labels stay bounded whatever clients ask for
        self.in_flight = 0
        self.reading = 0  # requests whose body is still arriving (not yet admitted)

    def _reject(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, dict[str, str]] | None:
        settings = self.settings
        if settings.api_key and path not in self.OPEN_PATHS:
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
                return 401, "missing or wrong API key (header X-API-Key)", {}
        if method == "POST":
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                return 411, "a Content-Length header is required", {}
            if int(length) > settings.max_body_bytes:
                return 413, f"body of {int(length):,} bytes is over the limit of {settings.max_body_bytes:,}", {}
            if self.reading >= self.READING_PER_SLOT * settings.max_concurrency:
                return 503, "too many requests are still sending their body; retry shortly", {"Retry-After": "1"}
        return None

    def _over_capacity(self) -> tuple[int, str, dict[str, str]] | None:
        if self.in_flight >= self.settings.max_concurrency:
            detail = f"over the concurrency limit of {self.settings.max_concurrency} requests; retry shortly"
            return 429, detail, {"Retry-After": "1"}
        return None

    async def _read_body(self, receive: Any, length: int) -> bytes:
        """The whole body (at most ``length`` bytes), or TimeoutError after ``read_timeout_s``."""
        chunks: list[bytes] = []
        size = 0

        async def read() -> None:
            nonlocal size
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                body = message.get("body", b"")
                size += len(body)
                if size > length:  # more than Content-Length announced: stop reading
                    raise ValueError
                chunks.append(body)
                if not message.get("more_body", False):
                    return

        self.reading += 1
        try:
            await asyncio.wait_for(read(), self.settings.read_timeout_s)
        finally:
            self.reading -= 1
        return b"".join(chunks)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        started = time.perf_counter()
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        async def answer(code: int, detail: str, extra: dict[str, str]) -> None:
            await JSONResponse({"detail": detail}, status_code=code, headers=extra)(scope, receive, send_status)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            rejected = self._reject(scope["method"], scope["path"], headers)
            if rejected:
                await answer(*rejected)
                return
            if scope["method"] == "POST":
                try:
                    body = await self._read_body(receive, int(headers["content-length"]))
                except TimeoutError:
                    await answer(408, f"the body did not arrive within {self.settings.read_timeout_s:g} s", {})
                    return
                except ValueError:
                    await answer(400, "the body is longer than its Content-Length header", {})
                    return
                except _ClientGone:
                    status[0] = 499  # the client left (nginx's code): counted, nothing to answer
                    return
                receive = _replay(carry_invalid_utf8(body), receive)
            rejected = self._over_capacity()
            if rejected:
                await answer(*rejected)
                return
            self.in_flight += 1
            try:
                await self.app(scope, receive, send_status)
            finally:
                self.in_flight -= 1
        finally:
            path = scope["path"] if scope["path"] in self.routes else self.OTHER_PATH
            self.metrics.observe(path, status[0], time.perf_counter() - started)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the application the body already read, then what the client sends next."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def carry_invalid_utf8(body: bytes) -> bytes:
    """A JSON body with bytes that are not UTF-8, rewritten so that those bytes reach the handler as lone
    surrogates (``\\udcXX``), which the text check reports as 422 naming the text that holds them.

    A body that is valid UTF-8, or is no JSON even so, passes unchanged (and is answered as before).
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return json.dumps(json.loads(body.decode("utf-8", "surrogateescape"))).encode("ascii")
        except ValueError:
            return body
    return body
