"""Every model-dispatched route, served by one handler.

Find the model (JSON body, multipart form read only up to its `model` field, `?model=`
for GET), apply the active profile's pins and selectors (runtime/http/request/choose.py,
shared with the fast path), apply the filters, then ask admission (runtime/core/admission.py) where the
request goes: a local model (id or alias) wins, else the first peer listing the name,
else 404.  Local requests wait for the router's grant while holding nothing but the
request; a streaming chat request to a model that is not ready gets the loading-state
prelude when the model asks for it.  The versionless `/v/...` routes are forwarded
without their `/v` prefix.  POST exchanges are recorded in the activity log (and
captured while captures are on) through `recording`.  Every request is listed in flight
while it is served, and can be cancelled from there (runtime/http/aio/inflight.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from llama_swap.runtime.core.admission import Admit, admit
from llama_swap.runtime.core.error_body import NO_MODEL
from llama_swap.runtime.core.errors import RouteError, unknown_model
from llama_swap.runtime.core.inference_routes import (
    GET_ROUTES,
    JSON_ROUTES,
    MULTIPART_ROUTES,
    VERSIONLESS_ROUTES,
    forward_path,
)
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.aio.extract import extract
from llama_swap.runtime.http.aio.forward import serve_loading, serve_local
from llama_swap.runtime.http.aio.inflight import tracked
from llama_swap.runtime.http.aio.proxy import FORWARD_QUERY
from llama_swap.runtime.http.observe.activity import ResponseMeter
from llama_swap.runtime.http.observe.recording import recording
from llama_swap.runtime.http.render.errors import route_error_response
from llama_swap.runtime.http.request.choose import choose_for, query_with_model, release
from llama_swap.runtime.http.request.extract import Extracted
from llama_swap.runtime.http.request.filters import filter_request
from llama_swap.runtime.http.services import Services


async def dispatch(request: web.Request) -> web.StreamResponse:
    services = request.app[STATE]
    req = await extract(request, services.plan)
    try:
        chosen = choose_for(services.router, req)  # profile pins, then selectors
    except BaseException:
        req.body.close()
        raise
    if req.query is not None and req.query != request.rel_url.raw_query_string:
        request[FORWARD_QUERY] = req.query  # a GET's ?model= rewritten
    meter = ResponseMeter() if request.method == "POST" else None
    try:
        with recording(
            services, request.headers, req.model_id, request.path, meter, req, chosen.selector
        ) as rec:
            resp = await tracked(
                request, services.inflight, req.model_id, request.path,
                lambda: _dispatch(request, services, req, meter),
            )
            rec.answered(resp.status, resp.headers, getattr(resp, "body", None))
            return resp
    finally:
        release(services.router, chosen)
        req.body.close()


async def _dispatch(
    request: web.Request, services: Services, req: Extracted, meter: ResponseMeter | None
) -> web.StreamResponse:
    plan = services.plan
    req = filter_request(plan, req)
    path = forward_path(request.path)
    body: Any = req.body if (request.body_exists or req.has_json) else None
    where = admit(plan, services.router.processes, req.model_id, path, req.streaming)
    if where is Admit.LOCAL:
        return await serve_local(request, services, req.model_id, path, body, meter=meter)
    if where is Admit.LOADING:
        return await serve_loading(request, services, req.model_id, path, body, meter=meter)
    if where is Admit.PEER:
        peer = plan.peer_for(req.model_id)
        assert peer is not None
        found = plan.peer_model(req.model)
        if req.query is not None and found is not None and found.model != req.model:
            # a GET naming `peer/model` reaches the peer under the peer's own id (the
            # filters do this for bodies)
            request[FORWARD_QUERY] = query_with_model(req.query, found.model)
        return await services.peers.forward(request, peer, path, body, meter=meter)
    if where is Admit.NO_MODEL:
        return route_error_response(request.headers, RouteError(404, NO_MODEL))
    return route_error_response(request.headers, unknown_model(req.model))


def register(app: web.Application, services: Services) -> None:
    for path in (*JSON_ROUTES, *VERSIONLESS_ROUTES, *MULTIPART_ROUTES):
        app.router.add_post(path, dispatch)
    for path in GET_ROUTES:
        app.router.add_get(path, dispatch)
