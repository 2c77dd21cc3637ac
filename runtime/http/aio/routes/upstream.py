"""`/upstream/{model}/{path}`: direct passthrough to a model's own server.

The model is the longest path prefix naming a local model or alias.  A bare
`/upstream/<model>` is redirected to `/upstream/<model>/` (301 GET/HEAD, 308
otherwise) so relative URLs in the upstream's pages resolve.  Paths matching
`upstream.ignorePaths` (static assets) never trigger a load: 409 while the
model is not loaded.  Anything else is scheduled like an inference request,
then proxied with the body streamed; websocket upgrades are bridged both ways
(runtime/http/aio/websocket.py), outside the scheduler for a model with
`compat.ignoreWebsockets`.
No filters are applied.  The model's server receives the rest of the path exactly as the
client encoded it (`%2F`, `%20`, encoded UTF-8 and the query stay as sent): the model is
found in the decoded path, and the raw suffix is what follows the raw text that decodes
to `/upstream/<name>` (`raw_suffix`).  Under an active profile the longest pin key the path
starts with is replaced by its target first (a disabled pin, or one naming a selector: 404).
A peer model's name (`peer/model`, or a bare id one peer offers) reaches that peer, with the
rest of the path and the body as sent.  POSTs to a model-dispatched path (`/upstream/m/v1/chat/completions`)
are recorded in the activity log like the dispatched routes; requests to a model-dispatched
path (POST or GET, as the route takes them) are listed in flight.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.core.inference_routes import METERED_PATHS, is_model_dispatched
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.profiles import upstream_pin
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.aio.forward import forward_local, serve_granted
from llama_swap.runtime.http.aio.inflight import tracked
from llama_swap.runtime.http.aio.websocket import is_upgrade, serve_websocket
from llama_swap.runtime.http.observe.activity import ResponseMeter
from llama_swap.runtime.http.observe.recording import recording
from llama_swap.runtime.http.render.errors import error_response
from llama_swap.runtime.http.request.body import StreamBody, TeeBody
from llama_swap.runtime.http.request.extract import PathMatch, find_model_in_path
from llama_swap.runtime.http.services import Services

_HEX = re.compile(r"[0-9A-Fa-f]{2}")



def ignored(patterns: tuple[str, ...], path: str) -> bool:
    for pattern in patterns:
        try:
            if re.search(pattern, path):
                return True
        except re.error:
            continue
    return False


def _units(raw: str) -> Iterator[tuple[int, bytes]]:
    """The raw path's decoding units with their end offsets: a `%XX` triplet is one byte,
    anything else is one character (as its UTF-8 bytes)."""
    i = 0
    while i < len(raw):
        if raw[i] == "%" and _HEX.fullmatch(raw[i + 1 : i + 3]):
            yield i + 3, bytes((int(raw[i + 1 : i + 3], 16),))
            i += 3
        else:
            yield i + 1, raw[i].encode()
            i += 1


def raw_suffix(raw_path: str, prefix: str) -> str | None:
    """What follows the part of `raw_path` that decodes to `prefix`, still encoded.

    The model name may itself be encoded (`/upstream/org%2Fm/...` names `org/m`), so the
    prefix is matched unit by unit on the decoded bytes.  None when `raw_path` does not
    start with `prefix` once decoded (the caller falls back to the decoded remainder)."""
    want = prefix.encode()
    seen = 0
    if not want:
        return raw_path
    for end, unit in _units(raw_path):
        if want[seen : seen + len(unit)] != unit:
            return None
        seen += len(unit)
        if seen == len(want):
            return raw_path[end:]
    return None


def _pinned(
    plan: Plan, active: str | None, tail: str, raw_path: str
) -> tuple[str, str] | None:
    """Under the active profile, the (decoded, raw) path after `/upstream/` with the
    longest matching pin key replaced by its target; ("", "") when the pin is disabled
    or names a selector (no selectors here)."""
    pin = upstream_pin(plan, active, tail)
    if pin is None:
        return None
    if not pin.target or pin.target in plan.selectors:
        return "", ""
    rest = tail[len(pin.pin) :]
    raw_rest = raw_suffix(raw_path, f"/upstream/{pin.pin}")
    return pin.target + rest, pin.target + (rest if raw_rest is None else raw_rest)


async def upstream(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    plan = state.plan
    tail = request.match_info["tail"]
    raw_path = request.rel_url.raw_path
    pinned = _pinned(plan, state.router.active_profile, tail, raw_path)
    if pinned is not None:
        tail, raw_tail = pinned
        raw_path = "/upstream/" + raw_tail
    found = find_model_in_path(plan, "/" + tail) if tail else None
    if found is None:
        return error_response(request.headers, 404, "model not found")
    if found.peer is not None:
        return await _to_peer(request, state, found)
    if found.remaining == "/" and not request.path.endswith("/"):
        location = f"/upstream/{found.name}/"
        if request.query_string:
            location += "?" + request.query_string
        if request.method in ("GET", "HEAD"):
            raise web.HTTPMovedPermanently(location)
        raise web.HTTPPermanentRedirect(location)
    model_id = found.model_id
    if model_id not in state.router.processes:
        return error_response(request.headers, 404, f"no router for model {model_id}")
    if ignored(plan.settings.ignorePaths, found.remaining) and (
        state.router.model_state(model_id) is not ProcessState.READY
    ):
        return error_response(
            request.headers, 409, f"model {model_id} is not loaded; path matches upstream.ignorePaths"
        )
    metered = request.method == "POST" and found.remaining in METERED_PATHS
    meter = ResponseMeter() if metered else None
    body: Any = None
    if request.body_exists:
        body = StreamBody(request.content, request.content_length, plan.settings.maxRequestBody)
        capacity = state.captures.capacity
        if metered and capacity > 0 and (request.content_length or 0) <= capacity:
            body = TeeBody(body, capacity)  # kept for the capture while it is forwarded
    source = SimpleNamespace(body=body)
    # the model's server gets the suffix as sent; decisions above use the decoded remainder
    suffix = raw_suffix(raw_path, f"/upstream/{found.name}")
    target = _Target(found.remaining, raw=False) if suffix is None else _Target(suffix or "/", raw=True)
    with recording(state, request.headers, model_id, found.remaining, meter, source) as rec:
        if is_model_dispatched(request.method, found.remaining):  # listed in flight as the route
            resp = await tracked(
                request, state.inflight, model_id, found.remaining,
                lambda: _serve(request, state, model_id, target, meter, body),
            )
        else:
            resp = await _serve(request, state, model_id, target, meter, body)
        rec.answered(resp.status, resp.headers, getattr(resp, "body", None))
        return resp


async def _to_peer(request: web.Request, state: Services, found: PathMatch) -> web.StreamResponse:
    """`/upstream/<peer model>/<rest>`: the peer gets `<rest>` (the body as sent)."""
    assert found.peer is not None
    peer = state.plan.peers[found.peer.peer]
    body: Any = None
    if request.body_exists:
        body = StreamBody(request.content, request.content_length, state.plan.settings.maxRequestBody)
    return await state.peers.forward(request, peer, found.remaining, body)


@dataclass(frozen=True, slots=True)
class _Target:
    """The path to ask the model's server for; `raw`: percent-encoded as the client sent
    it (goes out unchanged, with the raw query), else decoded (encoded on the way out)."""

    path: str
    raw: bool


async def _serve(
    request: web.Request, state: Services, model_id: str, target: _Target,
    meter: ResponseMeter | None, body: Any,
) -> web.StreamResponse:

    if is_upgrade(request):
        return await serve_websocket(request, state, model_id, target.path, target.raw)

    def send(model: Model) -> Awaitable[web.StreamResponse]:
        return forward_local(
            request, state, model, target.path, body, meter=meter, raw=target.raw
        )

    return await serve_granted(request, state, model_id, send)


def register(app: web.Application, services: Services) -> None:
    app.router.add_route("*", "/upstream/{tail:.*}", upstream)
