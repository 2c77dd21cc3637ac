"""Forwarding one HTTP exchange to an upstream, streaming both ways.

Why a module of its own: the proxy is the hot path, and its rules are subtle.
- One pooled `aiohttp.ClientSession` per model (keyed by model id and proxy
  URL), with `auto_decompress=False`, so bytes pass through untouched.
- Bodies stream: the response is relayed chunk by chunk as the upstream sends
  it (SSE reaches the client at once); a small response with a known length
  is relayed in one write (cheaper, same bytes).
- The header rules (hop-by-hop dropped both ways, X-Forwarded-For appended), the
  small-body size and the retry rule are runtime/core/forwarding.py's, shared with the
  fast path; status, reason and error bodies pass through.
- A client that disconnects cancels the handler (the app runs with
  `handler_cancellation=True`), which closes the upstream response, so the
  upstream sees the disconnect.
- Reuse: real llama-server closes the connection a moment after every streamed
  (chunked) answer, without saying so.  Such a connection is retired as soon as the
  answer's head arrives, so it never goes back to the pool; a pooled connection the
  upstream closed while idle is dropped before it is written to, even when the loop
  has not read the close yet (runtime/http/aio/pooling.py).
- Retry: a request that fails on a *reused* connection before any response byte
  arrived is retried once on a fresh connection only when it is idempotent
  (runtime/core/forwarding.py: aiohttp does not say whether any of it was written,
  and a POST the upstream read and dropped may have run, so it is never sent twice)
  and its body can be replayed (bytes, or a stream of which nothing was sent yet).
- An upstream that dies mid-body aborts the client connection (no clean end
  of the chunked body), so the client sees a truncated response, not a
  complete one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict
from yarl import URL

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.forwarding import (
    CLOSED_BEFORE_ANSWERING,
    IDEMPOTENCY_KEYS,
    SMALL_BODY,
    TEXT,
    UPSTREAM_ABORTED,
    dropped_names,
    forwarded_request_headers,
    idempotent,
    model_stopping,
    no_headers_within,
    retry_on_fresh_connection,
    stream_ended_early,
)
from llama_swap.runtime.http.aio.pooling import ATTEMPT, PoolConnector, UpstreamResponse
from llama_swap.runtime.http.request.body import BodyTooLarge

_SSE = "text/event-stream"
log = logging.getLogger("llama_swap.proxy")

# Request headers aiohttp would otherwise invent; the upstream sees what the client sent.
_SKIP_AUTO = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})

Body = Any  # bytes | AsyncIterable[bytes] | a ForwardBody (runtime/http/request/body.py) | None

# Request key: the query string to send upstream instead of the client's, when a profile
# pin or a selector rewrote a GET's `?model=` (runtime/http/request/choose.py).
FORWARD_QUERY: web.RequestKey[str] = web.RequestKey("llama_swap_forward_query", str)


def forward_query(request: web.Request) -> str:
    """The percent-encoded query string the upstream gets: the client's unless rewritten."""
    rewritten = request.get(FORWARD_QUERY)
    return request.rel_url.raw_query_string if rewritten is None else rewritten


class CountingResponse(web.StreamResponse):
    """A streamed response that counts the body bytes written (`body_bytes`), for the
    access log: aiohttp itself only knows the bytes on the wire, chunk framing included.

    The answer to a HEAD is headers only: aiohttp leaves out the framing headers then,
    but would still put whatever a handler writes on the wire, where a client reusing
    the connection reads it as the start of the next answer.  So writes are dropped."""

    body_bytes = 0
    headers_only = False

    async def prepare(self, request: web.BaseRequest) -> Any:
        self.headers_only = request.method == "HEAD"
        return await super().prepare(request)

    def write(self, data: Any) -> Any:
        if self.headers_only:
            return _written()
        self.body_bytes += len(data)
        return super().write(data)


async def _written() -> None:
    """What `write` awaits when nothing may be written."""


class UpstreamError(Exception):
    """The upstream could not be reached or failed before answering."""


def request_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    """The client's headers as the upstream gets them (runtime/core/forwarding.py)."""
    return CIMultiDict(forwarded_request_headers(request.headers.items(), request.remote or "", TEXT))


def response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    headers = upstream.headers
    drop = dropped_names(headers.items(), TEXT.hop_by_hop, TEXT)
    out: CIMultiDict[str] = CIMultiDict()
    add = out.add
    for k, v in headers.items():
        if k.lower() not in drop:
            add(k, v)
    if _SSE in headers.get("Content-Type", ""):
        out["X-Accel-Buffering"] = "no"
    return out


