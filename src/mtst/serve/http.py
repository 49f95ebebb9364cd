"""uvicorn's HTTP protocol with a deadline on a connection's first request head.

uvicorn bounds the idle time between requests (keep-alive) but not the time a
client takes to send its headers, so a client that sends one byte a second
holds its connection for as long as it likes. Here a connection whose request
head (up to the blank line that ends it) has not arrived within the read
timeout is closed; the body's own deadline is :class:`mtst.serve.guard.Guard`'s.
Only the public ``asyncio.Protocol`` methods are overridden.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_END = b"\r\n\r\n"


class HeadDeadline:
    """A mixin for an ``asyncio.Protocol``: close the connection if its first request head is late."""

    timeout_s: float = 10.0  # set from ``ServeSettings.read_timeout_s`` in each server process

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.head_tail = b""
        self.head_timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            self.timeout_s, transport.close
        )

    def data_received(self, data: bytes) -> None:
        if self.head_timer is not None:
            seen = self.head_tail + data
            if HEAD_END in seen:
                self._stop_timer()
            else:
                self.head_tail = seen[-(len(HEAD_END) - 1) :]
        super().data_received(data)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _stop_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None


class H11WithDeadline(HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with :class:`HeadDeadline`."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: uvicorn itself falls back to h11
    HttpToolsWithDeadline: type | None = None
else:

    class HttpToolsWithDeadline(HeadDeadline, HttpToolsProtocol):  # type: ignore[no-redef]
        """uvicorn's httptools protocol (its default where httptools is installed) with :class:`HeadDeadline`."""


def protocol(timeout_s: float) -> type:
    """The protocol class uvicorn would pick ("auto"), with the head deadline set to ``timeout_s``."""
    HeadDeadline.timeout_s = timeout_s
    return HttpToolsWithDeadline or H11WithDeadline
