"""`/comfyui/...`: ComfyUI's web app and API through the reserved local model `comfyui_auto`.

ComfyUI is a page that keeps talking to its server (assets, polling, a websocket), so:
- `/comfyui` redirects to `/comfyui/` keeping the query (301 for GET/HEAD, 308 otherwise);
- `/comfyui/<rest>` goes to `comfyui_auto`'s server as `/<rest>`, the path percent-encoded
  exactly as the client sent it, the query too;
- only the root, `/comfyui/`, may start the model: any other path while it is not ready is
  a 409, so a page left open does not bring an unloaded model back;
- requests are scheduled as usual (the compiler gives `comfyui_auto` a concurrency limit of
  at least 50); its websockets, which the compiler always marks ignored, bypass the
  scheduler (runtime/http/aio/websocket.py);
- no filters, no activity log, not listed in flight. A peer's `comfyui_auto` does not count.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from yarl import URL

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.aio.forward import forward_local, serve_granted
from llama_swap.runtime.http.aio.websocket import is_upgrade, serve_websocket
from llama_swap.runtime.http.render.errors import error_response
from llama_swap.runtime.http.request.body import StreamBody
from llama_swap.runtime.http.services import Services

COMFYUI_MODEL = "comfyui_auto"
PREFIX = "/comfyui"


async def to_root(request: web.Request) -> web.Response:
    location = PREFIX + "/"
    if request.rel_url.raw_query_string:
        location += "?" + request.rel_url.raw_query_string
    if request.method in ("GET", "HEAD"):
        raise web.HTTPMovedPermanently(location)
    raise web.HTTPPermanentRedirect(location)


async def comfyui(request: web.Request) -> web.StreamResponse:
    services = request.app[STATE]
    plan = services.plan
    if COMFYUI_MODEL not in plan.models or COMFYUI_MODEL not in services.router.processes:
        return error_response(request.headers, 404, f"local model {COMFYUI_MODEL} not found")
    remaining = "/" + request.match_info["tail"].removeprefix("/")
    raw = request.rel_url.raw_path
    # the rest of the path as the client encoded it (else the decoded rest, encoded once)
    path = raw[len(PREFIX):] if raw.startswith(PREFIX + "/") else URL.build(path=remaining).raw_path
    if remaining != "/" and (
        services.router.model_state(COMFYUI_MODEL) is not ProcessState.READY
    ):
        return error_response(
            request.headers, 409,
            f"model {COMFYUI_MODEL} is not loaded; only {PREFIX}/ can start it",
        )
    if is_upgrade(request):
        return await serve_websocket(request, services, COMFYUI_MODEL, path, raw=True)
    body: Any = None
    if request.body_exists:
        body = StreamBody(request.content, request.content_length, plan.settings.maxRequestBody)

    def send(model: Model) -> Any:
        return forward_local(request, services, model, path, body, raw=True)

    return await serve_granted(request, services, COMFYUI_MODEL, send)


def register(app: web.Application, services: Services) -> None:
    app.router.add_route("*", PREFIX, to_root)
    app.router.add_route("*", PREFIX + "/{tail:.*}", comfyui)
