"""API-key authentication, as plain decisions both front doors make alike.

Enabled only when the plan lists `apiKeys`.  The candidate key is, in order: the
password of `Authorization: Basic`, the token of `Authorization: Bearer` (scheme
case-insensitive), the `x-api-key` header.  It is compared against every configured key
with `hmac.compare_digest` and no early exit, so timing does not reveal which key or how
much of it matched.  Keys are never logged; the client's credential headers are forwarded
unchanged, as the original does.  Health, the two redirects, the favicon and every
OPTIONS (the CORS preflight) stay open.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

from llama_swap.runtime.core.error_body import ErrorAnswer, error_answer
from llama_swap.runtime.core.headers import HeaderLookup

UNAUTHORIZED = "unauthorized: invalid or missing API key"
WWW_AUTHENTICATE = 'Basic realm="llama-swap"'

_EXEMPT_ANY_METHOD = frozenset({"/health", "/wol-health"})
_EXEMPT_GET = frozenset({"/", "/favicon.ico", "/upstream", "/ui"})  # "/ui" only redirects to /ui/
_CHALLENGE = (("WWW-Authenticate", WWW_AUTHENTICATE),)


def extract_api_key(headers: HeaderLookup) -> str:
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


def rejects(keys: Sequence[str], method: str, path: str, headers: HeaderLookup) -> bool:
    """Whether a request must be refused with `unauthorized`: keys are configured, the
    route is not open, and the request carries none of them."""
    return bool(keys) and not is_exempt(method, path) and not key_matches(
        extract_api_key(headers), keys
    )


def unauthorized(accept: str) -> ErrorAnswer:
    """The 401, with the challenge that makes a browser prompt for Basic credentials."""
    return error_answer(accept, 401, UNAUTHORIZED, _CHALLENGE)
