"""The middleware stack every aiohttp server runs, outermost first.

access log -> CORS preflight -> API-key auth -> body size -> dot segments -> RouteFailure
rendering.

Auth and the body size are judged from the request head, before any handler reads a
byte of the body (runtime/core/limits.py): a 401 or a 413 for a request whose body was
not read says `Connection: close`, and aiohttp discards (never buffers) the unread rest
before it closes the connection.  The same layer tells the connection's guard
(aio/guard.py) when a request starts and ends, so its read timeouts know a request head
is in.  The access log
sits outside CORS so preflights are logged too; CORS sits outside auth so OPTIONS never
needs a key.  Everything reads the plan per request through `services.plan`, so a hot
reload changes keys and log settings at once.

The four layers run as ONE aiohttp middleware: each middleware layer costs a coroutine
and a handler partial per request.  The decisions themselves are plain functions shared
with the fast path (runtime/core/auth.py, runtime/http/middleware/cors.py and mux.py);
this module is only their aiohttp glue.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from llama_swap.runtime.core.auth import rejects, unauthorized
from llama_swap.runtime.core.error_body import route_error_answer
from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.core.limits import (
    body_too_large,
    dot_segments_error,
    exceeds,
    has_dot_segments,
    undecodable_body,
)
from llama_swap.runtime.http.aio.guard import guard_of
from llama_swap.runtime.http.middleware.cors import PREFLIGHT_STATUS, preflight_headers
from llama_swap.runtime.http.middleware.mux import (
    CLIENT_CLOSED,
    METHOD_NOT_ALLOWED_TEXT,
    NOSNIFF,
    NOT_FOUND_TEXT,
    allow_header,
    redirect_target,
)
from llama_swap.runtime.http.observe.access_log import (
    HasPlanAndLog,
    is_ui_refresh,
    log_access,
    proxy_log_of,
)
from llama_swap.runtime.http.render.errors import answer_response, route_error_response

# Request key: the response once its headers went out.
PREPARED: web.RequestKey[web.StreamResponse] = web.RequestKey("llama_swap_prepared", web.StreamResponse)
Handler = Any  # aiohttp's handler type (its alias is not exported under every version)


async def remember_prepared(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """For `app.on_response_prepare`: lets the access log report a streamed response's
    status and bytes even when the client leaves mid-stream (the handler is cancelled)."""
    request[PREPARED] = response


def mux_error(request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
    """The router's own answers, as Go's ServeMux gives them."""
    url = request.rel_url
    location = redirect_target(request.method, url.raw_path, url.raw_query_string)
    if location is not None:
        return web.Response(status=301, headers={"Location": location})
    if exc.status == 405:
        allowed = getattr(exc, "allowed_methods", ()) or ()
        return web.Response(
            status=405, text=METHOD_NOT_ALLOWED_TEXT, headers={"Allow": allow_header(allowed), **NOSNIFF}
        )
    return web.Response(status=exc.status, text=NOT_FOUND_TEXT, headers=NOSNIFF)


def body_size(resp: web.StreamResponse) -> int:
    """Response body bytes, as the access log reports them: in-memory bodies and declared
    lengths, the count a `CountingResponse` (aio/proxy.py) kept for streams; for any other chunked
    stream aiohttp only knows the bytes on the wire (framing and headers included)."""
    if isinstance(resp, web.Response) and isinstance(resp.body, bytes):
        return len(resp.body)
    counted = getattr(resp, "body_bytes", None)
    if counted is not None:
        return int(counted)
    if resp.content_length is not None:
        return resp.content_length
    return resp.body_length


def exception_size(exc: web.HTTPException) -> int:
    """The body bytes of an aiohttp HTTPException answer (0 unless a bytes body)."""
    return len(exc.body or b"") if isinstance(exc.body, bytes) else 0


def _reason(exc: RequestPayloadError) -> str:
    """What aiohttp's parser said about a body, without its exception wrapping."""
    cause = exc.__cause__ or exc
    return str(getattr(cause, "message", "") or cause).strip() or type(cause).__name__


def _close_if_body_unread(request: web.BaseRequest, resp: web.StreamResponse) -> None:
    """An answer given before the request's body was read ends the connection: the rest
    of the body is discarded, not read as the next request, and never buffered."""
    if request.body_exists and not request.content.is_eof() and not resp.prepared:
        resp.force_close()


def default_middlewares(services: HasPlanAndLog) -> list[Any]:
    """The stack, reading `services.plan` per request."""
    proxy_log = proxy_log_of(services)

    @web.middleware
    async def llama_swap_stack(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path  # captured before handlers rewrite anything
        started = time.perf_counter()
        status, size = 500, 0
        headers = request.headers
        guard = guard_of(request)  # the connection's read timeouts: a request is in
        if guard is not None:
            guard.request_started(request)
        try:
            method = request.method
            if method == "OPTIONS":  # CORS preflight, before auth
                resp: web.StreamResponse = web.Response(
                    status=PREFLIGHT_STATUS, headers=preflight_headers(headers)
                )
            elif (unrouted := request.match_info.http_exception) is not None:
                resp = mux_error(request, unrouted)  # the mux answers before any route's auth
            elif rejects((settings := services.plan.settings).apiKeys, method, path, headers):
                resp = answer_response(unauthorized(headers.get("Accept", "")))
                _close_if_body_unread(request, resp)
            elif exceeds(request.content_length, limit := settings.maxRequestBody):
                resp = answer_response(route_error_answer(headers.get("Accept", ""), body_too_large(limit)))
                resp.force_close()
            elif has_dot_segments(request.rel_url.raw_path):
                resp = answer_response(route_error_answer(headers.get("Accept", ""), dot_segments_error()))
                _close_if_body_unread(request, resp)
            else:
                try:
                    resp = await handler(request)
                except RouteFailure as exc:
                    resp = route_error_response(headers, exc.error)
                    _close_if_body_unread(request, resp)
                except RequestPayloadError as exc:  # the body's framing or encoding broke
                    if request.get(PREPARED) is not None:
                        raise  # mid-answer: nothing to do but drop the connection
                    resp = route_error_response(headers, undecodable_body(_reason(exc)))
                    resp.force_close()
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
            if guard is not None:
                guard.request_finished()
            log_access(
                proxy_log(), request.method, path, request.version, headers, request.remote,
                status, size, started,
                quiet=is_ui_refresh(request.method, path, request.query_string),
            )

    return [llama_swap_stack]
