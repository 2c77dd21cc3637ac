"""The fast path: plain JSON inference requests served without aiohttp's machinery.

Why: per proxied request, aiohttp's server and client spend about 0.2 ms of CPU, as
much as a small upstream answer costs, so on a small machine the proxy itself capped
throughput.  This module puts an `asyncio.Protocol` in front of the aiohttp app:

- it reads the first request of a connection; if it is a plain JSON `POST` to an
  inference route (request_head.py), with a valid API key when keys are set and a
  body within `maxRequestBody` (both judged from the head, before the body is read), that
  (after the active profile's pins and selectors, runtime/http/request/choose.py)
  admission (runtime/core/admission.py) routes to a local model without the
  loading-state prelude, and whose upstream is plain http, it is served here, end to end;
- anything else -- another route, a peer, an unknown model, a failed auth, a
  loading-state stream, a websocket, HTTP/1.0, odd framing -- *hands the connection
  off* to aiohttp: the bytes received so far, from the first byte of that request, are
  fed to a fresh aiohttp `RequestHandler`, which serves the connection from then on,
  exactly as if it had accepted it.  The decision is made before anything was answered
  or acquired, so a handoff changes nothing.  TLS connections are served too (the
  handoff works on TLS transports).

A fast-path request follows the same rules as the aiohttp front door because both call
the same policy (runtime/core: admission, auth, forwarding, error bodies) and the same
observers (in-flight counter, `recording`, `log_access`), over plain values.  This module
keeps only what is about bytes and sockets.  A client that disconnects cancels the
exchange and the upstream connection is closed.  docs/design.md ("The fast path") has
the picture.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.admission import Admit, admit
from llama_swap.runtime.core.auth import rejects
from llama_swap.runtime.core.connections import Phase
from llama_swap.runtime.core.error_body import ErrorAnswer, route_error_answer
from llama_swap.runtime.core.errors import RouteFailure, request_cancelled
from llama_swap.runtime.core.forwarding import (
    IDEMPOTENCY_KEYS,
    RAW,
    UPSTREAM_ABORTED,
    forwarded_request_headers,
    idempotent,
    model_stopping,
    no_headers_within,
    retry_on_fresh_connection,
    upstream_error,
)
from llama_swap.runtime.core.inference_routes import JSON_BODY_PATHS, forward_path
from llama_swap.runtime.core.limits import exceeds
from llama_swap.runtime.core.model_choice import ModelChoice
from llama_swap.runtime.http.connections import ConnectionTable, Tracked
from llama_swap.runtime.http.fast.headers import LazyHeaders
from llama_swap.runtime.http.fast.relay import Relay, answer_bytes
from llama_swap.runtime.http.fast.request_head import HANDOFF, Head, parse_head
from llama_swap.runtime.http.fast.upstream import UpstreamFailure, UpstreamPool
from llama_swap.runtime.http.middleware.mux import CLIENT_CLOSED
from llama_swap.runtime.http.observe.access_log import log_access, proxy_log_of
from llama_swap.runtime.http.observe.activity import ResponseMeter
from llama_swap.runtime.http.observe.recording import recording
from llama_swap.runtime.http.request.body import BytesBody
from llama_swap.runtime.http.request.choose import choose_for, release
from llama_swap.runtime.http.request.extract import Extracted, from_json_body
from llama_swap.runtime.http.request.filters import filter_request
from llama_swap.runtime.http.services import FastPathCounters, Services

log = logging.getLogger("llama_swap.fastpath")

FAST_PATHS: frozenset[str] = JSON_BODY_PATHS
HTTP_11 = (1, 1)
MAX_PENDING = 16 << 20  # bytes read ahead while a request is served; then reading pauses
SWEEP_INTERVAL = 5.0  # upstream pools; client connections are swept by the ConnectionTable


@dataclass(frozen=True, slots=True)
class Target:
    """Where a model's `proxy` URL points, as the fast path needs it."""

    host: str
    port: int
    base_path: bytes  # the URL's path without its trailing slash ("" for none)
    host_header: bytes


