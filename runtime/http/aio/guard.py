"""Read timeouts and the connection limit for connections aiohttp serves.

Why a wrapper: aiohttp's server has a keep-alive timeout but no limit on the time to
receive a request head or between body bytes, and no connection limit.  Rather than
touch its internals, each connection's protocol is a `GuardedConnection` in front of a
regular `RequestHandler`: it passes every call through, stamps the time of each read,
and learns from the middleware stack when a request starts and ends (`track`), which
is all runtime/core/connections.py needs to tell the phases apart.  aiohttp writes to
the transport directly, so only reads pass through here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from llama_swap.runtime.core.connections import Phase
from llama_swap.runtime.http.connections import ConnectionTable, Tracked


class GuardedConnection(asyncio.Protocol):
    """One client connection served by aiohttp's `handler`, timed per phase.

    `previous` is the fast-path connection this one continues after a handoff (it
    already counts against the limit, and its head started at `head_started`)."""

    def __init__(self, handler: asyncio.Protocol, table: ConnectionTable,
                 previous: Tracked | None = None, head_started: float | None = None) -> None:
        now = time.monotonic()
        self.handler = handler
        self.table = table
        self.transport: asyncio.Transport | None = None
        self._previous = previous
        self._serving = False  # the handler has the connection (it was admitted)
        self._request: web.BaseRequest | None = None
        self._awaiting_head = True  # bytes (or the accept) since the last request ended
        self._head_started = head_started if head_started is not None else now
        self._last_read = now
        self._idle_since = now

    # --- asyncio.Protocol, passed through ---------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._previous is not None:
            self.table.replace(self._previous, self)
            self._previous = None
        elif not self.table.admit(self):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._serving = True
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        now = self._last_read = time.monotonic()
        if self._request is None and not self._awaiting_head:
            self._awaiting_head = True
            self._head_started = now
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.table.remove(self)
        if self._serving:
            self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    # --- what the middleware tells us ---------------------------------------------------
    def request_started(self, request: web.BaseRequest) -> None:
        self._request = request
        self._awaiting_head = False
        self._last_read = time.monotonic()  # the body gap counts from here at the earliest

    def request_finished(self) -> None:
        self._request = None
        self._idle_since = time.monotonic()

    # --- connections.Tracked -------------------------------------------------------------
    def phase(self) -> tuple[Phase, float]:
        request = self._request
        if request is not None:
            transport = self.transport
            if (not request.content.is_eof() and transport is not None
                    and transport.is_reading()):
                return Phase.BODY, self._last_read
            return Phase.BUSY, 0.0
        if self._awaiting_head:
            return Phase.HEAD, self._head_started
        return Phase.IDLE, self._idle_since

    def expire(self, phase: Phase) -> None:
        """An idle connection is closed politely; one stuck in a head or a body is cut."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if phase is Phase.IDLE:
            transport.close()
        else:
            transport.abort()


def guard_of(request: web.BaseRequest) -> GuardedConnection | None:
    """The guard of `request`'s connection, if it has one."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, GuardedConnection) else None


Handler = Callable[[web.Request], Any]


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """For a custom middleware stack (the default stack does this itself): tell the
    connection's guard when a request starts and ends."""
    guard = guard_of(request)
    if guard is None:
        return await handler(request)  # type: ignore[no-any-return]
    guard.request_started(request)
    try:
        return await handler(request)  # type: ignore[no-any-return]
    finally:
        guard.request_finished()
