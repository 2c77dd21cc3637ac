"""Every model-dispatched route (reference 5.2-5.4, 5.8, 5.13, 5.14, 5.15).

One handler serves them all: find the model (JSON body, multipart form read
only up to its `model` field, `?model=` for GET), apply the filters, then
dispatch: a local model (id or alias) wins, else the first peer listing the
name, else 404.  Local requests wait for the router's grant while holding
nothing but the request; a streaming chat request to a model that is not ready
gets the loading-state prelude when the model asks for it.  The versionless
`/v/...` routes are forwarded without their `/v` prefix.

POST requests are recorded in the activity log (`ACTIVITY`): the upstream's
response is teed through a `ResponseMeter` as it is relayed (never delayed),
and one entry is appended when the response is finished or aborted.  While
`captureBuffer` > 0 the exchange is also captured (runtime/web/captures.py):
by reference to the bytes and headers already at hand, nothing copied or encoded.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.core.errors import RouteFailure, unknown_model
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers.fifo import grant_metadata
from llama_swap.runtime.http.aio.app import STATE, AppState
from llama_swap.runtime.http.aio.peers import PeerPool
from llama_swap.runtime.http.aio.proxy import UpstreamError
from llama_swap.runtime.http.aio.routes.inference import (
    JSON_ROUTES,
    VERSIONLESS_ROUTES,
    forward_path,
    serve_granted,
    upstream_error,
)
from llama_swap.runtime.http.observe.activity import ActivityLog, ResponseMeter, tee_response
from llama_swap.runtime.http.observe.captures import CaptureStore, Draft
from llama_swap.runtime.http.observe.events import InflightCounter
from llama_swap.runtime.http.render.errors import error_payload, route_error_response
from llama_swap.runtime.http.render.loading_state import (
    LoadingState,
    start_sse,
    wants_loading_state,
)
from llama_swap.runtime.http.request.body import BytesBody, TeeBody
from llama_swap.runtime.http.request.extract import extract
from llama_swap.runtime.http.request.filters import filter_request

MULTIPART_ROUTES: tuple[str, ...] = ("/v1/audio/transcriptions", "/v1/images/edits")
GET_ROUTES: tuple[str, ...] = ("/v1/audio/voices", "/sdapi/v1/loras")
# POST paths whose exchanges are recorded (also as `/upstream/<model><path>`).
METERED_PATHS: frozenset[str] = frozenset((*JSON_ROUTES, *VERSIONLESS_ROUTES, *MULTIPART_ROUTES))
PEERS = web.AppKey("llama_swap_peers", PeerPool)
INFLIGHT = web.AppKey("llama_swap_inflight", InflightCounter)
ACTIVITY = web.AppKey("llama_swap_activity", ActivityLog)
CAPTURES = web.AppKey("llama_swap_captures", CaptureStore)


async def forward_local(
    request: web.Request,
    state: AppState,
    model: Model,
    path: str,
    body: Any,
    *,
    into: web.StreamResponse | None = None,
    meter: ResponseMeter | None = None,
) -> web.StreamResponse:
    """`UpstreamPool.forward`, with the response shown to `meter` as it passes."""
    tap = None if meter is None else (lambda upstream: tee_response(upstream, meter))
    return await state.upstreams.forward(request, model, path, body, into=into, tap=tap)


class recording:  # noqa: N801 -- used like a function: `with recording(...) as out:`
    """Append one activity entry when the block ends (normally or not) if an answer
    started.  The block puts the response it returns into the yielded list, so
    llama-swap's own answers (errors) are recorded too.  (A class, not a generator
    context manager: this runs on every request.)"""

    __slots__ = ("_request", "_model_id", "_req_path", "_meter", "_out", "_wall", "_t0", "_draft")

    def __init__(
        self, request: web.Request, model_id: str, req_path: str, meter: ResponseMeter | None,
        source: Any = None,
    ) -> None:
        """`source`: the request's `Extracted` (its body, once filtered, is captured)."""
        self._request = request
        self._model_id = model_id
        self._req_path = req_path
        self._meter = meter
        self._out: list[web.StreamResponse] = []
        self._draft: Draft | None = None
        if meter is not None:
            store = request.app[CAPTURES]
            if store.capacity > 0:  # references only: rendered when /api/captures asks
                self._draft = Draft(
                    store, req_path, request.headers, lambda: _body_bytes(source), meter
                )

    def __enter__(self) -> list[web.StreamResponse]:
        if self._meter is not None:
            self._wall = time.time()
            self._t0 = time.monotonic()
        return self._out

    def __exit__(self, *exc: object) -> None:
        meter = self._meter
        if meter is None:
            return
        out = self._out
        if meter.status is None and out:
            resp = out[0]
            meter.start(resp.status, resp.headers)
            own = getattr(resp, "body", None)
            if isinstance(own, bytes):
                meter.feed(own)
        if meter.status is not None:  # else the client left before any answer
            meter.finish()
            app = self._request.app
            app[ACTIVITY].record(
                started=self._wall,
                duration_ms=(time.monotonic() - self._t0) * 1000,
                model=self._model_id,
                req_path=self._req_path,
                meter=meter,
                capture=None if self._draft is None else self._draft.store,
                metadata=scheduler_metadata(app[STATE].plan, self._model_id),
            )