def target_of(proxy: str) -> Target | None:
    """The fast path's view of a `proxy` URL; None for anything but plain http."""
    try:
        url = urlsplit(proxy)
        port = url.port or 80
    except ValueError:
        return None
    if url.scheme != "http" or not url.hostname:
        return None
    return Target(url.hostname, port, url.path.rstrip("/").encode(), url.netloc.encode())


# Makes the aiohttp protocol a connection is handed to: given the fast-path connection
# it continues and when the current request's head started (for its head timeout).
HandoffFactory = Callable[[Tracked, float], asyncio.Protocol]


class FastPath:
    """What every fast-path connection of one server shares.  `table` holds every client
    connection of the server (read timeouts, the connection limit)."""

    def __init__(
        self, services: Services, handoff: HandoffFactory,
        counters: FastPathCounters, table: ConnectionTable,
    ) -> None:
        self.services = services
        self.handoff_factory = handoff
        self.counters = counters
        self.table = table
        self.proxy_log = proxy_log_of(services)
        self.inflight = services.inflight
        self.connections: set[ClientConnection] = set()
        self._targets: dict[str, Target | None] = {}
        self._pools: dict[tuple[Target, float | None, float], UpstreamPool] = {}
        self._by_model: dict[str, tuple[Model, tuple[UpstreamPool, Target] | None]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        services.listeners.add(self._on_event)

    def _on_event(self, event: Mapping[str, object]) -> None:
        """A model starting to stop: its idle upstream connections close first (see
        core/forwarding.py, `model_stopping`)."""
        model = model_stopping(event)
        if model is not None:
            entry = self._by_model.get(model)
            if entry is not None and entry[1] is not None:
                entry[1][0].close_idle()

    def protocol(self) -> ClientConnection:
        """The protocol factory for `loop.create_server`."""
        if self._sweeper is None:
            self._schedule_sweep()
        return ClientConnection(self)

    def pool_for(self, model: Model) -> tuple[UpstreamPool, Target] | None:
        """The connection pool and target for `model`; None when its upstream is not
        plain http (the aiohttp path serves those).  Remembered per plan entry."""
        cached = self._by_model.get(model.id)
        if cached is not None and cached[0] is model:
            return cached[1]
        found = self._pool_for(model)
        self._by_model[model.id] = (model, found)
        return found

    def _pool_for(self, model: Model) -> tuple[UpstreamPool, Target] | None:
        target = self._targets.get(model.proxy)
        if target is None:
            if model.proxy in self._targets:
                return None
            target = self._targets[model.proxy] = target_of(model.proxy)
            if target is None:
                return None
        t = model.timeouts
        key = (target, float(t.connect) or None, float(t.idleConn or 90))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = UpstreamPool(
                target.host, target.port, connect_timeout=key[1], idle_timeout=key[2]
            )
        return pool, target

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        """Close stale upstream connections (client connections are the table's)."""
        for key, pool in tuple(self._pools.items()):
            pool.sweep()
            if not len(pool):  # nothing open (e.g. the model moved in a hot reload)
                del self._pools[key]
                self._by_model.clear()
        live = {model.proxy for model in self.services.plan.models.values()}
        for proxy in [p for p in self._targets if p not in live]:
            del self._targets[proxy]
        self._schedule_sweep()

    def close(self) -> None:
        """Shutdown: close every fast-path connection (their exchanges are cancelled) and
        every pooled upstream connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in tuple(self.connections):
            conn.close()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._by_model.clear()


def request_bytes(head: Head, target: Target, path: str, body: bytes, remote: bytes) -> bytes:
    """The request as the upstream gets it: headers per the forwarding rule
    (runtime/core/forwarding.py), `Host` added when the client sent none."""
    url = target.base_path + path.encode()
    if head.query:
        url += b"?" + head.query
    out = [b"POST ", url, b" HTTP/1.1\r\n"]
    for name, value in forwarded_request_headers(head.raw_headers, remote, RAW):
        out += (name, b": ", value, b"\r\n")
    if not head.has_host:
        out += (b"Host: ", target.host_header, b"\r\n")
    out.append(b"Content-Length: %d\r\n\r\n" % len(body))
    out.append(body)
    return b"".join(out)


class ClientConnection(asyncio.Protocol):
    """One client connection, served here until a request needs aiohttp."""

    def __init__(self, lane: FastPath) -> None:
        self.lane = lane
        # Made on the loop that serves it; asked once, since asyncio's lookup of the running
        # loop is a system call (the process id, for fork safety) on every call.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.remote_bytes = b""  # as X-Forwarded-For carries it, encoded once
        self.buf = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.relay: Relay | None = None
        # Times for the read timeouts (runtime/core/connections.py): the last read or the
        # end of the last request; when the head being received started.
        self.last_active = self.head_started = time.monotonic()
        self._fresh = True  # no request yet: waiting for a head since the accept
        self._head: Head | None = None
        self._scanned = 0  # bytes of `buf` already searched for the end of a head
        self._closed = False
        self._paused = False  # reading paused: a pipelining client is far ahead
        self._writing_paused = False  # the client's buffer is full

    # --- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.remote_bytes = self.remote.encode()
        if not self.lane.table.admit(self):
            self._closed = True
            transport.abort()  # type: ignore[attr-defined]
            return
        self.lane.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.task is None:
            now = self.last_active = time.monotonic()
            if not self.buf and not self._fresh:
                self.head_started = now  # the first byte of the next head
            self.buf += data
            self._next()
            return
        self.buf += data
        if len(self.buf) > MAX_PENDING and self.transport is not None:
            self.transport.pause_reading()  # a pipelining client far ahead: wait for us
            self._paused = True

    @property
    def idle(self) -> bool:
        """Not serving a request (possibly holding part of the next one)."""
        return self.task is None

    def phase(self) -> tuple[Phase, float]:
        """For the ConnectionTable: which wait this connection is in, since when."""
        if self.task is not None:
            return Phase.BUSY, 0.0
        if self._head is not None:
            return Phase.BODY, self.last_active
        if self.buf or self._fresh:
            return Phase.HEAD, self.head_started
        return Phase.IDLE, self.last_active

    def expire(self, phase: Phase) -> None:
        """Timed out in `phase` (or making room): an idle connection is closed politely,
        one stuck in a head or a body is cut."""
        if self.transport is None or self._closed:
            return
        if phase is Phase.IDLE:
            self.transport.close()
        else:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.lane.connections.discard(self)
        self.lane.table.remove(self)
        if self.relay is not None:
            self.relay.detach()  # the upstream sees the disconnect now
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.relay is not None:
            self.relay.pause()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.relay is not None:
            self.relay.resume()

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.close()

    # --- one request at a time ------------------------------------------------------
    def _next(self) -> None:
        """Take the next complete request from the buffer: serve it or hand off."""
        if not self.buf:
            return
        head = self._head
        if head is None:
            parsed = parse_head(self.buf, FAST_PATHS, self._scanned)
            if parsed is None:
                self._scanned = len(self.buf)
                return
            self._scanned = 0
            if parsed is HANDOFF or self._refused(parsed):  # type: ignore[arg-type]
                self._handoff(b"")  # before its body is read
                return
            head = self._head = parsed  # type: ignore[assignment]
        assert isinstance(head, Head)
        total = head.total
        if len(self.buf) < total:
            return
        self._head = None
        msg = bytes(self.buf[:total])
        del self.buf[:total]
        self.last_active = time.monotonic()
        try:
            plan_check = self._admit(head, msg)
        except Exception:  # e.g. RecursionError from a deeply nested body: aiohttp answers
            log.debug("fast path: handing off a request it could not judge", exc_info=True)
            plan_check = None
        if plan_check is None:
            self._handoff(msg)
            return
        self.task = self.loop.create_task(self._serve(head, *plan_check))

    def _refused(self, head: Head) -> bool:
        """Whether the request is refused from its head alone -- no valid API key, or a
        body over `maxRequestBody` (runtime/core: auth, limits) -- so that aiohttp answers
        the 401 or 413 before a byte of the body is buffered here."""
        settings = self.lane.services.plan.settings
        keys = settings.apiKeys
        if keys and rejects(keys, "POST", head.path, head.headers()):
            return True
        return exceeds(head.content_length, settings.maxRequestBody)

    def _admit(
        self, head: Head, msg: bytes
    ) -> tuple[LazyHeaders, str, Extracted, tuple[UpstreamPool, Target], ModelChoice] | None:
        """Decide, before anything is acquired or answered, whether this request is the
        fast path's; None hands it to aiohttp, which answers whatever it is."""
        services = self.lane.services
        plan = services.plan
        headers = head.headers()
        try:
            req = from_json_body(plan, msg[head.head_len :])
        except RouteFailure:
            return None
        try:
            chosen = choose_for(services.router, req)  # profile pins, then selectors
        except RouteFailure:
            return None  # aiohttp answers the error
        req = filter_request(plan, req)
        model_id = req.model_id
        path = forward_path(head.path)
        upstream = None
        if admit(plan, services.router.processes, model_id, path, req.streaming) is Admit.LOCAL:
            upstream = self.lane.pool_for(plan.models[model_id])
        if upstream is None:  # not local, or not plain http: aiohttp decides afresh
            release(services.router, chosen)
            return None
        return headers, model_id, req, upstream, chosen

    def _handoff(self, msg: bytes) -> None:
        """Give this connection, from the first byte of the current request on, to aiohttp."""
        transport = self.transport
        lane = self.lane
        lane.connections.discard(self)
        lane.counters.handed_off += 1
        data = msg + bytes(self.buf)
        self.buf = bytearray()
        if transport is None or transport.is_closing():
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        handler = lane.handoff_factory(self, self.head_started)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)

    def _finished(self, close: bool) -> None:
        self.task = None
        self.relay = None
        self.last_active = self.head_started = time.monotonic()
        self._fresh = False
        if close or self._closed:
            self.close()
            return
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._next()

    async def _serve(
        self, head: Head, headers: LazyHeaders, model_id: str, req: Extracted,
        upstream: tuple[UpstreamPool, Target], chosen: ModelChoice,
    ) -> None:
        lane = self.lane
        started = time.perf_counter()
        meter = ResponseMeter()
        status, size = CLIENT_CLOSED, 0
        close = head.close
        inflight = lane.inflight
        task = self.task
        assert task is not None
        entry = inflight.add(
            model=model_id, req_path=head.path, method="POST", headers=headers, peer=self.remote,
            cancel=task.cancel,
        )
        entry.progress = _Progress(self)
        lane.counters.served += 1
        try:
            with recording(
                lane.services, headers, model_id, head.path, meter, req, chosen.selector
            ) as rec:
                try:
                    status, size, close = await self._exchange(
                        head, headers, model_id, cast(BytesBody, req.body).data, upstream, meter,
                        rec,
                    )
                except asyncio.CancelledError:
                    # cancelled from the in-flight list (and not by the client leaving) before
                    # anything of the answer went out: say so; else the connection is cut
                    relay = self.relay
                    if relay is not None:
                        relay.detach()  # the upstream sees the disconnect now
                    if not entry.cancelled or task.uncancel() > 0 or (relay and relay.written):
                        raise
                    self.relay = None
                    status, size, close = self._answer(
                        route_error_answer(headers.get("Accept", ""), request_cancelled()),
                        rec, head.close,
                    )
        except asyncio.CancelledError:
            relay = self.relay
            if relay is not None:
                relay.detach()
                if relay.started:
                    status, size = relay.status, relay.body_bytes
            close = True
        except Exception:  # a bug here must not hang the client: log it, drop the connection
            log.exception("fast path: unexpected error serving %s", head.path)
            close = True
        finally:
            inflight.remove(entry)
            release(lane.services.router, chosen)
            log_access(lane.proxy_log(), "POST", head.path, HTTP_11, headers, self.remote,
                       status, size, started)
        self._finished(close)

    async def _exchange(
        self, head: Head, headers: LazyHeaders, model_id: str, body: bytes,
        upstream: tuple[UpstreamPool, Target], meter: ResponseMeter, rec: recording,
    ) -> tuple[int, int, bool]:
        """Acquire, forward, relay; returns (status, body bytes, close the connection)."""
        try:
            lease = await self.lane.services.router.acquire(model_id)
        except RouteFailure as failure:
            answer = route_error_answer(headers.get("Accept", ""), failure.error)
            return self._answer(answer, rec, head.close)
        try:
            model = lease.model  # the plan's entry now (a hot reload may have moved it)
            pool, target = self.lane.pool_for(model) or upstream
            data = request_bytes(head, target, forward_path(head.path), body, self.remote_bytes)
            return await self._forward(headers, pool, data, model, head, meter, rec)
        finally:
            lease.release()

    async def _forward(
        self, headers: LazyHeaders, pool: UpstreamPool, data: bytes, model: Model, head: Head,
        meter: ResponseMeter, rec: recording,
    ) -> tuple[int, int, bool]:
        loop = self.loop
        assert self.transport is not None
        relay = Relay(self.transport, meter, head.close, loop.create_future(), model.id)
        self.relay = relay
        header_timeout = model.timeouts.responseHeader or None
        conn = pool.take()
        for attempt in (0, 1):
            if conn is None:
                try:
                    conn = await pool.connect()
                except UpstreamFailure as failed:
                    return self._upstream_error(headers, model.id, failed, rec, head.close)
            relay.conn = conn
            if self._writing_paused:  # the client has not drained the last answer yet
                relay.pause()
            conn.send(data, relay)
            timer = None
            if header_timeout is not None:
                timer = loop.call_later(header_timeout, _head_timeout, relay, header_timeout)
            try:
                ok = await relay.done
            finally:
                if timer is not None:
                    timer.cancel()
            if ok:
                return relay.status, relay.body_bytes, head.close
            if relay.written:  # cut off mid-body; the client connection is closed
                log.warning(UPSTREAM_ABORTED, relay.failure)
                return relay.status, relay.body_bytes, True
            failure = relay.failure or UpstreamFailure("the upstream failed")
            # The request was written (the pool hands out only connections still open and
            # nothing awaits between taking one and writing): the upstream may have run it,
            # so it goes again only when the client marked it idempotent.
            if retry_on_fresh_connection(
                first_attempt=attempt == 0, reused=failure.reused,
                received_anything=failure.received_anything, request_written=True,
                idempotent=idempotent("POST", _has_idempotency_key(headers)),
                body_replayable=True,
            ):
                log.debug("retrying on a fresh connection: %s", failure)
                relay.done = loop.create_future()
                relay.failure = None
                conn = None
                continue
            return self._upstream_error(headers, model.id, failure, rec, head.close)
        raise AssertionError("unreachable")

    def _upstream_error(
        self, headers: LazyHeaders, model_id: str, failure: UpstreamFailure, rec: recording,
        close: bool,
    ) -> tuple[int, int, bool]:
        answer = route_error_answer(headers.get("Accept", ""), upstream_error(model_id, failure))
        return self._answer(answer, rec, close)

    def _answer(self, answer: ErrorAnswer, rec: recording, close: bool) -> tuple[int, int, bool]:
        """llama-swap's own answer (an error), recorded and written as bytes."""
        rec.answered(answer.status, dict(answer.headers), answer.body)
        if self.transport is not None and not self._closed:
            self.transport.write(answer_bytes(answer, close))
        return answer.status, len(answer.body), close


class _Progress:
    """An in-flight entry's view of the answer: the connection's current relay."""

    __slots__ = ("_conn",)

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn

    def response_headers(self) -> Iterable[tuple[str, str]] | None:
        relay = self._conn.relay
        if relay is None or not relay.started:
            return None
        headers = relay.meter.headers if relay.meter is not None else None
        return () if headers is None else headers.items()  # the upstream's, as received

    def response_bytes(self) -> int:
        relay = self._conn.relay
        return 0 if relay is None else relay.body_bytes


def _has_idempotency_key(headers: LazyHeaders) -> bool:
    return any(headers.get(name) is not None for name in IDEMPOTENCY_KEYS)


def _head_timeout(relay: Relay, seconds: float) -> None:
    if not relay.started and not relay.done.done():
        relay.detach()
        relay.on_failure(UpstreamFailure(no_headers_within(seconds)))
