"""API-key authentication (reference 5.6), as an aiohttp middleware.

Enabled only when the plan lists `apiKeys`.  The candidate key is, in order:
the password of `Authorization: Basic`, the token of `Authorization: Bearer`
(scheme case-insensitive), the `x-api-key` header.  It is compared against
every configured key with `hmac.compare_digest` (no early exit, so timing does
not reveal which key or how much of it matched).  Keys are never logged and
the client's credential headers are forwarded unchanged, as the original does.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

from llama_swap.runtime.http.render.errors import error_response

UNAUTHORIZED = "unauthorized: invalid or missing API key"
WWW_AUTHENTICATE = 'Basic realm="llama-swap"'

_EXEMPT_ANY_METHOD = frozenset({"/health", "/wol-health"})
_EXEMPT_GET = frozenset({"/", "/favicon.ico", "/upstream", "/ui"})  # "/ui" only redirects to /ui/


def extract_api_key(headers: Mapping[str, str]) -> str:
    """The candidate key of a request (Basic password > Bearer token > x-api-key), or ""."""
    basic = bearer = ""
    auth = headers.get("Authorization", "")
    scheme, sep, credentials = auth.partition(" ")
    if sep:
        kind = scheme.lower()
        if kind == "bearer":
            bearer = credentials
        elif kind == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                decoded = ""
            user_pass = decoded.split(":", 1)
            if len(user_pass) == 2:
                basic = user_pass[1]
    return basic or bearer or headers.get("x-api-key", "")


def key_matches(candidate: str, keys: Sequence[str]) -> bool:
    """Constant-time membership: every key is compared, whatever matches first."""
    given = candidate.encode()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key.encode())
    return ok and candidate != ""


def is_exempt(method: str, path: str) -> bool:
    """Routes the original leaves open: health, the two redirects, the favicon, any OPTIONS."""
    if method == "OPTIONS" or path in _EXEMPT_ANY_METHOD:
        return True
    return method in ("GET", "HEAD") and path in _EXEMPT_GET


def unauthorized_response(request: web.BaseRequest) -> web.Response:
    return error_response(request, 401, UNAUTHORIZED, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def auth_middleware(keys: Callable[[], Sequence[str]]) -> Callable[..., object]:
    """Middleware checking `keys()` (read per request, so a plan swap takes effect at once)."""

    @web.middleware
    async def check_api_key(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        configured = keys()
        if not configured or is_exempt(request.method, request.path):
            return await handler(request)
        if not key_matches(extract_api_key(request.headers), configured):
            return unauthorized_response(request)
        return await handler(request)

    return check_api_key
