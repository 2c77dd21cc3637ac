"""The model-dispatched inference routes with a JSON body (reference 5.2).

Flow of one request: read the body (JSON bodies are small and must be parsed
to find the model), resolve the name through ids and aliases, wait for the
router's grant (`Router.acquire`), then stream the exchange through the
upstream pool while holding the lease, so the request counts as in flight
exactly until its response is finished or aborted.

The versionless `/v/...` spellings are served too, with the `/v` prefix
stripped before forwarding.  Peers, filters, multipart and loading state are
issue 4's (runtime/web); `serve_local` is the seam they build on.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.errors import RouteError, RouteFailure, unknown_model
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.aio.proxy import Body, UpstreamError
from llama_swap.runtime.http.render.errors import NO_MODEL, error_response, route_error_response

JSON_ROUTES: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/reranking",
    "/rerank",
    "/v1/rerank",
    "/v1/reranking",
    "/infill",
    "/completion",
    "/v1/audio/speech",
    "/v1/audio/voices",
    "/v1/images/generations",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
)
VERSIONLESS_ROUTES: tuple[str, ...] = (
    "/v/chat/completions",
    "/v/responses",
    "/v/completions",
    "/v/messages",
    "/v/messages/count_tokens",
    "/v/embeddings",
    "/v/rerank",
    "/v/reranking",
)


def model_from_body(content_type: str, body: bytes) -> str:
    """The requested model name: JSON `model` (non-strings as JSON text), else a form field."""
    if "application/json" in content_type:
        try:
            doc: Any = json.loads(body)
        except ValueError:
            return ""
        value = doc.get("model") if isinstance(doc, dict) else None
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return (form.get("model") or [""])[0]


def forward_path(path: str) -> str:
    """`/v/chat/completions` -> `/chat/completions`; other paths unchanged."""
    return path[2:] if path.startswith("/v/") else path


def upstream_error(model_id: str, exc: UpstreamError) -> RouteError:
    return RouteError(502, f"[{model_id}] upstream error: {exc}")


async def serve_granted(
    request: web.Request,
    model_id: str,
    send: Callable[[Model], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Wait for `model_id`'s grant, then answer with `send(model)` while holding the lease
    (released however `send` ends); an UpstreamError (nothing answered yet) is a 502."""
    try:
        lease = await request.app[STATE].router.acquire(model_id)
    except RouteFailure as failure:
        return route_error_response(request, failure.error)
    try:
        return await send(lease.model)
    except UpstreamError as exc:
        return route_error_response(request, upstream_error(model_id, exc))
    finally:
        lease.release()


async def serve_local(request: web.Request, model_id: str, path: str, body: Body) -> web.StreamResponse:
    """Wait for `model_id`'s grant, then proxy `request` to it at `path`."""
    upstreams = request.app[STATE].upstreams
    return await serve_granted(
        request, model_id, lambda model: upstreams.forward(request, model, path, body)
    )


async def handle_json(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.read()
    name = model_from_body(request.headers.get("Content-Type", ""), body)
    if not name:
        name = request.rel_url.query.get("model", "")
    if not name:
        return error_response(request, 404, NO_MODEL)
    model_id = state.plan.resolve(name)
    if model_id is None:
        return route_error_response(request, unknown_model(name))
    return await serve_local(request, model_id, forward_path(request.path), body)


def register(app: web.Application) -> None:
    for path in (*JSON_ROUTES, *VERSIONLESS_ROUTES):
        app.router.add_post(path, handle_json)
