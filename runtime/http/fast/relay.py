"""Relay one upstream response to the client as it arrives, re-framed.

The sink of an `UpstreamConnection` (upstream.py): its
callbacks run inside the upstream connection's `data_received`, so a chunk is
written to the client without a task switch, and everything one read brought
(head and body of a small answer, or a burst of SSE events) goes out in one
`write`.  Hop-by-hop headers and those the upstream's `Connection` names are
dropped (runtime/core/forwarding.py), `Date`, `Server` and (for a body) `Content-Type:
application/octet-stream` are added when the upstream sent none (as aiohttp does
on the other path), a known length is kept and anything
else is sent chunked.  Event streams get `X-Accel-Buffering: no`.  The meter
(activity log, captures) sees the status, the headers and every chunk.

`done` resolves with True when the response was relayed whole, False when it
was cut off (the upstream died mid-body: the client connection is then closed
without a clean end, so the client sees a truncated response).
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp.http import SERVER_SOFTWARE

from llama_swap.runtime.core.error_body import ErrorAnswer
from llama_swap.runtime.core.forwarding import RAW, SMALL_BODY, dropped_names, stream_ended_early
from llama_swap.runtime.http.fast.headers import LazyHeaders
from llama_swap.runtime.http.fast.upstream import UpstreamConnection, UpstreamFailure

_SERVER = SERVER_SOFTWARE.encode()
_SSE = b"text/event-stream"
_date_cache: list[Any] = [0, b""]


def http_date() -> bytes:
    """The current `Date` value, formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True).encode()
    return _date_cache[1]  # type: ignore[no-any-return]


def answer_bytes(answer: ErrorAnswer, close: bool) -> bytes:
    """llama-swap's own complete answer (an error) as HTTP/1.1 bytes, with the framing and
    the `Date`/`Server` headers aiohttp gives its answers on the other path."""
    lines = [f"HTTP/1.1 {answer.status} {_reason(answer.status)}\r\n".encode()]
    for name, value in answer.headers:
        lines.append(f"{name}: {value}\r\n".encode())
    lines.append(b"Date: " + http_date() + b"\r\nServer: " + _SERVER + b"\r\n")
    lines.append(b"Content-Length: %d\r\n" % len(answer.body))
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    lines.append(answer.body)
    return b"".join(lines)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Relay:
    """The `Sink` for one exchange: writes to `transport`, shows `meter` what passes."""

    __slots__ = (
        "transport", "meter", "close_after", "done", "status", "body_bytes", "started",
        "conn", "failure", "written", "model_id", "_chunked", "_out", "_hold", "_sse",
    )

    def __init__(
        self, transport: asyncio.Transport, meter: Any, close_after: bool,
        done: asyncio.Future[bool], model_id: str = "",
    ) -> None:
        self.transport = transport
        self.model_id = model_id  # named in the error event of a stream cut short
        self.meter = meter
        self.close_after = close_after
        self.done = done
        self.status = 0
        self.body_bytes = 0
        self.started = False  # the response head went (or is about to go) to the client
        self.conn: UpstreamConnection | None = None
        self.failure: UpstreamFailure | None = None
        self.written = False  # some of the response went to the client
        self._chunked = False
        self._out: list[bytes] = []
        self._hold = False  # a small answer: written whole once complete
        self._sse = False  # an event stream: a cut gets a last error event

    def on_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> None:
        self.started = True
        self.status = status
        drop = dropped_names(headers, RAW.hop_by_hop_and_length, RAW)
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        has_date = has_server = has_type = sse = False
        accel: list[bytes] = []
        for name, value in headers:
            lname = name.lower()
            if lname in drop:
                continue
            if lname == b"date":
                has_date = True
            elif lname == b"server":
                has_server = True
            elif lname == b"content-type":
                has_type = True
                if _SSE in value:
                    sse = True
            elif lname == b"x-accel-buffering":
                accel.append(name + b": " + value + b"\r\n")
                continue
            out.append(name + b": " + value + b"\r\n")
        if sse:  # replaces whatever the upstream said
            self._sse = True
            out.append(b"X-Accel-Buffering: no\r\n")
        else:
            out.extend(accel)
        if not has_date:
            out.append(b"Date: " + http_date() + b"\r\n")
        if not has_server:
            out.append(b"Server: " + _SERVER + b"\r\n")
        no_body = status in (204, 304)
        if not has_type and length != 0 and not no_body:  # as aiohttp does (RFC 9110 8.3)
            out.append(b"Content-Type: application/octet-stream\r\n")
        if length is not None or no_body:
            if length is not None and not no_body:
                out.append(b"Content-Length: %d\r\n" % length)
            # as the aiohttp path does: an answer this small goes out once complete, so an
            # upstream that dies in the middle of it is a clean 502, not a truncated 200
            self._hold = length is not None and length <= SMALL_BODY
        else:
            self._chunked = True
            out.append(b"Transfer-Encoding: chunked\r\n")
        if self.close_after:
            out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        self._out.append(b"".join(out))
        if self.meter is not None:  # the upstream's headers as received, as on the aiohttp path
            self.meter.start(status, LazyHeaders(headers))

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.meter is not None:
            self.meter.feed(chunk)
        if self._chunked:
            self._out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self._out.append(chunk)

    def flush(self) -> None:
        out = self._out
        if out and not self._hold:
            self.written = True
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.transport.write(data)

    def on_complete(self, reusable: bool) -> None:
        # Unhook the connection before the last write: a write that fills the client's
        # buffer calls `pause` synchronously, which must not pause a connection that is
        # going back to the pool (it would never be read again).
        conn, self.conn = self.conn, None
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self._hold = False
        self.flush()
        if conn is not None:
            if reusable:
                conn.pool.put(conn)
            else:
                conn.close()
        if not self.done.done():
            self.done.set_result(True)

    def on_failure(self, error: UpstreamFailure) -> None:
        self.failure = error
        self.conn = None
        if not self.done.done():
            self.done.set_result(False)

    def on_abort(self, reason: str) -> None:
        self.conn = None
        self.failure = UpstreamFailure(reason)
        if self._hold:  # nothing sent yet: the caller answers 502
            self._out.clear()
        else:
            if self._sse:
                event = stream_ended_early(self.model_id, reason)
                self._out.append(b"%x\r\n%b\r\n" % (len(event), event) if self._chunked else event)
            self.flush()
            self.transport.close()  # flush what was relayed, end without a clean EOF
        if not self.done.done():
            self.done.set_result(False)

    def detach(self) -> None:
        """The client is gone (or the wait was abandoned): close the upstream connection,
        so the upstream sees the disconnect; it is never reused."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    # flow control: the client reads slower than the upstream writes
    def pause(self) -> None:
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()

    def resume(self) -> None:
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()
