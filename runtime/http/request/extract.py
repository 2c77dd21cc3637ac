"""Which model a request is for, without buffering large bodies: the plain parts.

- `/upstream/<model>/<rest>`: the longest path prefix naming a local model or
  alias (`find_model_in_path`); the body is not read.
- GET: `?model=` and `?stream=true`.
- JSON bodies (Content-Type contains application/json): read whole (they are
  small) and parsed once; the parsed value is kept for the filters.
- multipart/form-data: read only until the `model` field has been seen, the
  read-ahead spooled to a temporary file, the rest left in the client stream;
  files are never held in memory (`multipart_scan.MultipartScanner`).
- anything else: a URL-encoded form.
Form lookups fall back to the URL query, as Go's `FormValue` does.  No model
-> 404 `no model id could be identified`.  Reading the request (GET query, form,
multipart) is the aiohttp front door's (runtime/http/aio/extract.py); what needs no
I/O is here, shared with the fast path (`from_json_body`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llama_swap.compiler.plan import PeerModel, Plan
from llama_swap.runtime.core import json_codec
from llama_swap.runtime.core.error_body import NO_MODEL, well_formed
from llama_swap.runtime.core.errors import RouteError, RouteFailure
from llama_swap.runtime.core.limits import too_deeply_nested
from llama_swap.runtime.http.request.body import BytesBody, ForwardBody
from llama_swap.runtime.http.request.multipart_scan import FieldValue

_NOTHING = object()


@dataclass(frozen=True, slots=True)
class PathMatch:
    """`/upstream` path resolution: the name as given, its model id (a peer model's
    name when `peer` is set) and the rest of the path."""

    name: str
    model_id: str
    remaining: str
    peer: PeerModel | None = None


def find_model_in_path(plan: Plan, path: str) -> PathMatch | None:
    """Longest `a`, `a/b`, `a/b/c`... prefix of `path` that is a local model id or alias
    or, failing that, a peer model name (`peer/model`, or a bare id one peer offers)."""
    parts = path.strip().split("/")
    name = ""
    found: PathMatch | None = None
    for i, part in enumerate(parts):
        if not part:
            continue
        name = f"{name}/{part}" if name else part
        model_id = plan.resolve(name)
        rest = "/" + "/".join(parts[i + 1 :])
        if model_id is not None:
            found = PathMatch(name, model_id, rest)
        elif (peer := plan.peer_model(name)) is not None:
            found = PathMatch(name, name, rest, peer)
    return found


@dataclass(slots=True)
class Extracted:
    """What routing and the filters need to know about a request, plus the body to forward."""

    model: str  # the name the client sent
    model_id: str  # the resolved local model id, else the raw name (peers)
    streaming: bool
    body: ForwardBody
    json: Any = _NOTHING  # parsed JSON body (when Content-Type says JSON and it parsed)
    multipart_model: FieldValue | None = None  # where the model value sits in a spooled form
    query: str | None = None  # a GET's query string, percent-encoded, to send upstream

    @property
    def has_json(self) -> bool:
        return self.json is not _NOTHING


def json_string(value: Any) -> str:
    """gjson's `.String()`: strings as-is, null/missing as "", other values as JSON text."""
    if value is None or value is _NOTHING:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_bool(value: Any) -> bool:
    """gjson's `.Bool()`: true, non-zero numbers and strings that parse as true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("1", "t", "true")
    return False


def _loads(raw: bytes | str) -> Any:
    """`json.loads` (orjson where it reads the same, core/json_codec.py), with a body nested past the interpreter's recursion limit turned into
    the client's error instead of a crash."""
    try:
        return json_codec.loads(raw) if isinstance(raw, bytes) else json.loads(raw)
    except RecursionError:
        raise RouteFailure(too_deeply_nested()) from None


def no_model() -> RouteFailure:
    return RouteFailure(RouteError(404, NO_MODEL))


def resolved(plan: Plan, name: str) -> str:
    return plan.resolve(name) or name


def from_json_body(plan: Plan, raw: bytes) -> Extracted:
    """A JSON request body as `Extracted` (no I/O: the fast path calls it too).  Raises
    RouteFailure: 404 when it names no model, 400 when it nests deeper than the parser
    can follow (runtime/core/limits.py).  A model name that is not valid text (a JSON
    `\\ud800` escape) is read with U+FFFD in its place, as Go reads it."""
    try:
        doc: Any = _loads(raw)
    except UnicodeDecodeError:  # invalid UTF-8: read it as Go's gjson does, bytes as they are
        try:
            doc = _loads(raw.decode("utf-8", "replace"))
        except ValueError:
            doc = _NOTHING
    except ValueError:
        doc = _NOTHING
    fields = doc if isinstance(doc, dict) else {}
    model = well_formed(json_string(fields.get("model")))
    if not model:
        raise no_model()
    streaming = json_bool(fields.get("stream"))
    return Extracted(model, resolved(plan, model), streaming, BytesBody(raw), json=doc)