class _ReplayableStream:
    """Wraps a streamed request body; remembers whether any chunk was handed out, and
    a fault of the client's body -- crossing `maxRequestBody`, or framing or encoding
    aiohttp's parser could not decode (aiohttp's client reports a failing body only as a
    failed connection, which would read as the upstream's fault)."""

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._source = source
        self.started = False
        self.refused: BodyTooLarge | RequestPayloadError | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._source:
                self.started = True
                yield chunk
        except (BodyTooLarge, RequestPayloadError) as exc:
            self.refused = exc
            raise


def _refused(stream: _ReplayableStream | None) -> None:
    """Raise the client's fault (a 413, or a 400 from the middleware stack) when the
    request failed because of the client's body."""
    if stream is not None and stream.refused is not None:
        raise stream.refused


class _Upstream:
    """The client sessions for one model: a pooled one and a no-reuse one for retries."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.proxy = model.proxy.rstrip("/")
        self.timeouts = model.timeouts
        t = model.timeouts
        self.header_timeout = t.responseHeader or None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect or None)
        self.pooled = aiohttp.ClientSession(
            connector=PoolConnector(limit=0, keepalive_timeout=t.idleConn or 90),
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            response_class=UpstreamResponse,
        )
        self.fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
        )

    async def close(self) -> None:
        await self.pooled.close()
        await self.fresh.close()


class UpstreamPool:
    """Client sessions per model, and the forwarding of one request through them."""

    def __init__(self) -> None:
        self._upstreams: dict[str, _Upstream] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _get(self, model: Model) -> _Upstream:
        up = self._upstreams.get(model.id)
        if up is not None and up.model is model:  # the common case: the same plan entry
            return up
        if up is None or up.proxy != model.proxy.rstrip("/") or up.timeouts != model.timeouts:
            if up is not None:  # the model's address changed (hot reload): retire the old pool
                task = asyncio.get_running_loop().create_task(up.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            up = self._upstreams[model.id] = _Upstream(model)
        up.model = model
        return up

    def retire(self, model_id: str) -> None:
        """Close the model's session (its upstream is about to stop: see core/forwarding.py,
        `model_stopping`); the next request opens a new one."""
        up = self._upstreams.pop(model_id, None)
        if up is not None:
            task = asyncio.get_running_loop().create_task(up.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def on_event(self, event: Mapping[str, object]) -> None:
        """Router events: a model starting to stop retires its session."""
        model = model_stopping(event)
        if model is not None:
            self.retire(model)

    async def close(self) -> None:
        ups, self._upstreams = list(self._upstreams.values()), {}
        await asyncio.gather(*(u.close() for u in ups), *self._closing, return_exceptions=True)

    async def send(
        self,
        model: Model,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: Body,
        *,
        encoded: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send a request and return once the response headers arrived (retrying once on
        a dead reused connection).  Raises UpstreamError.

        `encoded`: `path_qs` is already percent-encoded and goes out byte for byte (the
        client library would otherwise normalise it, e.g. turn `%2F` into `/`)."""
        up = self._get(model)
        url: str | URL = URL(up.proxy + path_qs, encoded=True) if encoded else up.proxy + path_qs
        data, stream = _payload(body, headers)
        flag = SimpleNamespace(reused=False)
        header_timeout = up.header_timeout
        token = ATTEMPT.set(flag)
        try:
            if header_timeout is None:
                return await up.pooled.request(
                    method, url, headers=headers, data=data, allow_redirects=False
                )
            async with asyncio.timeout(header_timeout):
                return await up.pooled.request(
                    method, url, headers=headers, data=data, allow_redirects=False
                )
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            _refused(stream)
            # both mean the connection died before any response byte arrived; a failed
            # connect is never on a reused connection
            reused = flag.reused and not isinstance(exc, aiohttp.ClientConnectorError)
            # aiohttp does not say how much of the request went out before the failure:
            # count it as written, so only an idempotent request can go twice
            if not retry_on_fresh_connection(
                first_attempt=True, reused=reused, received_anything=False,
                request_written=True,
                idempotent=idempotent(method, any(k in headers for k in IDEMPOTENCY_KEYS)),
                body_replayable=stream is None or not stream.started,
            ):
                raise UpstreamError(_describe(exc)) from exc
            log.debug("retrying %s %s on a fresh connection: %s", method, url, exc)
        except aiohttp.ClientError as exc:
            _refused(stream)
            raise UpstreamError(_describe(exc)) from exc
        except TimeoutError as exc:
            raise UpstreamError(no_headers_within(header_timeout or 0)) from exc
        finally:
            ATTEMPT.reset(token)
        try:
            async with asyncio.timeout(header_timeout):
                return await up.fresh.request(
                    method, url, headers=headers, data=data, allow_redirects=False
                )
        except aiohttp.ClientError as exc:
            _refused(stream)
            raise UpstreamError(_describe(exc)) from exc
        except TimeoutError as exc:
            raise UpstreamError(no_headers_within(header_timeout or 0)) from exc

    async def forward(
        self,
        request: web.Request,
        model: Model,
        path: str,
        body: Body,
        *,
        into: web.StreamResponse | None = None,
        tap: Callable[[aiohttp.ClientResponse], None] | None = None,
        raw: bool = False,
    ) -> web.StreamResponse:
        """Proxy `request` to `model` at `path` (query string kept) and relay the answer.

        The query string goes out exactly as the client sent it (as the fast path does)
        unless a pin or selector rewrote it (`FORWARD_QUERY`);
        `raw`: so does `path`, the client's own percent-encoded text, else it is a decoded
        path, encoded here.

        `into`: an already started response (sendLoadingState) that receives only the
        upstream's body.  `tap`: called with the upstream's response before it is relayed
        (the activity log tees it there).  Raises UpstreamError when nothing was answered
        yet (the caller renders a 502)."""
        qs = forward_query(request)
        encoded_path = path if raw else URL.build(path=path).raw_path
        path_qs = f"{encoded_path}?{qs}" if qs else encoded_path
        upstream = await self.send(
            model, request.method, path_qs, request_headers(request), body, encoded=True
        )
        if tap is not None:
            tap(upstream)
        try:
            resp = await relay(request, upstream, into=into, model_id=model.id)
        except BaseException:
            upstream.close()
            raise
        upstream.release()  # pooled or closed, as its head decided (pooling.py)
        return resp


