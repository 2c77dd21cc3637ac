"""The router's own answers, worded as Go's ServeMux words them, as plain values.

A path that is not canonical (`.`/`..` segments, doubled slashes) is redirected with a
301 to its clean form; an unrouted path is a plain-text 404, a wrong method a 405 listing
the allowed ones.  A request whose client left before any answer is logged with 499
(nginx's code), since no status was ever sent.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

CLIENT_CLOSED = 499
NOT_FOUND_TEXT = "404 page not found\n"
METHOD_NOT_ALLOWED_TEXT = "Method Not Allowed\n"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def clean_path(path: str) -> str:
    """Go's ServeMux cleanPath: no `.`/`..` segments or doubled slashes; a trailing slash kept."""
    cleaned = posixpath.normpath("/" + path.lstrip("/")) if path else "/"
    cleaned = "/" + cleaned.lstrip("/")  # normpath keeps a leading "//"
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def redirect_target(method: str, raw_path: str, raw_query: str) -> str | None:
    """Where a non-canonical path is redirected (query kept), or None when it is clean
    (or the method is CONNECT, which Go's mux never redirects)."""
    if method == "CONNECT":
        return None
    cleaned = clean_path(raw_path)
    if cleaned == raw_path:
        return None
    return cleaned + ("?" + raw_query if raw_query else "")


def allow_header(methods: Iterable[str]) -> str:
    """The 405's `Allow` value: the route's methods, sorted."""
    return ", ".join(sorted(methods))
