"""Which upstream connections aiohttp's client may reuse, and which attempt got a reused one.

Why a module of its own: aiohttp's pool, left alone, reuses connections the upstream is
about to close, and a POST written into one is lost (it is never sent twice: the
upstream may have run it).  Real llama-server closes its connection a moment after the
last byte of every streamed (chunked) answer, announcing nothing (it even says
`Keep-Alive`).  aiohttp hands a connection back to its pool the moment the last byte of
an answer's body is parsed -- before the code relaying the answer sees its end, and,
when the whole answer came with its head, before `request()` returns at all -- so a
request arriving right after a stream was written into that connection and came back a
502.  The rules here close that gap:

- `UpstreamResponse` decides, as soon as the answer's head is read, whether its
  connection may carry another request (runtime/core/forwarding.py
  `reusable_after_answer`: not after a chunked answer) and retires it otherwise, so it is
  closed on release instead of pooled.
- `PoolConnector` never hands out a pooled connection that is retired (one whose answer
  ended before the retirement reached it is already in the pool) or, when asked to peek,
  whose close the kernel already holds though the loop has not read it
  (runtime/http/socket_probe.py); and it tells the current attempt (`ATTEMPT`) whether
  its connection was a reused one, which the retry rule needs.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection

from llama_swap.runtime.core.forwarding import reusable_after_answer
from llama_swap.runtime.http.socket_probe import peer_closed

# The attempt in progress in this task: `PoolConnector` marks it when it hands out a
# pooled (reused) connection.  A context variable instead of an aiohttp TraceConfig,
# whose per-request trace objects and callbacks cost more than the rest of the lookup.
ATTEMPT: ContextVar[SimpleNamespace | None] = ContextVar("llama_swap_attempt", default=None)


def retire(protocol: ResponseHandler) -> None:
    """Mark a connection to be closed instead of pooled once its answer is done.

    aiohttp has no documented switch for this per response.  `force_close()` on the
    connection's protocol (a public method, though undocumented) sets what its
    `should_close` reports, which aiohttp's connector reads when the answer ends and
    `PoolConnector` reads for a connection already back in the pool.  The tests in
    tests/web/test_stale_upstream_connections.py fail if aiohttp stops honouring it."""
    protocol.force_close()


def retired(protocol: ResponseHandler) -> bool:
    """Whether a pooled connection may not carry another request (see `retire`)."""
    return protocol.should_close


class UpstreamResponse(aiohttp.ClientResponse):
    """An upstream answer that retires its connection, from its head on, when the
    forwarding rules say the upstream will close it (a chunked answer)."""

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol  # the response lets go of it once the body ends
        await super().start(connection)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        # keep_alive: aiohttp itself closes a connection whose answer said `close`
        if protocol is not None and not reusable_after_answer(keep_alive=True, chunked=chunked):
            retire(protocol)
        return self


class PoolConnector(aiohttp.TCPConnector):
    """A TCPConnector that hands out no pooled connection unfit for another request, and
    tells the current attempt whether its connection was reused.

    `peek`: also ask the kernel whether the upstream closed an idle connection (plain
    TCP to a local model; a TLS peer's connection carries bytes of its own, such as
    session tickets, that a peek would mistake for an unasked answer)."""

    def __init__(self, *, peek: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._peek = peek
        self._used: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    def _unfit(self, conn: Connection) -> bool:
        proto = conn.protocol
        if proto is None or proto not in self._used:
            return False  # a new connection
        return retired(proto) or (self._peek and peer_closed(conn.transport))

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Connection:
        conn = await super().connect(req, traces, timeout)
        while self._unfit(conn):
            conn.close()  # its EOF is not read yet, or its answer retired it
            conn = await super().connect(req, traces, timeout)
        proto = conn.protocol
        if proto is not None:
            if proto in self._used:
                attempt = ATTEMPT.get()
                if attempt is not None:
                    attempt.reused = True
            else:
                self._used.add(proto)
        return conn
