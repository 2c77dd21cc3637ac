"""Error responses, rendered the way the client asked for them (reference 5.5).

One place decides the body shape so every route answers alike: JSON
`{"src":"llama-swap","error":msg}` by default, `llama-swap: <msg>` for
`Accept: text/plain`, a minimal escaped HTML page for `Accept: text/html`.
The 429 is special (no `src`, `Retry-After`), as in the original.

Statuses come from `runtime.errors.RouteError`; where the Go original answers
500 "unspecific error" for a failed start, a health timeout or shutdown we
answer 502/503 (see docs/differences.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from aiohttp import web

from llama_swap.runtime.core.errors import RouteError, RouteFailure

NO_MODEL = "no model id could be identified"
TOO_MANY_REQUESTS_BODY = b'{"error":"Too many requests"}'
_SURROGATE = re.compile("[\ud800-\udfff]")
_GO_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_GO_HTML_ESCAPES = str.maketrans({"&": "&amp;", "'": "&#39;", "<": "&lt;", ">": "&gt;", '"': "&#34;"})


def utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; lone surrogates (from `\\ud800` escapes in a client's JSON
    or undecodable bytes in a URL) become U+FFFD, as Go writes invalid text."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


def render_error(accept: str, message: str) -> tuple[bytes, str]:
    """The body and content type for `message` given the request's Accept header.
    The JSON is what Go's `json.Marshal` of the map writes: compact, keys sorted,
    `<`, `>` and `&` escaped."""
    if "text/plain" in accept:
        return utf8(f"llama-swap: {message}"), "text/plain"
    if "text/html" in accept:
        escaped = message.translate(_GO_HTML_ESCAPES)  # Go's html.EscapeString
        page = f"<html><body><h1>llama-swap</h1><p>{escaped}</p></body></html>"
        return utf8(page), "text/html"
    text = json.dumps(message, ensure_ascii=False).translate(_GO_JSON_ESCAPES)
    return utf8(f'{{"error":{text},"src":"llama-swap"}}'), "application/json"


def error_response(
    request: web.BaseRequest | Mapping[str, str] | None,
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A complete error response; `request` may be the request or just its headers."""
    accept = ""
    if isinstance(request, web.BaseRequest):
        accept = request.headers.get("Accept", "")
    elif request is not None:
        accept = request.get("Accept", "") or request.get("accept", "")
    body, ctype = render_error(accept, message)
    resp = web.Response(status=status, body=body, headers=dict(headers or {}))
    resp.content_type = ctype
    return resp


def too_many_requests_response(retry_after: int = 1) -> web.Response:
    """The scheduler's 429, byte-for-byte as the original sends it."""
    return web.Response(
        status=429,
        body=TOO_MANY_REQUESTS_BODY,
        headers={"Content-Type": "application/json", "Retry-After": str(retry_after)},
    )


def route_error_response(
    request: web.BaseRequest | Mapping[str, str] | None, error: RouteError
) -> web.Response:
    """Render a RouteError (404 unknown model, 429, 502 start failed, 503 timeout/shutdown...)."""
    if error.status == 429:
        return too_many_requests_response(error.retry_after or 1)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return error_response(request, error.status, error.message, headers=headers)


def error_payload(error: RouteError) -> bytes:
    """The JSON body of an error, for places that already sent their headers (loading state)."""
    if error.status == 429:
        return TOO_MANY_REQUESTS_BODY
    return render_error("", error.message)[0]


@web.middleware
async def route_failure_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Turn a `RouteFailure` escaping a handler into its error response."""
    try:
        return await handler(request)
    except RouteFailure as exc:
        return route_error_response(request, exc.error)
