"""The shape of llama-swap's own error answers, as plain values both front doors render.

One place decides the body so every route, on either front door, answers alike: JSON
`{"error":msg,"src":"llama-swap"}` by default, `llama-swap: <msg>` for `Accept: text/plain`,
a minimal escaped HTML page for `Accept: text/html`.  The scheduler's 429 is special (no
`src`, a `Retry-After`), byte for byte as the Go original sends it.  The aiohttp front
door wraps an `ErrorAnswer` in a response object; the fast path writes it as bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from llama_swap.runtime.core.errors import RouteError

NO_MODEL = "no model id could be identified"
TOO_MANY_REQUESTS_BODY = b'{"error":"Too many requests"}'
JSON = "application/json"
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
    return utf8(f'{{"error":{text},"src":"llama-swap"}}'), JSON


def error_answer(
    accept: str, status: int, message: str, extra: tuple[tuple[str, str], ...] = ()
) -> ErrorAnswer:
    """`message` as the client asked for it (`accept`: its Accept header, "" if none);
    `extra` headers come before Content-Type."""
    body, ctype = render_error(accept, message)
    return ErrorAnswer(status, (*extra, ("Content-Type", ctype)), body)


def too_many_requests_answer(retry_after: int = 1) -> ErrorAnswer:
    """The scheduler's 429, byte for byte as the original sends it."""
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
    loading-state stream writes it as one SSE frame)."""
    if error.status == 429:
        return TOO_MANY_REQUESTS_BODY
    return render_error("", error.message)[0]
