"""Serving a local model through the aiohttp front door: wait for the grant, forward,
relay, with the loading-state prelude when admission asks for it.

The loading stream commits the answer to a 200, so it opens only once the scheduler has
admitted the request: a request it refuses (unknown model, over the concurrency limit)
gets a plain error response with its real status instead of an error inside a 200 stream.

Shared by the model-dispatched routes and `/upstream/...`.  A request holds nothing but
itself while it waits for the router's grant, and holds the lease while the answer is
relayed, so it counts as in flight exactly until the answer is finished or aborted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.error_body import error_payload
from llama_swap.runtime.core.errors import RouteError, RouteFailure
from llama_swap.runtime.core.forwarding import upstream_error
from llama_swap.runtime.engine.events import Lease
from llama_swap.runtime.http.aio.proxy import CountingResponse, UpstreamError
from llama_swap.runtime.http.observe.activity import ResponseMeter, tee_response
from llama_swap.runtime.http.render.errors import route_error_response
from llama_swap.runtime.http.render.loading_state import SSE_HEADERS, LoadingState
from llama_swap.runtime.http.services import Services


async def forward_local(
    request: web.Request,
    services: Services,
    model: Model,
    path: str,
    body: Any,
    *,
    into: web.StreamResponse | None = None,
    meter: ResponseMeter | None = None,
    raw: bool = False,
) -> web.StreamResponse:
    """`UpstreamPool.forward`, with the response shown to `meter` as it passes (`raw`:
    `path` and the query go out percent-encoded exactly as the client sent them)."""
    tap = None if meter is None else (lambda upstream: tee_response(upstream, meter))
    return await services.upstreams.forward(
        request, model, path, body, into=into, tap=tap, raw=raw
    )


async def serve_granted(
    request: web.Request,
    services: Services,
    model_id: str,
    send: Callable[[Model], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Wait for `model_id`'s grant, then answer with `send(model)` while holding the lease
    (released however `send` ends); an UpstreamError (nothing answered yet) is a 502."""
    try:
        lease = await services.router.acquire(model_id)
    except RouteFailure as failure:
        return route_error_response(request.headers, failure.error)
    try:
        return await send(lease.model)
    except UpstreamError as exc:
        return route_error_response(request.headers, upstream_error(model_id, exc))
    finally:
        lease.release()


async def serve_local(
    request: web.Request, services: Services, model_id: str, path: str, body: Any, *,
    meter: ResponseMeter | None = None,
) -> web.StreamResponse:
    """Acquire `model_id`, then proxy `request` to it at `path`."""
    return await serve_granted(
        request, services, model_id,
        lambda m: forward_local(request, services, m, path, body, meter=meter),
    )


async def start_sse(request: web.BaseRequest) -> web.StreamResponse:
    """Send the 200 SSE headers right away."""
    resp = CountingResponse(status=200, headers=SSE_HEADERS)
    await resp.prepare(request)
    return resp


def _meter_error(meter: ResponseMeter | None, error: RouteError) -> None:
    """Show the activity log the error frame written into an already started stream."""
    if meter is not None:
        meter.start(error.status, {"Content-Type": "application/json"})
        meter.feed(error_payload(error))


class _PositionRelay:
    """Forwards queue positions to a listener that attaches later.

    Positions are published from admission on, while the loading stream that shows them
    is opened only after it; the newest one seen meanwhile is handed over on `attach`."""

    def __init__(self) -> None:
        self._listener: Callable[[int], None] | None = None
        self._pending: int | None = None

    def __call__(self, position: int) -> None:
        if self._listener is None:
            self._pending = position
        else:
            self._listener(position)

    def attach(self, listener: Callable[[int], None]) -> None:
        self._listener = listener
        if self._pending is not None:
            listener(self._pending)


async def _until_admitted(waiter: asyncio.Future[Lease], admitted: asyncio.Event) -> None:
    """Return once the request was admitted or `waiter` finished (granted or refused)."""
    signal = asyncio.ensure_future(admitted.wait())
    try:
        either: set[asyncio.Future[Any]] = {waiter, signal}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signal.cancel()


async def serve_loading(
    request: web.Request, services: Services, model_id: str, path: str, body: Any, *,
    meter: ResponseMeter | None = None,
) -> web.StreamResponse:
    """Wait for admission, then start the event stream, stream loading progress while the
    grant is awaited, then stream the upstream's answer into the same response.  A refusal
    before admission is a plain error response; errors after the start are one SSE `data:`
    frame (the status is already 200)."""
    admitted = asyncio.Event()
    relay = _PositionRelay()
    waiter = asyncio.ensure_future(
        services.router.acquire(model_id, on_position=relay, on_admitted=admitted.set)
    )
    try:
        await _until_admitted(waiter, admitted)
        if waiter.done() and not waiter.cancelled() and waiter.exception() is not None:
            try:
                waiter.result()
            except RouteFailure as failure:
                return route_error_response(request.headers, failure.error)
        resp = await start_sse(request)
    except BaseException:
        waiter.cancel()  # the router forgets the request, or releases a racing grant
        raise
    loader = LoadingState(resp, model_id)
    relay.attach(loader.on_position)
    try:
        lease = await loader.run(lambda _: waiter)
    except RouteFailure as failure:
        _meter_error(meter, failure.error)
        return resp
    except ConnectionResetError:
        return resp
    async with lease:
        try:
            await forward_local(request, services, lease.model, path, body, into=resp, meter=meter)
        except UpstreamError as exc:
            error = upstream_error(model_id, exc)
            _meter_error(meter, error)
            await resp.write(b"data: " + error_payload(error) + b"\n\n")
    return resp
