"""Serving a local model through the aiohttp front door: wait for the grant, forward,
relay, with the loading-state prelude when admission asks for it.

Shared by the model-dispatched routes and `/upstream/...`.  A request holds nothing but
itself while it waits for the router's grant, and holds the lease while the answer is
relayed, so it counts as in flight exactly until the answer is finished or aborted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.error_body import error_payload
from llama_swap.runtime.core.errors import RouteError, RouteFailure
from llama_swap.runtime.core.forwarding import upstream_error
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
) -> web.StreamResponse:
    """`UpstreamPool.forward`, with the response shown to `meter` as it passes."""
    tap = None if meter is None else (lambda upstream: tee_response(upstream, meter))
    return await services.upstreams.forward(request, model, path, body, into=into, tap=tap)


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


async def serve_loading(
    request: web.Request, services: Services, model_id: str, path: str, body: Any, *,
    meter: ResponseMeter | None = None,
) -> web.StreamResponse:
    """Start the event stream at once, stream loading progress while the grant is awaited,
    then stream the upstream's answer into the same response.  Errors after the start
    are one SSE `data:` frame (the status is already 200)."""
    resp = await start_sse(request)
    loader = LoadingState(resp, model_id)
    router = services.router
    try:
        lease = await loader.run(lambda cb: router.acquire(model_id, on_position=cb))
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
