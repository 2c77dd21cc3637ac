"""API-key authentication, as plain decisions both front doors make alike.

Enabled only when the plan lists `apiKeys`.  The candidate key is, in order: the
password of `Authorization: Basic`, the token of `Authorization: Bearer` (scheme
case-insensitive), the `x-api-key` header.  It is compared against every configured key
with `hmac.compare_digest` and no early exit, so timing does not reveal which key or how
much of it matched.  Keys are never logged; the client's credential headers are forwarded
unchanged, as the original does.

Open without a key: health, the three redirects, the favicon, the UI's static files and
every OPTIONS (the CORS preflight) -- nothing that reveals or changes state.  Every other
route, the UI's pages, logs, events, metrics, captures and `/upstream/...` (websockets
included) needs a key.  Anything shown to a client or written to a log that may quote a
configured secret (a model command line, say) goes through `redact`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence

from llama_swap.compiler.plan import Plan
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
    """Constant-time membership: every key is compared, whatever matches first.

    Header bytes that are not valid UTF-8 reach here as lone surrogates (both front
    doors decode headers that way); such a candidate is encoded as it came, so it
    simply matches no key instead of raising."""
    given = candidate.encode("utf-8", "surrogatepass")
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key.encode())
    return ok and candidate != ""


def is_exempt(method: str, path: str) -> bool:
    """Open routes: health, the redirects, the favicon, the UI's static files, any OPTIONS."""
    if method == "OPTIONS" or path in _EXEMPT_ANY_METHOD:
        return True
    return method in ("GET", "HEAD") and (path in _EXEMPT_GET or is_ui_asset(path))


def is_ui_asset(path: str) -> bool:
    """`/ui/.../<name>.<ext>`: the UI answers a path whose last segment has a dot only with
    a static file or a 404, never a page (routes/ui.py keeps that rule), so the browser
    can fetch its script and style before the Basic prompt is answered."""
    return path.startswith("/ui/") and "." in path.rpartition("/")[2]


def rejects(keys: Sequence[str], method: str, path: str, headers: HeaderLookup) -> bool:
    """Whether a request must be refused with `unauthorized`: keys are configured, the
    route is not open, and the request carries none of them."""
    return bool(keys) and not is_exempt(method, path) and not key_matches(
        extract_api_key(headers), keys
    )


def unauthorized(accept: str) -> ErrorAnswer:
    """The 401, with the challenge that makes a browser prompt for Basic credentials."""
    return error_answer(accept, 401, UNAUTHORIZED, _CHALLENGE)


REDACTED = "[REDACTED]"


def secrets_of(plan: Plan) -> tuple[str, ...]:
    """Every credential a plan holds: its API keys and its peers' keys."""
    peer_keys = (peer.apiKey for peer in plan.peers.values())
    return tuple(key for key in (*plan.settings.apiKeys, *peer_keys) if key)


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every occurrence of a secret replaced by REDACTED (longest first, so
    a key that contains another is hidden whole)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def inherited_env(env: Mapping[str, str], secrets: Sequence[str]) -> dict[str, str]:
    """The proxy's environment as a model process should inherit it: without the variables
    that hold a configured secret (a config often reads its keys with `${env.NAME}`, and
    the proxy's environment is otherwise passed on whole).  A variable holds a secret when
    its value is the secret, or contains it and the secret is long enough (8+ characters)
    not to turn up by chance inside PATH and the like.  A model's own `env` entries are
    the config author's choice and are added after this, unfiltered."""
    found = [s for s in secrets if s]
    if not found:
        return dict(env)
    return {name: value for name, value in env.items()
            if not any(value == s or (len(s) >= 8 and s in value) for s in found)}
