"""Profile pins and selectors applied to a request both front doors have read.

`runtime/core/model_choice.py` decides which name a request is really for; this
module carries the decision out on an `Extracted` request: the `model` in its
body becomes the new name (JSON: set in place and re-encoded; multipart: the
field's bytes replaced in the spooled read-ahead; a URL-encoded form: re-encoded),
and the routing fields follow.  A GET's query gets `model=<new name>` (its other
fields kept, re-encoded with the keys sorted, as the Go original does), so the upstream
(llama-server's `/props?model=`) sees the concrete name too.

Both the fast path and the aiohttp dispatch call `choose_for`, before the filters
(so the target's filters apply), and `release` when the request is done.
"""

from __future__ import annotations

import json
import re
import urllib.parse

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.error_body import NO_MODEL
from llama_swap.runtime.core.errors import RouteError, RouteFailure
from llama_swap.runtime.core.model_choice import ModelChoice, choose_model
from llama_swap.runtime.core.selectors import release as release_choice
from llama_swap.runtime.engine.router import Router
from llama_swap.runtime.http.request.body import BytesBody, Replacement, SpooledBody
from llama_swap.runtime.http.request.extract import Extracted, resolved


def _rewrite_json(req: Extracted, name: str) -> None:
    doc = dict(req.json)
    doc["model"] = name
    try:
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate somewhere: keep non-ASCII escaped
        data = json.dumps(doc, separators=(",", ":")).encode()
    req.body.close()
    req.body = BytesBody(data)
    req.json = doc


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _unescape(text: bytes) -> bytes | None:
    """A query key or value decoded (`+` is a space); None when it has a broken escape."""
    if _BAD_ESCAPE.search(text):
        return None
    return urllib.parse.unquote_to_bytes(text.replace(b"+", b" "))


def query_with_model(query: str, name: str) -> str:
    """`query` (percent-encoded) with `model` set to `name`: every `model` field replaced
    by one, the others kept in their order per key, keys sorted by their bytes, encoded
    with `+` for spaces.  Fields Go's query parser drops (a `;` in them, a broken `%`
    escape) are dropped too, so both re-encode a query alike."""
    fields: dict[bytes, list[bytes]] = {}
    for part in query.encode("utf-8", "surrogateescape").split(b"&"):
        if not part or b";" in part:
            continue
        raw_key, _, raw_value = part.partition(b"=")
        key, value = _unescape(raw_key), _unescape(raw_value)
        if key is not None and value is not None:
            fields.setdefault(key, []).append(value)
    fields[b"model"] = [name.encode()]
    return "&".join(
        f"{urllib.parse.quote_plus(key, safe='')}={urllib.parse.quote_plus(value, safe='')}"
        for key in sorted(fields)
        for value in fields[key]
    )


def rewrite_model(plan: Plan, req: Extracted, name: str) -> None:
    """Make `req` ask for `name`: its body (a GET: its query) and its routing fields."""
    if req.query is not None:
        req.query = query_with_model(req.query, name)
    elif req.has_json and isinstance(req.json, dict):
        _rewrite_json(req, name)
    elif req.multipart_model is not None and isinstance(req.body, SpooledBody):
        field = req.multipart_model
        req.body = req.body.with_replacements([Replacement(field.start, field.end, name.encode())])
    elif isinstance(req.body, BytesBody) and not req.has_json:
        form = urllib.parse.parse_qsl(
            req.body.data.decode("utf-8", "replace"), keep_blank_values=True
        )
        if any(k == "model" for k, _ in form):
            fields = [(k, name if k == "model" else v) for k, v in form]
            req.body = BytesBody(urllib.parse.urlencode(fields).encode())
    req.model = name
    req.model_id = resolved(plan, name)


def choose_for(router: Router, req: Extracted) -> ModelChoice:
    """Apply the active profile and selectors to `req` in place; raises RouteFailure (404
    for a disabled pin, 503 when a selector has no target).  Release the returned choice
    with `release` once the request is over."""
    plan = router.plan
    if not plan.selectors and router.active_profile is None:
        return ModelChoice()
    states = {mid: proc.state for mid, proc in router.processes.items()}
    decided = choose_model(plan, router.active_profile, req.model, states, router.spillover)
    if isinstance(decided, RouteError):
        raise RouteFailure(decided)
    if decided.rewrite is None:
        return decided
    if decided.rewrite == "":
        raise RouteFailure(RouteError(404, NO_MODEL))
    try:
        rewrite_model(plan, req, decided.rewrite)
    except BaseException:
        release(router, decided)
        raise
    return decided


def release(router: Router, decided: ModelChoice) -> None:
    release_choice(router.spillover, decided.choice)
