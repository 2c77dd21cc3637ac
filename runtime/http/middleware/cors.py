"""CORS as the original does it, as plain header values.

Every OPTIONS request, on any path and before authentication, is answered 204 with
permissive CORS headers; the requested headers are echoed back after dropping names that
are not valid HTTP tokens.  Other responses carry no CORS headers, except `/v1/models`,
which echoes the request's Origin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_ALLOW_HEADERS = "Content-Type, Authorization, Accept, X-Requested-With"
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
PREFLIGHT_STATUS = 204
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def allowed_headers(requested: str | None) -> str:
    """`Access-Control-Allow-Headers` for a preflight's `Access-Control-Request-Headers`."""
    if requested is None:
        return DEFAULT_ALLOW_HEADERS
    names = (name.strip() for name in requested.split(","))
    return ", ".join(name for name in names if name and _TOKEN.match(name))


def preflight_headers(request_headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of the 204 answering a preflight."""
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": allowed_headers(
            request_headers.get("Access-Control-Request-Headers")
        ),
        "Access-Control-Max-Age": "86400",
    }


def origin_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The `/v1/models` CORS header: the request's Origin echoed, when it sent one."""
    origin = headers.get("Origin")
    return {"Access-Control-Allow-Origin": origin} if origin else {}
