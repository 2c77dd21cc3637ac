"""The middleware stack every server runs, outermost first (reference 5.1).

access log -> CORS preflight -> API-key auth -> RouteFailure rendering.  The
access log sits outside CORS so preflights are logged too; CORS sits outside
auth so OPTIONS never needs a key.  Everything reads the plan per request
through `state.plan`, so a hot reload changes keys and log settings at once.

The four layers run as ONE aiohttp middleware here (same order, same rules as
the separate middlewares in access_log.py, cors.py, auth.py and errors.py,
which stay for apps that want only some of them): each middleware layer costs
a coroutine and a handler partial per request, and this is the proxy's hot path.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from typing import Any, Protocol

from aiohttp import web

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.http.middleware.auth import (
    extract_api_key,
    is_exempt,
    key_matches,
    unauthorized_response,
)
from llama_swap.runtime.http.middleware.cors import preflight_response
from llama_swap.runtime.http.observe.access_log import (
    body_size,
    exception_size,
    log_access,
    proxy_log_of,
)
from llama_swap.runtime.http.render.errors import route_error_response

# Request key: the response once its headers went out.
PREPARED: web.RequestKey[web.StreamResponse] = web.RequestKey("llama_swap_prepared", web.StreamResponse)
CLIENT_CLOSED = 499  # logged for a request whose client left before any answer (nginx's code)


async def remember_prepared(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """For `app.on_response_prepare`: lets the access log report a streamed response's
    status and bytes even when the client leaves mid-stream (the handler is cancelled)."""
    request[PREPARED] = response


def clean_path(path: str) -> str:
    """Go's ServeMux cleanPath: no `.`/`..` segments or doubled slashes; a trailing slash kept."""
    cleaned = posixpath.normpath("/" + path.lstrip("/")) if path else "/"
    cleaned = "/" + cleaned.lstrip("/")  # normpath keeps a leading "//"
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def mux_error(request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
    """The router's own answers, as Go's ServeMux gives them: a non-canonical path is
    redirected (301) to its clean form, else 404/405 worded as Go words them."""
    raw = request.rel_url.raw_path
    if request.method != "CONNECT" and (cleaned := clean_path(raw)) != raw:
        qs = request.rel_url.raw_query_string
        return web.Response(status=301, headers={"Location": cleaned + ("?" + qs if qs else "")})
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        return web.Response(
            status=405, text="Method Not Allowed\n", headers={"Allow": ", ".join(allowed),
                                                              "X-Content-Type-Options": "nosniff"}
        )
    return web.Response(
        status=exc.status, text="404 page not found\n", headers={"X-Content-Type-Options": "nosniff"}
    )


class HasPlanAndLog(Protocol):
    @property
    def plan(self) -> Plan: ...

    proxy_log: LogBuffer


def default_middlewares(state: HasPlanAndLog) -> list[Any]:
    proxy_log = proxy_log_of(state)

    @web.middleware
    async def llama_swap_stack(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        path = request.path  # captured before handlers rewrite anything
        started = time.perf_counter()
        status, size = 500, 0
        try:
            method = request.method
            if method == "OPTIONS":  # CORS preflight, before auth
                resp: web.StreamResponse = preflight_response(request.headers)
            elif (unrouted := request.match_info.http_exception) is not None:
                resp = mux_error(request, unrouted)  # the mux answers before any route's auth
            else:
                keys = state.plan.settings.apiKeys
                if (
                    keys
                    and not is_exempt(method, path)
                    and not key_matches(extract_api_key(request.headers), keys)
                ):
                    resp = unauthorized_response(request)
                else:
                    try:
                        resp = await handler(request)
                    except RouteFailure as exc:
                        resp = route_error_response(request, exc.error)
            status, size = resp.status, body_size(resp)
            return resp
        except web.HTTPException as exc:
            status, size = exc.status, exception_size(exc)
            raise
        except (asyncio.CancelledError, ConnectionError):
            prepared = request.get(PREPARED)
            if prepared is not None:
                status, size = prepared.status, body_size(prepared)
            else:
                status = CLIENT_CLOSED
            raise
        finally:
            log_access(proxy_log(), request, path, status, size, started)

    return [llama_swap_stack]
