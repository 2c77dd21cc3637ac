"""The shape of llama-swap's own error answers, as plain values both front doors render.

One place decides the body so every route, on either front door, answers alike.  By
default it is the OpenAI error object, with a `src` beside it saying the proxy (not a
model server) wrote it:

    {"src":"llama-swap","error":{"message":msg,"type":t,"param":null,"code":c}}

so the OpenAI SDKs (and clients built like them) raise their typed errors with our
message; `type` and `code` follow the status (`error_kind`).  `Accept: text/plain` gets
`llama-swap: <msg>`, `Accept: text/html` a minimal escaped HTML page.  The scheduler's 429
always answers JSON (code `concurrency_limit`) with a `Retry-After`, whatever the client
accepts.  The aiohttp front door wraps an `ErrorAnswer` in a response object; the fast
path writes it as bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from llama_swap.runtime.core.errors import RouteError

NO_MODEL = "no model id could be identified"
TOO_MANY_REQUESTS = "Too many requests"
CONCURRENCY_LIMIT = "concurrency_limit"
JSON = "application/json"
INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
# OpenAI's `type` and `code` for the statuses the proxy answers with; others fall back by
# class in `error_kind`.  413 is the request-size limit, which OpenAI has no word for.
_KINDS: dict[int, tuple[str, str]] = {
    400: (INVALID_REQUEST, "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authentication_error", "forbidden"),
    404: (INVALID_REQUEST, "not_found"),
    409: (INVALID_REQUEST, "conflict"),
    413: (INVALID_REQUEST, "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    499: (INVALID_REQUEST, "request_cancelled"),
    502: (SERVER_ERROR, "bad_gateway"),
    503: (SERVER_ERROR, "service_unavailable"),
    504: (SERVER_ERROR, "gateway_timeout"),
}
_SURROGATE = re.compile("[\ud800-\udfff]")
_GO_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_GO_HTML_ESCAPES = str.maketrans({"&": "&amp;", "'": "&#39;", "<": "&lt;", ">": "&gt;", '"': "&#34;"})


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """A complete answer of llama-swap's own: status, headers in order (Content-Type
    included), body.  Framing headers (Content-Length, Date, Server, Connection) are the
    transport's."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name == "Content-Type":
                return value
        return ""


def utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; lone surrogates (from `\\ud800` escapes in a client's JSON
    or undecodable bytes in a URL) become U+FFFD, as Go writes invalid text."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


def well_formed(text: str) -> str:
    """`text` with lone surrogates as U+FFFD (itself when it has none).  A name a client
    sent travels on to logs, pages, events and metrics, which all write UTF-8: one that
    cannot be encoded would break each of them, for every later reader too."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", text)


def error_kind(status: int) -> tuple[str, str]:
    """OpenAI's error `type` and `code` for `status`: clients branch on the type (the SDKs
    pick their exception class by status, other clients read `type`), so an unlisted 4xx
    is the client's fault and anything else the server's."""
    known = _KINDS.get(status)
    if known is not None:
        return known
    if 400 <= status < 500:
        return INVALID_REQUEST, "invalid_request"
    return SERVER_ERROR, "internal_error"


def envelope(status: int, message: str, code: str | None = None) -> bytes:
    """The JSON error body for `message` answered with `status` (`code` overrides the
    status's own).  Compact, keys in the OpenAI order with `param` always null, `<`, `>`
    and `&` escaped as the Go original's encoder does, so both implementations send the
    same bytes."""
    kind, default_code = error_kind(status)
    doc = {
        "src": "llama-swap",
        "error": {"message": message, "type": kind, "param": None, "code": code or default_code},
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return utf8(text.translate(_GO_JSON_ESCAPES))


TOO_MANY_REQUESTS_BODY = envelope(429, TOO_MANY_REQUESTS, CONCURRENCY_LIMIT)


def render_error(accept: str, status: int, message: str) -> tuple[bytes, str]:
    """The body and content type for `message`, answered with `status`, given the
    request's Accept header: plain text and HTML for the clients that ask for them, the
    OpenAI-shaped JSON `envelope` for everyone else."""
    if "text/plain" in accept:
        return utf8(f"llama-swap: {message}"), "text/plain"
    if "text/html" in accept:
        escaped = message.translate(_GO_HTML_ESCAPES)  # Go's html.EscapeString
        page = f"<html><body><h1>llama-swap</h1><p>{escaped}</p></body></html>"
        return utf8(page), "text/html"
    return envelope(status, message), JSON


def error_answer(
    accept: str, status: int, message: str, extra: tuple[tuple[str, str], ...] = ()
) -> ErrorAnswer:
    """`message` as the client asked for it (`accept`: its Accept header, "" if none);
    `extra` headers come before Content-Type."""
    body, ctype = render_error(accept, status, message)
    return ErrorAnswer(status, (*extra, ("Content-Type", ctype)), body)


def too_many_requests_answer(retry_after: int = 1) -> ErrorAnswer:
    """The concurrency limit's 429: always JSON, whatever the client accepts, and a
    `Retry-After` so clients that honour it back off before trying again."""
    return ErrorAnswer(
        429, (("Content-Type", JSON), ("Retry-After", str(retry_after))), TOO_MANY_REQUESTS_BODY
    )


def route_error_answer(accept: str, error: RouteError) -> ErrorAnswer:
    """A RouteError (404 unknown model, 429, 502 start failed, 503 timeout/shutdown...)."""
    if error.status == 429:
        return too_many_requests_answer(error.retry_after or 1)
    extra = (("Retry-After", str(error.retry_after)),) if error.retry_after else ()
    return error_answer(accept, error.status, error.message, extra)


def error_payload(error: RouteError) -> bytes:
    """The JSON body of an error, for answers whose headers already went out (the
    loading-state stream and a stream that ended early write it as one SSE frame): the
    same envelope a client would have got as a status, so one parser reads both."""
    if error.status == 429:
        return TOO_MANY_REQUESTS_BODY
    return envelope(error.status, error.message)
