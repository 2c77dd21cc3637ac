"""Websockets through the aiohttp front door: bridged to the model's server message by
message, scheduled like any request -- or, for a model that ignores websockets
(runtime/core/websockets.py), served directly while it is ready, holding nothing.

Shared by `/upstream/<model>/...` and `/comfyui/...`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.websockets import (
    ignored_websocket_refusal,
    ignores_websockets,
    is_websocket_upgrade,
)
from llama_swap.runtime.http.aio.forward import serve_granted
from llama_swap.runtime.http.aio.proxy import request_headers
from llama_swap.runtime.http.render.errors import route_error_response
from llama_swap.runtime.http.services import Services

_WS_SKIP = frozenset(
    {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
     "sec-websocket-extensions", "sec-websocket-protocol", "content-length"}
)


def is_upgrade(request: web.BaseRequest) -> bool:
    headers = request.headers
    return is_websocket_upgrade(headers.getall("Connection", ()), headers.getall("Upgrade", ()))


async def serve_websocket(
    request: web.Request, services: Services, model_id: str, path: str, raw: bool
) -> web.StreamResponse:
    """Bridge the upgrade to `model_id` at `path` (`raw`: percent-encoded as the client
    sent it, with the raw query), through the scheduler unless the model ignores websockets."""
    if ignores_websockets(services.plan, model_id):
        refusal = ignored_websocket_refusal(
            services.plan, model_id, services.router.model_state(model_id)
        )
        if refusal is not None:
            return route_error_response(request.headers, refusal)
        return await bridge_websocket(request, services.plan.models[model_id], path, raw)
    return await serve_granted(
        request, services, model_id, lambda model: bridge_websocket(request, model, path, raw)
    )


async def bridge_websocket(
    request: web.Request, model: Model, path: str, raw: bool
) -> web.StreamResponse:
    """Open the same websocket on the upstream, then relay messages both ways until one closes."""
    qs = request.rel_url.raw_query_string if raw else request.query_string
    text = model.proxy.rstrip("/").replace("http", "ws", 1) + path
    if qs:
        text += "?" + qs
    url: str | URL = URL(text, encoded=True) if raw else text
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
