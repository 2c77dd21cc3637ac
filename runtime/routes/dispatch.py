"""Every model-dispatched route (reference 5.2-5.4, 5.8, 5.13, 5.14).

One handler serves them all: find the model (JSON body, multipart form read
only up to its `model` field, `?model=` for GET), apply the filters, then
dispatch: a local model (id or alias) wins, else the first peer listing the
name, else 404.  Local requests wait for the router's grant while holding
nothing but the request; a streaming chat request to a model that is not ready
gets the loading-state prelude when the model asks for it.  The versionless
`/v/...` routes are forwarded without their `/v` prefix.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runtime.app import STATE, AppState
from runtime.errors import RouteError, RouteFailure, unknown_model
from runtime.process_state import ProcessState
from runtime.proxy import UpstreamError
from runtime.routes.inference import JSON_ROUTES, VERSIONLESS_ROUTES, forward_path
from runtime.web.errors import error_payload, route_error_response
from runtime.web.events import InflightCounter
from runtime.web.extract import extract
from runtime.web.filters import filter_request
from runtime.web.loading_state import LoadingState, start_sse, wants_loading_state
from runtime.web.peers import PeerPool

MULTIPART_ROUTES: tuple[str, ...] = ("/v1/audio/transcriptions", "/v1/images/edits")
GET_ROUTES: tuple[str, ...] = ("/v1/audio/voices", "/sdapi/v1/loras")
PEERS = web.AppKey("llama_swap_peers", PeerPool)
INFLIGHT = web.AppKey("llama_swap_inflight", InflightCounter)


def upstream_error(model_id: str, exc: UpstreamError) -> RouteError:
    return RouteError(502, f"[{model_id}] upstream error: {exc}")


async def serve_local(
    request: web.Request, state: AppState, model_id: str, path: str, body: Any, *,
    streaming: bool = False,
) -> web.StreamResponse:
    """Acquire `model_id` (with the loading-state prelude when it applies), then proxy."""
    router = state.router
    model = state.plan.models[model_id]
    ready = router.model_state(model_id) is ProcessState.READY
    if not wants_loading_state(path, streaming, model.sendLoadingState, ready):
        try:
            lease = await router.acquire(model_id)
        except RouteFailure as failure:
            return route_error_response(request, failure.error)
        async with lease:
            try:
                return await state.upstreams.forward(request, lease.model, path, body)
            except UpstreamError as exc:
                return route_error_response(request, upstream_error(model_id, exc))

    resp = await start_sse(request)
    loader = LoadingState(resp, model_id)
    try:
        lease = await loader.run(lambda cb: router.acquire(model_id, on_position=cb))
    except (RouteFailure, ConnectionResetError):
        return resp
    async with lease:
        try:
            await state.upstreams.forward(request, lease.model, path, body, into=resp)
        except UpstreamError as exc:
            await resp.write(b"data: " + error_payload(upstream_error(model_id, exc)) + b"\n\n")
    return resp


async def dispatch(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    plan = state.plan
    req = await extract(request, plan)
    try:
        with request.app[INFLIGHT].track():
            req = filter_request(plan, req)
            path = forward_path(request.path)
            body: Any = req.body if (request.body_exists or req.has_json) else None
            if req.model_id in state.router.processes:
                return await serve_local(
                    request, state, req.model_id, path, body, streaming=req.streaming
                )
            peer = plan.peer_for(req.model_id)
            if peer is not None:
                return await request.app[PEERS].forward(request, peer, path, body)
            return route_error_response(request, unknown_model(req.model))
    finally:
        req.body.close()


def register(app: web.Application) -> None:
    pool = PeerPool()
    app[PEERS] = pool
    app[INFLIGHT] = InflightCounter()  # surface.py connects it to the /api/events hub

    async def close_peers(_: web.Application) -> None:
        await pool.close()

    app.on_cleanup.append(close_peers)
    for path in (*JSON_ROUTES, *VERSIONLESS_ROUTES, *MULTIPART_ROUTES):
        app.router.add_post(path, dispatch)
    for path in GET_ROUTES:
        app.router.add_get(path, dispatch)
