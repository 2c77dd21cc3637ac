"""Limits on what a client may send, as plain decisions both front doors make alike.

- `maxRequestBody` (bytes, 0 = no limit) bounds a request body.  It is decided from
  `Content-Length` when the request has one, before a byte of the body is read, and
  otherwise (chunked uploads) when the bytes streamed so far cross it.  Either way the
  answer is a 413 and the connection is closed, so the rest of the body is never read.
- A body is judged only after the API key: an unauthenticated client gets its 401 from
  the request head alone, whatever size it announces.
- A JSON body nested deeper than the parser can follow is the client's error (400), not
  a crash.
- An id in a URL is a number of bounded size; longer digit strings name nothing (and
  would only cost a conversion, or exceed Python's limit on int() digits).
"""

from __future__ import annotations

from llama_swap.runtime.core.errors import RouteError

MAX_ID_DIGITS = 18  # an id longer than this cannot exist (and int() stays cheap)
TOO_DEEPLY_NESTED = "invalid JSON body: nested too deeply"


def exceeds(size: int | None, limit: int) -> bool:
    """Whether a body of `size` bytes (None: not known yet) is over `limit` (0: none)."""
    return limit > 0 and size is not None and size > limit


def body_too_large(limit: int) -> RouteError:
    """The 413 for a body over `maxRequestBody`."""
    return RouteError(413, f"request body too large: the limit is {limit} bytes (maxRequestBody)")


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
