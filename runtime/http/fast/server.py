"""The fast path: plain JSON inference requests served without aiohttp's machinery.

Why: per proxied request, aiohttp's server and client spend about 0.2 ms of
CPU, as much as a small upstream answer costs, so on a small machine the proxy
itself capped throughput.  This module puts an `asyncio.Protocol` in front of
the aiohttp app:

- it reads the first request of a connection; if it is a plain JSON `POST`
  to an inference route (runtime/fastpath/request_head.py), for a local model
  that needs no loading-state prelude, with a valid API key when keys are set,
  it is served here, end to end;
- anything else -- another route, a peer, an unknown model, a failed auth, a
  websocket, HTTP/1.0, TLS, odd framing -- *hands the connection off* to
  aiohttp: the bytes received so far, from the first byte of that request,
  are fed to a fresh aiohttp `RequestHandler`, which serves the connection
  from then on, exactly as if it had accepted it.  The decision is made
  before anything was answered or acquired, so a handoff changes nothing.

A fast-path request follows the same rules as `runtime/routes/dispatch.py`
(and reuses its parts): the model from the JSON body, aliases, filters, the
router's grant held while the response is relayed, the in-flight counter, the
activity log and captures (`recording`), the access log, Go-shaped errors
(route_error_response) and the upstream retry on a dead reused connection.  A
client that disconnects cancels the exchange and the upstream connection is
closed.  docs/design.md ("The fast path") has the picture.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import HttpVersion11, web
from aiohttp.http import SERVER_SOFTWARE

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.errors import RouteError, RouteFailure
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.http.aio.app import AppState
from llama_swap.runtime.http.aio.routes.dispatch import INFLIGHT, recording
from llama_swap.runtime.http.aio.routes.inference import (
    JSON_ROUTES,
    VERSIONLESS_ROUTES,
    forward_path,
)
from llama_swap.runtime.http.fast.headers import LazyHeaders
from llama_swap.runtime.http.fast.relay import Relay, dropped_headers, http_date
from llama_swap.runtime.http.fast.request_head import HANDOFF, Head, parse_head
from llama_swap.runtime.http.fast.upstream import UpstreamFailure, UpstreamPool
from llama_swap.runtime.http.middleware.auth import extract_api_key, key_matches
from llama_swap.runtime.http.middleware.stack import CLIENT_CLOSED
from llama_swap.runtime.http.observe.access_log import log_access, proxy_log_of
from llama_swap.runtime.http.observe.activity import ResponseMeter
from llama_swap.runtime.http.render.errors import route_error_response
from llama_swap.runtime.http.render.loading_state import wants_loading_state
from llama_swap.runtime.http.request.extract import from_json_body
from llama_swap.runtime.http.request.filters import filter_request

log = logging.getLogger("llama_swap.fastpath")

FAST_PATHS: frozenset[str] = frozenset((*JSON_ROUTES, *VERSIONLESS_ROUTES))
MAX_PENDING = 16 << 20  # bytes read ahead while a request is served; then reading pauses
KEEPALIVE_TIMEOUT = 3630.0  # an idle client connection is closed after this (aiohttp's default)
SWEEP_INTERVAL = 5.0


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


class ShimRequest:
    """The few request attributes the shared helpers read (`recording`, `log_access`,
    `route_error_response`), for a request that never became an aiohttp request."""

    __slots__ = ("headers", "remote", "app", "path")
    method = "POST"
    version = HttpVersion11

    def __init__(self, headers: LazyHeaders, remote: str, app: web.Application, path: str):
        self.headers = headers
        self.remote = remote
        self.app = app
        self.path = path


class FastPath:
    """What every fast-path connection of one server shares."""

    def __init__(
        self, app: web.Application, state: AppState, handoff: Callable[[], asyncio.Protocol]
    ) -> None:
        self.app = app
        self.state = state
        self.handoff_factory = handoff
        self.proxy_log = proxy_log_of(state)
        self.inflight = app[INFLIGHT]
        self.connections: set[ClientConnection] = set()
        self._targets: dict[str, Target | None] = {}
        self._pools: dict[tuple[Target, float | None, float], UpstreamPool] = {}
        self._by_model: dict[str, tuple[Model, tuple[UpstreamPool, Target] | None]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.served = 0  # requests served here (the rest went to aiohttp)
        self.handed_off = 0  # connections handed to aiohttp

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
        """Close idle client connections past the keep-alive timeout and stale upstream ones."""
        now = time.monotonic()
        for conn in tuple(self.connections):  # nothing received for that long
            if conn.idle and now - conn.last_active > KEEPALIVE_TIMEOUT:
                conn.close()
        for key, pool in tuple(self._pools.items()):
            pool.sweep()
            if not len(pool):  # nothing open (e.g. the model moved in a hot reload)
                del self._pools[key]
                self._by_model.clear()
        live = {model.proxy for model in self.state.plan.models.values()}
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


def _serialize(resp: web.Response, close: bool) -> bytes:
    """llama-swap's own complete answer (an error) as HTTP/1.1 bytes."""
    body = resp.body if isinstance(resp.body, bytes) else b""
    lines = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n"]
    for name, value in resp.headers.items():
        if name.lower() not in ("content-length", "connection"):
            lines.append(f"{name}: {value}\r\n")
    if "Date" not in resp.headers:
        lines.append(f"Date: {http_date().decode()}\r\n")
    if "Server" not in resp.headers:  # as aiohttp adds it (and the relay, to relayed answers)
        lines.append(f"Server: {SERVER_SOFTWARE}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8") + body


