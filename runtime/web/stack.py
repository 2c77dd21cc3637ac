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

import time
from typing import Any, Protocol

from aiohttp import web

from compiler.plan import Plan
from runtime.errors import RouteFailure
from runtime.logs import LogBuffer
from runtime.web.access_log import INFO, SKIP_PREFIXES, access_line, body_size, proxy_log_of
from runtime.web.auth import extract_api_key, is_exempt, key_matches, unauthorized_response
from runtime.web.cors import preflight_response
from runtime.web.errors import route_error_response


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
            status, size = exc.status, len(exc.body or b"") if isinstance(exc.body, bytes) else 0
            raise
        finally:
            log = proxy_log()
            if log.level <= INFO and not path.startswith(SKIP_PREFIXES):
                log.info(access_line(request, path, status, size, time.perf_counter() - started))

    return [llama_swap_stack]