async def relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    *,
    into: web.StreamResponse | None = None,
    model_id: str = "",
) -> web.StreamResponse:
    """Write the upstream's response to the client as it arrives; return when it is
    complete (written and ended) or aborted, so in-flight accounting stays exact.
    `model_id` is named in the last event of an event stream the upstream cut short."""
    if into is not None:
        resp = into
    else:
        headers = response_headers(upstream)
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY:
            try:
                data = await upstream.read()
            except aiohttp.ClientError as exc:
                raise UpstreamError(_describe(exc)) from exc
            headers.popall("Content-Length", None)
            small = web.Response(
                status=upstream.status, reason=upstream.reason, body=data, headers=headers
            )
            await small.prepare(request)
            await small.write_eof()
            return small
        resp = CountingResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        await resp.prepare(request)
    content = upstream.content
    while True:
        try:
            chunk = await content.readany()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            log.warning(UPSTREAM_ABORTED, exc)
            if into is not None or _SSE in upstream.headers.get("Content-Type", ""):
                with contextlib.suppress(ConnectionError):
                    await resp.write(stream_ended_early(model_id, exc))
            if request.transport is not None:
                request.transport.close()  # flush what was relayed, end without a clean EOF
            return resp
        if not chunk:
            break
        await resp.write(chunk)  # a client gone raises here; forward() closes the upstream
    await resp.write_eof()
    return resp


def _payload(body: Body, headers: CIMultiDict[str]) -> tuple[Any, _ReplayableStream | None]:
    """What to hand aiohttp: bytes as they are (replayable), streams wrapped so a retry
    knows whether anything was sent.  A ForwardBody's known length becomes Content-Length."""
    if body is None or isinstance(body, bytes | bytearray):
        return body, None
    data = getattr(body, "data", None)
    if isinstance(data, bytes | bytearray):
        return data, None
    if hasattr(body, "chunks"):
        if body.length is not None:
            headers["Content-Length"] = str(body.length)
        body = body.chunks()
    stream = _ReplayableStream(body)
    return stream, stream


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        # its str() is the repr of a half-parsed response when the upstream hung up mid-headers
        return f"ServerDisconnectedError: {CLOSED_BEFORE_ANSWERING}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