def request_bytes(head: Head, target: Target, path: str, body: bytes, remote: str) -> bytes:
    """The request as the upstream gets it: the client's headers minus hop-by-hop ones,
    `X-Forwarded-For` with the client appended, `Host` kept (added if absent)."""
    drop = dropped_headers(head.raw_headers)
    url = target.base_path + path.encode()
    if head.query:
        url += b"?" + head.query
    out = [b"POST ", url, b" HTTP/1.1\r\n"]
    forwarded: list[bytes] = []
    has_host = False
    for name, value in head.raw_headers:
        lname = name.lower()
        if lname in drop:
            continue
        if lname == b"x-forwarded-for":
            forwarded.append(value)
            continue
        if lname == b"host":
            has_host = True
        out.append(name + b": " + value + b"\r\n")
    if not has_host:
        out.append(b"Host: " + target.host_header + b"\r\n")
    if remote:
        forwarded.append(remote.encode())
    if forwarded:
        out.append(b"X-Forwarded-For: " + b", ".join(forwarded) + b"\r\n")
    out.append(b"Content-Length: %d\r\n\r\n" % len(body))
    out.append(body)
    return b"".join(out)


class ClientConnection(asyncio.Protocol):
    """One client connection, served here until a request needs aiohttp."""

    def __init__(self, lane: FastPath) -> None:
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.buf = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.relay: Relay | None = None
        self.last_active = time.monotonic()
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
        self.lane.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self.last_active = time.monotonic()
            self._next()
        elif len(self.buf) > MAX_PENDING and self.transport is not None:
            self.transport.pause_reading()  # a pipelining client far ahead: wait for us
            self._paused = True

    @property
    def idle(self) -> bool:
        """Not serving a request (possibly holding part of the next one)."""
        return self.task is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.lane.connections.discard(self)
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
            if parsed is HANDOFF:
                self._handoff(b"")
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
        self.task = asyncio.get_running_loop().create_task(self._serve(head, *plan_check))

    def _admit(
        self, head: Head, msg: bytes
    ) -> tuple[LazyHeaders, str, Any, tuple[UpstreamPool, Target]] | None:
        """Decide, before anything is acquired or answered, whether this request is the
        fast path's; None hands it to aiohttp."""
        state = self.lane.state
        plan = state.plan
        headers = head.headers()
        keys = plan.settings.apiKeys
        if keys and not key_matches(extract_api_key(headers), keys):
            return None
        try:
            req = from_json_body(plan, msg[head.head_len :])
        except RouteFailure:
            return None
        req = filter_request(plan, req)
        router = state.router
        model_id = req.model_id
        model = plan.models.get(model_id)
        if model is None or model_id not in router.processes:
            return None  # a peer's, unknown, or removed by a reload and draining: dispatch answers
        ready = router.model_state(model_id) is ProcessState.READY
        if wants_loading_state(forward_path(head.path), req.streaming, model.sendLoadingState, ready):
            return None
        upstream = self.lane.pool_for(model)
        if upstream is None:
            return None
        return headers, model_id, req, upstream

    def _handoff(self, msg: bytes) -> None:
        """Give this connection, from the first byte of the current request on, to aiohttp."""
        transport = self.transport
        lane = self.lane
        lane.connections.discard(self)
        lane.handed_off += 1
        data = msg + bytes(self.buf)
        self.buf = bytearray()
        if transport is None or transport.is_closing():
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        handler = lane.handoff_factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)

    def _finished(self, close: bool) -> None:
        self.task = None
        self.relay = None
        self.last_active = time.monotonic()
        if close or self._closed:
            self.close()
            return
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._next()

    async def _serve(
        self, head: Head, headers: LazyHeaders, model_id: str, req: Any,
        upstream: tuple[UpstreamPool, Target],
    ) -> None:
        lane = self.lane
        started = time.perf_counter()
        request = ShimRequest(headers, self.remote, lane.app, head.path)
        meter = ResponseMeter()
        status, size = CLIENT_CLOSED, 0
        close = head.close
        lane.inflight.change(+1)
        lane.served += 1
        try:
            with recording(request, model_id, head.path, meter, req) as out:  # type: ignore[arg-type]
                status, size, close = await self._exchange(
                    request, head, model_id, req.body.data, upstream, meter, out
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
            lane.inflight.change(-1)
            log_access(lane.proxy_log(), request, head.path, status, size, started)  # type: ignore[arg-type]
        self._finished(close)

    async def _exchange(
        self, request: ShimRequest, head: Head, model_id: str, body: bytes,
        upstream: tuple[UpstreamPool, Target], meter: ResponseMeter,
        out: list[web.StreamResponse],
    ) -> tuple[int, int, bool]:
        """Acquire, forward, relay; returns (status, body bytes, close the connection)."""
        router = self.lane.state.router
        try:
            lease = await router.acquire(model_id)
        except RouteFailure as failure:
            resp = route_error_response(request.headers, failure.error)
            return self._answer(resp, out, head.close)
        try:
            model = lease.model  # the plan's entry now (a hot reload may have moved it)
            pool, target = self.lane.pool_for(model) or upstream
            data = request_bytes(head, target, forward_path(head.path), body, self.remote)
            return await self._forward(request, pool, data, model, head, meter, out)
        finally:
            lease.release()

    async def _forward(
        self, request: ShimRequest, pool: UpstreamPool, data: bytes, model: Model, head: Head,
        meter: ResponseMeter, out: list[web.StreamResponse],
    ) -> tuple[int, int, bool]:
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        relay = Relay(self.transport, meter, head.close, loop.create_future())
        self.relay = relay
        header_timeout = model.timeouts.responseHeader or None
        conn = pool.take()
        for attempt in (0, 1):
            if conn is None:
                try:
                    conn = await pool.connect()
                except UpstreamFailure as failure:
                    return self._upstream_error(request, model.id, failure, out, head.close)
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
                log.warning("upstream aborted mid-response (%s): closing the client connection",
                            relay.failure)
                return relay.status, relay.body_bytes, True
            failure = relay.failure or UpstreamFailure("the upstream failed")
            if attempt == 0 and failure.retryable:
                log.debug("retrying on a fresh connection: %s", failure)
                relay.done = loop.create_future()
                relay.failure = None
                conn = None
                continue
            return self._upstream_error(request, model.id, failure, out, head.close)
        raise AssertionError("unreachable")

    def _upstream_error(
        self, request: ShimRequest, model_id: str, failure: UpstreamFailure,
        out: list[web.StreamResponse], close: bool,
    ) -> tuple[int, int, bool]:
        error = RouteError(502, f"[{model_id}] upstream error: {failure}")
        return self._answer(route_error_response(request.headers, error), out, close)

    def _answer(
        self, resp: web.Response, out: list[web.StreamResponse], close: bool
    ) -> tuple[int, int, bool]:
        out.append(resp)
        if self.transport is not None and not self._closed:
            self.transport.write(_serialize(resp, close))
        body = resp.body if isinstance(resp.body, bytes) else b""
        return resp.status, len(body), close


def _head_timeout(relay: Relay, seconds: float) -> None:
    if not relay.started and not relay.done.done():
        relay.detach()
        relay.on_failure(UpstreamFailure(f"no response headers within {seconds:g}s"))
