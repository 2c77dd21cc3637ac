"""CORS as the original does it (reference 5.7).

Every OPTIONS request, on any path and before authentication, is answered 204
with permissive CORS headers; the requested headers are echoed back after
dropping names that are not valid HTTP tokens.  Other responses carry no CORS
headers, except `/v1/models`, which echoes the request's Origin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import web

DEFAULT_ALLOW_HEADERS = "Content-Type, Authorization, Accept, X-Requested-With"
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def allowed_headers(requested: str | None) -> str:
    """`Access-Control-Allow-Headers` for a preflight's `Access-Control-Request-Headers`."""
    if requested is None:
        return DEFAULT_ALLOW_HEADERS
    names = (name.strip() for name in requested.split(","))
    return ", ".join(name for name in names if name and _TOKEN.match(name))


def preflight_response(headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": allowed_headers(
                headers.get("Access-Control-Request-Headers")
            ),
            "Access-Control-Max-Age": "86400",
        },
    )


def origin_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The `/v1/models` CORS header: the request's Origin echoed, when it sent one."""
    origin = headers.get("Origin")
    return {"Access-Control-Allow-Origin": origin} if origin else {}


@web.middleware
async def cors_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Answer every OPTIONS at once; must sit outside the auth middleware."""
    if request.method == "OPTIONS":
        return preflight_response(request.headers)
    return await handler(request)
