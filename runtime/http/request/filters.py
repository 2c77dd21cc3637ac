"""Request filters: the body rewrites applied before forwarding.

For JSON bodies, in this order: `model` = `useModelName` (local models only),
delete `stripParams`, set `setParams` (sorted keys), set
`setParamsByID[<name the client sent>]` (sorted keys, so it wins).  Local
models/aliases first, else the first peer listing the exact name (its filters,
no rename).  For multipart forms only the `model` value is replaced (in place,
field order kept).  Keys are gjson/sjson-style paths: `a.b` nests, `\\.` is a
literal dot, an integer segment indexes an array, `-1` appends.

A body is re-encoded only when a filter actually changes it; otherwise the
client's bytes are forwarded untouched.  Routing always uses the model id
resolved before the rewrite.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llama_swap.compiler.plan import Filters, Plan
from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.core.limits import too_deeply_nested
from llama_swap.runtime.http.request.body import BytesBody, Replacement, SpooledBody
from llama_swap.runtime.http.request.extract import Extracted


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """The rewrites that apply to one request."""

    use_model_name: str
    filters: Filters
    requested: str

    @property
    def empty(self) -> bool:
        f = self.filters
        return not (
            self.use_model_name or f.stripParams or f.setParams or f.setParamsByID.get(self.requested)
        )


def filters_for(plan: Plan, requested: str) -> FilterSpec | None:
    """The filters for the name a client sent: the local model's, else a peer's, else None."""
    model_id = plan.resolve(requested)
    if model_id is not None:
        model = plan.models[model_id]
        return FilterSpec(model.useModelName, model.filters, requested)
    found = plan.peer_model(requested)
    if found is not None:
        # a `peer/model` name goes to the peer as the peer's own id
        bare = found.model if found.model != requested else ""
        return FilterSpec(bare, plan.peers[found.peer].filters, requested)
    return None


def split_path(path: str) -> list[str]:
    """gjson path segments: `.` separates, a backslash escapes the next character."""
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in path:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _index(key: str) -> int | None:
    if key == "-1" or key.isdigit():
        return int(key)
    return None


def set_path(doc: Any, path: str, value: Any) -> None:
    """sjson-style set: creates missing objects, pads arrays with null, `-1` appends."""
    keys = split_path(path)
    node = doc
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        new_value = copy.deepcopy(value) if last else None
        if isinstance(node, list) and (idx := _index(key)) is not None:
            if idx == -1:
                node.append(new_value if last else {})
                idx = len(node) - 1
            while len(node) <= idx:
                node.append(None)
            if last:
                node[idx] = new_value
                return
            if not isinstance(node[idx], dict | list):
                node[idx] = {}
            node = node[idx]
            continue
        if not isinstance(node, dict):
            return  # cannot descend into a scalar that is not our own container
        if last:
            node[key] = new_value
            return
        if not isinstance(node.get(key), dict | list):
            node[key] = {}
        node = node[key]


def delete_path(doc: Any, path: str) -> None:
    """sjson-style delete: a missing path is not an error."""
    keys = split_path(path)
    node = doc
    for key in keys[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and (idx := _index(key)) is not None and -1 < idx < len(node):
            node = node[idx]
        else:
            return
    last = keys[-1]
    if isinstance(node, dict):
        node.pop(last, None)
    elif isinstance(node, list) and (idx := _index(last)) is not None and 0 <= idx < len(node):
        del node[idx]


def apply_json_filters(doc: Mapping[str, Any], spec: FilterSpec) -> dict[str, Any]:
    """A filtered deep copy of a JSON object body.  Copied through the JSON codec, which
    follows any depth the parser accepted (copy.deepcopy gives up at a third of it)."""
    out: dict[str, Any] = json.loads(json.dumps(dict(doc)))
    if spec.use_model_name:
        out["model"] = spec.use_model_name
    for param in sorted(spec.filters.stripParams):
        delete_path(out, param)
    for key in sorted(spec.filters.setParams):
        set_path(out, key, _thaw(spec.filters.setParams[key]))
    by_id = spec.filters.setParamsByID.get(spec.requested) or {}
    for key in sorted(by_id):
        set_path(out, key, _thaw(by_id[key]))
    return out


def _dump(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _encode(doc: Any) -> bytes:
    """The new body; a lone surrogate (a `\\ud800` escape in the client's JSON) has no
    UTF-8 form, so such a body keeps every non-ASCII character escaped instead."""
    try:
        return _dump(doc).encode()
    except UnicodeEncodeError:
        return json.dumps(doc, separators=(",", ":")).encode()


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return value


def filter_request(plan: Plan, req: Extracted) -> Extracted:
    """Apply the filters that concern `req` and return it with its (possibly new) body."""
    spec = filters_for(plan, req.model)
    if spec is None or spec.empty:
        return req
    if req.has_json:
        if not isinstance(req.json, dict):
            return req  # not an object: nothing to rewrite, the upstream judges it
        try:
            filtered = apply_json_filters(req.json, spec)
            if _dump(filtered) == _dump(req.json):
                return req  # nothing changed: forward the client's bytes
            encoded = _encode(filtered)
        except RecursionError:  # nested about as deep as the parser could follow
            raise RouteFailure(too_deeply_nested()) from None
        req.body.close()
        req.body = BytesBody(encoded)
        req.json = filtered
        return req
    field = req.multipart_model
    if spec.use_model_name and field is not None and isinstance(req.body, SpooledBody):
        new = spec.use_model_name.encode()
        if new != field.value:
            req.body = req.body.with_replacements([Replacement(field.start, field.end, new)])
    return req