def scheduler_metadata(plan: Plan, model_id: str) -> dict[str, str] | None:
    """The scheduler's notes on a local model's request (fifo: its priority), else None."""
    routing = plan.routing
    if routing.scheduler == "fifo" and model_id in plan.models:
        return grant_metadata(routing.priority, model_id)
    return None


def _body_bytes(source: Any) -> bytes | None:
    """The request body as forwarded when it was held in memory (JSON, forms) or kept
    while streamed (`TeeBody`), else None."""
    body = getattr(source, "body", None)
    if isinstance(body, BytesBody):
        return body.data
    return body.kept() if isinstance(body, TeeBody) else None


async def serve_local(
    request: web.Request, state: AppState, model_id: str, path: str, body: Any, *,
    streaming: bool = False, meter: ResponseMeter | None = None,
) -> web.StreamResponse:
    """Acquire `model_id` (with the loading-state prelude when it applies), then proxy."""
    router = state.router
    model = state.plan.models[model_id]
    ready = router.model_state(model_id) is ProcessState.READY
    if not wants_loading_state(path, streaming, model.sendLoadingState, ready):
        return await serve_granted(
            request, model_id, lambda m: forward_local(request, state, m, path, body, meter=meter)
        )

    resp = await start_sse(request)
    loader = LoadingState(resp, model_id)
    try:
        lease = await loader.run(lambda cb: router.acquire(model_id, on_position=cb))
    except RouteFailure as failure:
        if meter is not None:
            meter.start(failure.error.status, {"Content-Type": "application/json"})
            meter.feed(error_payload(failure.error))
        return resp
    except ConnectionResetError:
        return resp
    async with lease:
        try:
            await forward_local(request, state, lease.model, path, body, into=resp, meter=meter)
        except UpstreamError as exc:
            error = upstream_error(model_id, exc)
            if meter is not None:
                meter.start(error.status, {"Content-Type": "application/json"})
                meter.feed(error_payload(error))
            await resp.write(b"data: " + error_payload(error) + b"\n\n")
    return resp


async def dispatch(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    plan = state.plan
    req = await extract(request, plan)
    meter = ResponseMeter() if request.method == "POST" else None
    inflight = request.app[INFLIGHT]
    inflight.change(+1)
    try:
        with recording(request, req.model_id, request.path, meter, req) as out:
            resp = await _dispatch(request, state, req, meter)
            out.append(resp)
            return resp
    finally:
        inflight.change(-1)
        req.body.close()


async def _dispatch(
    request: web.Request, state: AppState, req: Any, meter: ResponseMeter | None
) -> web.StreamResponse:
    plan = state.plan
    req = filter_request(plan, req)
    path = forward_path(request.path)
    body: Any = req.body if (request.body_exists or req.has_json) else None
    # a model a reload removed may still have a process draining its last requests: it
    # is no longer the plan's, so new requests treat it as unknown (peer, else 404)
    if req.model_id in plan.models and req.model_id in state.router.processes:
        return await serve_local(
            request, state, req.model_id, path, body, streaming=req.streaming, meter=meter
        )
    peer = plan.peer_for(req.model_id)
    if peer is not None:
        return await request.app[PEERS].forward(request, peer, path, body, meter=meter)
    return route_error_response(request, unknown_model(req.model))


def register(app: web.Application) -> None:
    state = app[STATE]
    pool = PeerPool()
    app[PEERS] = pool
    app[INFLIGHT] = InflightCounter()  # surface.py connects it to the /api/events hub
    app[ACTIVITY] = ActivityLog(lambda: state.plan.settings.metricsMaxInMemory)  # and this
    app[CAPTURES] = CaptureStore(lambda: state.plan.settings.captureBuffer)  # metrics.py serves it

    async def close_peers(_: web.Application) -> None:
        await pool.close()

    app.on_cleanup.append(close_peers)
    for path in (*JSON_ROUTES, *VERSIONLESS_ROUTES, *MULTIPART_ROUTES):
        app.router.add_post(path, dispatch)
    for path in GET_ROUTES:
        app.router.add_get(path, dispatch)
