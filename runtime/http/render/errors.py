"""llama-swap's own error answers as aiohttp responses.

The body shape, the Accept negotiation and the 429's special form are decided once, in
`runtime/core/error_body.py`, for both front doors; this module only wraps those values
in `web.Response` objects.  Statuses come from `RouteError`; where the Go original answers
500 "unspecific error" for a failed start, a health timeout or shutdown we answer 502/503
(see docs/differences.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from llama_swap.runtime.core.error_body import (
    NO_MODEL,
    TOO_MANY_REQUESTS_BODY,
    ErrorAnswer,
    error_answer,
    error_payload,
    render_error,
    route_error_answer,
    too_many_requests_answer,
    utf8,
)
from llama_swap.runtime.core.errors import RouteError

__all__ = [
    "NO_MODEL", "TOO_MANY_REQUESTS_BODY", "answer_response", "error_payload", "error_response",
    "render_error", "route_error_response", "too_many_requests_response", "utf8",
]


def _accept(request_headers: Mapping[str, str] | None) -> str:
    return "" if request_headers is None else request_headers.get("Accept", "") or ""


def answer_response(answer: ErrorAnswer) -> web.Response:
    """An `ErrorAnswer` as a complete aiohttp response."""
    return web.Response(status=answer.status, body=answer.body, headers=dict(answer.headers))


def error_response(
    request_headers: Mapping[str, str] | None,
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """`message` rendered as the request's Accept header asks, with extra `headers`."""
    extra = tuple(headers.items()) if headers else ()
    return answer_response(error_answer(_accept(request_headers), status, message, extra))


def too_many_requests_response(retry_after: int = 1) -> web.Response:
    """The scheduler's 429, byte for byte as the original sends it."""
    return answer_response(too_many_requests_answer(retry_after))


def route_error_response(
    request_headers: Mapping[str, str] | None, error: RouteError
) -> web.Response:
    """Render a RouteError (404 unknown model, 429, 502 start failed, 503 timeout/shutdown...)."""
    return answer_response(route_error_answer(_accept(request_headers), error))
