"""Pooled HTTP/1.1 connections to one upstream, for the fast path.

Why not aiohttp's client here: per request it builds a URL, a request and a
response object, runs timers and a payload stream, and that costs as much CPU
as the upstream's own answer.  On this path the request is already bytes, and
the response only has to be framed and passed on, so a connection is an
`asyncio.Protocol` with an `httptools` response parser (the C parser uvicorn
uses) that calls a `Sink` synchronously as bytes arrive: no await per chunk.

Rules kept from runtime/http/aio/proxy.py: connections are reused LIFO and dropped
after `idleConn` seconds idle; a connection the upstream closed (its EOF seen while
idle) is never handed out again, so a request is written only to a connection that
was open when it was taken; whether a failed request is sent again is the caller's
decision (runtime/core/forwarding.py's `retry_on_fresh_connection`: a failure says
whether its connection was reused and whether anything arrived; a POST that was
written is never sent twice); the upstream's framing (Content-Length, chunked or
close-delimited) is decoded here and re-framed by the sink.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol as TypingProtocol

import httptools

from llama_swap.runtime.core.forwarding import CLOSED_BEFORE_ANSWERING, reusable_after_answer
from llama_swap.runtime.http.socket_probe import PEEK_AFTER_IDLE, descriptor_closed, socket_fd

_CHUNKED = b"chunked"


class UpstreamFailure(Exception):
    """The upstream could not be reached or failed before a response head arrived.
    `reused`: on a pooled connection used before; `received_anything`: some bytes of an
    answer had arrived (together they decide whether the request is tried again)."""

    def __init__(
        self, message: str, *, reused: bool = False, received_anything: bool = False
    ) -> None:
        super().__init__(message)
        self.reused = reused
        self.received_anything = received_anything


class Sink(TypingProtocol):
    """Where one response goes as it arrives (relay.py)."""

    def on_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> None: ...

    def on_body(self, chunk: bytes) -> None: ...

    def flush(self) -> None: ...

    def on_complete(self, reusable: bool) -> None: ...

    def on_failure(self, error: UpstreamFailure) -> None: ...

    def on_abort(self, reason: str) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection; at most one exchange at a time (no pipelining)."""

    __slots__ = (
        "pool", "transport", "fd", "sink", "reused", "idle_since", "_parser", "_headers", "_reason",
        "_got_bytes", "_head_seen", "_length", "_chunked", "_skip", "_closed",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.fd: int | None = None  # the socket's descriptor once connected
        self.sink: Sink | None = None
        self.reused = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._got_bytes = False
        self._head_seen = False
        self._length: int | None = None
        self._chunked = False
        self._skip = False

    # --- used by the caller -------------------------------------------------------
    def send(self, data: bytes, sink: Sink) -> None:
        """Write one request; its response goes to `sink`."""
        self._reset()
        self.sink = sink
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        self._closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.close()

    @property
    def alive(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    # --- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fd = socket_fd(transport)  # asked of the kernel before a reuse (socket_probe)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        sink = self.sink
        if sink is None:  # bytes nobody asked for: the connection is not reusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            if self._head_seen:
                sink.on_abort(f"malformed response body: {exc}")
            else:
                sink.on_failure(UpstreamFailure(f"malformed response from the upstream: {exc}"))
            return
        if self.sink is not None:
            self.sink.flush()

    def eof_received(self) -> bool | None:
        # The upstream closed (while idle, a keep-alive timeout): never hand this
        # connection out again; close our side too, connection_lost settles any exchange.
        self._closed = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if not self._head_seen:
            why = f": {exc}" if exc else ""
            sink.on_failure(
                UpstreamFailure(
                    CLOSED_BEFORE_ANSWERING + why,
                    reused=self.reused,
                    received_anything=self._got_bytes,
                )
            )
        elif self._length is None and not self._chunked:
            sink.on_complete(False)  # a close-delimited body ends here
        else:
            sink.on_abort("the upstream closed the connection mid-response")

    def pause_writing(self) -> None:  # request bodies are small and written at once
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks -----------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"content-length":
            if value.strip().isdigit():
                self._length = int(value)
        elif lname == b"transfer-encoding":
            self._chunked = _CHUNKED in value.lower()
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response: wait for the real one
            self._skip = True
            return
        self._head_seen = True
        if self._chunked:
            self._length = None
        if self.sink is not None:
            self.sink.on_head(status, self._reason, self._headers, self._length)

    def on_message_begin(self) -> None:
        if self._skip:
            self._skip = False
            self._headers = []
            self._reason = b""
            self._length = None
            self._chunked = False

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and not self._skip:
            self.sink.on_body(body)

    def on_message_complete(self) -> None:
        if self._skip:
            return
        sink, self.sink = self.sink, None
        if sink is not None:
            keep_alive = self._parser.should_keep_alive() and not self._closed
            sink.on_complete(reusable_after_answer(keep_alive=keep_alive, chunked=self._chunked))


class UpstreamPool:
    """Idle connections to one `host:port`, newest first."""

    def __init__(self, host: str, port: int, *, connect_timeout: float | None, idle_timeout: float) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._idle: list[UpstreamConnection] = []
        self._all: set[UpstreamConnection] = set()

    def take(self) -> UpstreamConnection | None:
        """The most recently used idle connection still open, else None."""
        idle = self._idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            idle_for = now - conn.idle_since
            if (
                conn.alive
                and idle_for < self.idle_timeout
                and (idle_for < PEEK_AFTER_IDLE or not descriptor_closed(conn.fd))
            ):
                conn.reused = True
                return conn
            conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port
                )
        except TimeoutError as exc:
            raise UpstreamFailure(f"connecting to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            text = exc.strerror or str(exc) or type(exc).__name__
            raise UpstreamFailure(
                f"cannot connect to {self.host}:{self.port}: {text}"
            ) from exc
        self._all.add(conn)
        return conn

    def put(self, conn: UpstreamConnection) -> None:
        """Return a connection whose exchange completed cleanly."""
        if conn.alive:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def close_idle(self) -> None:
        """Close every idle connection (the upstream is about to stop)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def sweep(self) -> None:
        """Close connections idle longer than `idle_timeout`."""
        now = time.monotonic()
        keep = []
        for conn in self._idle:
            if conn.alive and now - conn.idle_since < self.idle_timeout:
                keep.append(conn)
            else:
                conn.close()
        self._idle = keep

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        self._all.clear()

    def __len__(self) -> int:
        return len(self._all)
