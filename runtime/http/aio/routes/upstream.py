"""`/upstream/{model}/{path}`: direct passthrough to a model's own server.

The model is the longest path prefix naming a local model or alias.  A bare
`/upstream/<model>` is redirected to `/upstream/<model>/` (301 GET/HEAD, 308
otherwise) so relative URLs in the upstream's pages resolve.  Paths matching
`upstream.ignorePaths` (static assets) never trigger a load: 409 while the
model is not loaded.  Anything else is scheduled like an inference request,
then proxied with the body streamed; websocket upgrades are bridged both ways.
No filters are applied.  POSTs to a model-dispatched path (`/upstream/m/v1/chat/completions`)
are recorded in the activity log like the dispatched routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.inference_routes import METERED_PATHS
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.aio.forward import forward_local, serve_granted
from llama_swap.runtime.http.aio.proxy import request_headers
from llama_swap.runtime.http.observe.activity import ResponseMeter
from llama_swap.runtime.http.observe.recording import recording
from llama_swap.runtime.http.render.errors import error_response, route_error_response
from llama_swap.runtime.http.request.body import StreamBody, TeeBody
from llama_swap.runtime.http.request.extract import find_model_in_path
from llama_swap.runtime.http.services import Services

_WS_SKIP = frozenset(
    {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
     "sec-websocket-extensions", "sec-websocket-protocol", "content-length"}
)


def ignored(patterns: tuple[str, ...], path: str) -> bool:
    for pattern in patterns:
        try:
            if re.search(pattern, path):
                return True
        except re.error:
            continue
    return False


async def upstream(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    plan = state.plan
    found = find_model_in_path(plan, "/" + request.match_info["tail"])
    if found is None:
        return error_response(request.headers, 404, "model not found")
    if found.remaining == "/" and not request.path.endswith("/"):
        location = f"/upstream/{found.name}/"
        if request.query_string:
            location += "?" + request.query_string
        if request.method in ("GET", "HEAD"):
            raise web.HTTPMovedPermanently(location)
        raise web.HTTPPermanentRedirect(location)
    model_id = found.model_id
    if model_id not in state.router.processes:
        return error_response(request.headers, 404, f"no router for model {model_id}")
    if ignored(plan.settings.ignorePaths, found.remaining) and (
        state.router.model_state(model_id) is not ProcessState.READY
    ):
        return error_response(
            request.headers, 409, f"model {model_id} is not loaded; path matches upstream.ignorePaths"
        )
    metered = request.method == "POST" and found.remaining in METERED_PATHS
    meter = ResponseMeter() if metered else None
    body: Any = None
    if request.body_exists:
        body = StreamBody(request.content, request.content_length, plan.settings.maxRequestBody)
        capacity = state.captures.capacity
        if metered and capacity > 0 and (request.content_length or 0) <= capacity:
            body = TeeBody(body, capacity)  # kept for the capture while it is forwarded
    source = SimpleNamespace(body=body)
    with recording(state, request.headers, model_id, found.remaining, meter, source) as rec:
        resp = await _serve(request, state, model_id, found.remaining, meter, body)
        rec.answered(resp.status, resp.headers, getattr(resp, "body", None))
        return resp


async def _serve(
    request: web.Request, state: Services, model_id: str, path: str,
    meter: ResponseMeter | None, body: Any,
) -> web.StreamResponse:

    def send(model: Model) -> Awaitable[web.StreamResponse]:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return bridge_websocket(request, model, path)
        return forward_local(request, state, model, path, body, meter=meter)

    return await serve_granted(request, state, model_id, send)


async def bridge_websocket(request: web.Request, model: Model, path: str) -> web.StreamResponse:
    """Open the same websocket on the upstream, then relay messages both ways until one closes."""
    url = model.proxy.rstrip("/").replace("http", "ws", 1) + path
    if request.query_string:
        url += "?" + request.query_string
    headers = {k: v for k, v in request_headers(request).items() if k.lower() not in _WS_SKIP}
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        try:
            remote = await session.ws_connect(url, headers=headers, protocols=protocols)
        except (aiohttp.ClientError, OSError) as exc:
            return route_error_response(request.headers, RouteError(502, f"[{model.id}] websocket error: {exc}"))
        client = web.WebSocketResponse(protocols=protocols)
        await client.prepare(request)

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                else:
                    break

        tasks = [asyncio.ensure_future(pump(client, remote)), asyncio.ensure_future(pump(remote, client))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            await remote.close()
            await client.close()
        return client


def register(app: web.Application, services: Services) -> None:
    app.router.add_route("*", "/upstream/{tail:.*}", upstream)
