"""Limits on what a client may send, as plain decisions both front doors make alike.

- `maxRequestBody` (bytes, 0 = no limit) bounds a request body.  It is decided from
  `Content-Length` when the request has one, before a byte of the body is read, and
  otherwise (chunked uploads) when the bytes streamed so far cross it.  Either way the
  answer is a 413 and the connection is closed, so the rest of the body is never read.
- A body is judged only after the API key: an unauthenticated client gets its 401 from
  the request head alone, whatever size it announces.
- A JSON body nested deeper than the parser can follow is the client's error (400), not
  a crash; so is a body that cannot be decoded as it says it is framed or encoded
  (broken chunks, a `Content-Encoding` its bytes are not in).
- An id in a URL is a number of bounded size; longer digit strings name nothing (and
  would only cost a conversion, or exceed Python's limit on int() digits).
- A path with `.` or `..` segments, read as the routes read it (percent-escapes decoded,
  `%2f` included), is refused with a 400: a route that takes the rest of the path
  (`/upstream/<model>/...`, `/ui/...`, `/logs/stream/...`) would otherwise hand it on,
  and `/upstream/a/../x` reached the model server as `/x`.  A raw `..` on a path no route
  takes is the mux's (a redirect to the clean path), as before.  The fast path needs no
  check: it serves only its exact inference paths, which have none.
"""

from __future__ import annotations

from urllib.parse import unquote

from llama_swap.runtime.core.errors import RouteError

MAX_ID_DIGITS = 18  # an id longer than this cannot exist (and int() stays cheap)
TOO_DEEPLY_NESTED = "invalid JSON body: nested too deeply"
DOT_SEGMENTS = 'invalid path: "." and ".." segments are not allowed'


def exceeds(size: int | None, limit: int) -> bool:
    """Whether a body of `size` bytes (None: not known yet) is over `limit` (0: none)."""
    return limit > 0 and size is not None and size > limit


def body_too_large(limit: int) -> RouteError:
    """The 413 for a body over `maxRequestBody`."""
    return RouteError(413, f"request body too large: the limit is {limit} bytes (maxRequestBody)")


def undecodable_body(reason: str) -> RouteError:
    """The 400 for a body whose framing or content encoding is broken."""
    return RouteError(400, f"invalid request body: {reason}")


def too_deeply_nested() -> RouteError:
    """The 400 for a JSON body the parser cannot follow to its end."""
    return RouteError(400, TOO_DEEPLY_NESTED)


def parse_id(text: str) -> int | None:
    """A non-negative decimal id (an optional sign, as Go's Atoi takes), or None when
    `text` is not one or is too long to name anything."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_ID_DIGITS:
        return None
    return int(text)


def has_dot_segments(raw_path: str) -> bool:
    """Whether `raw_path` (as sent, percent-escapes and all) has a `.` or `..` segment
    once decoded the way routes see it (an encoded slash splits segments too)."""
    if "." not in raw_path and "%" not in raw_path:  # the common case, decided cheaply
        return False
    decoded = unquote(raw_path, errors="surrogateescape")
    return any(segment in (".", "..") for segment in decoded.split("/"))


def dot_segments_error() -> RouteError:
    """The 400 for a path with dot segments."""
    return RouteError(400, DOT_SEGMENTS)
