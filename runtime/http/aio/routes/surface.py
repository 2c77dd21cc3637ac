"""The rest of the HTTP surface: model list, dashboards' live views, admin and redirects.

`GET /v1/models` (5.9, Origin echoed), `GET /unload`, `GET /api/version`,
`GET /api/events` (5.10), `GET /api/metrics` (5.15, the activity log), `GET /logs`, `GET /logs/stream[/{id}]` (5.12),
`GET /wol-health`, `GET /` -> /ui, `GET /upstream` -> /ui/models,
and the `hooks.on_startup.preload` task
(7): each listed model is acquired through the router in order (normal
scheduling and swapping), sent a `GET /`, and released.

Router state changes and reload ends (as modelStatus), the model-dispatched in-flight count (routes/dispatch.py)
and every write to the proxy and upstream logs are published to the /api/events hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.http.aio.app import STATE, AppState
from llama_swap.runtime.http.aio.proxy import UpstreamError
from llama_swap.runtime.http.aio.routes.dispatch import ACTIVITY, INFLIGHT
from llama_swap.runtime.http.middleware.cors import origin_headers
from llama_swap.runtime.http.middleware.stack import remember_prepared
from llama_swap.runtime.http.observe.activity import ActivityLog
from llama_swap.runtime.http.observe.events import (
    EventHub,
    InflightCounter,
    StreamCloser,
    make_events_handler,
    make_log_stream_handler,
    make_logs_handler,
    model_status,
)
from llama_swap.runtime.http.render.models_list import models_list
from llama_swap.runtime.http.render.version import build_info

log = logging.getLogger("llama_swap.surface")

HUB = web.AppKey("llama_swap_event_hub", EventHub)
_EMPTY_MUX = LogBuffer("mux")


def mux_of(state: AppState) -> LogBuffer:
    """The log /logs shows: whatever proxy/upstream feed (the mux); empty when neither does."""
    return state.proxy_log.parent or state.upstream_log.parent or _EMPTY_MUX


def resolve_log(state: AppState, name: str) -> LogBuffer | None:
    if name == "":
        return mux_of(state)
    if name == "proxy":
        return state.proxy_log
    if name == "upstream":
        return state.upstream_log
    model_id = state.plan.resolve(name)
    proc = state.router.processes.get(model_id) if model_id else None
    return proc.log if proc is not None else None


def statuses(state: AppState) -> list[dict[str, Any]]:
    states = {mid: proc.state for mid, proc in state.router.processes.items()}
    return model_status(state.plan, states)


async def list_models(request: web.Request) -> web.Response:
    doc = models_list(request.app[STATE].plan, int(time.time()))
    return web.json_response(doc, headers=origin_headers(request.headers))


async def unload(request: web.Request) -> web.Response:
    await request.app[STATE].router.unload()
    return web.Response(text="OK")


async def version(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(build_info, request.app[STATE].version)  # runs git once
    return web.json_response(info)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def to_ui(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui")


async def to_ui_models(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/models")


async def preload(state: AppState) -> None:
    """Load `plan.preload` one after another through the router (reference 7)."""
    for model_id in state.plan.preload:
        if model_id not in state.router.processes:
            log.warning("preload: model %s is not a local model, skipping", model_id)
            continue
        log.info("preloading model: %s", model_id)
        try:
            lease = await state.router.acquire(model_id)
        except RouteFailure as failure:
            log.error("failed to preload model %s: status %d", model_id, failure.error.status)
            continue
        async with lease:
            try:
                resp = await state.upstreams.send(lease.model, "GET", "/", CIMultiDict(), None)
                status = resp.status
                await resp.read()
                resp.release()
            except (UpstreamError, OSError) as exc:
                log.error("failed to preload model %s: %s", model_id, exc)
                continue
        if status >= 400:
            log.error("failed to preload model %s: status %d", model_id, status)


async def _forward_log(buffer: LogBuffer, source: str, hub: EventHub) -> None:
    async with buffer.subscribe() as sub:
        async for chunk in sub:
            hub.publish("logData", {"source": source, "data": chunk})


def register(app: web.Application) -> None:
    state = app[STATE]
    hub = EventHub()
    closer = StreamCloser()
    app[HUB] = hub
    counter = app.get(INFLIGHT) or InflightCounter()  # dispatch.py counts model requests
    counter.hub = hub
    activity = app.get(ACTIVITY) or ActivityLog(lambda: state.plan.settings.metricsMaxInMemory)
    activity.listener = lambda entry: hub.publish("metrics", [entry])
    activity.live = hub.has_subscribers  # entries are rendered lazily while nobody listens

    async def api_metrics(request: web.Request) -> web.Response:
        return web.json_response(activity.entries())

    def on_router_event(event: dict[str, Any]) -> None:
        # Process state changes, and a reload's end (models may have come or gone).
        if event.get("type") in ("state", "configReload"):
            hub.publish("modelStatus", statuses(state))

    listeners = state.extras.get("event_listeners")
    if isinstance(listeners, list):
        listeners.append(on_router_event)

    def burst() -> list[tuple[str, Any]]:
        return [
            ("logData", {"source": "proxy", "data": state.proxy_log.history()}),
            ("logData", {"source": "upstream", "data": state.upstream_log.history()}),
            ("modelStatus", statuses(state)),
            ("metrics", activity.entries()),
            ("inflight", {"total": counter.total}),
        ]

    tasks: list[asyncio.Task[None]] = []

    async def start_background(_: web.Application) -> None:
        tasks.append(asyncio.ensure_future(_forward_log(state.proxy_log, "proxy", hub)))
        tasks.append(asyncio.ensure_future(_forward_log(state.upstream_log, "upstream", hub)))
        if state.plan.preload:
            tasks.append(asyncio.ensure_future(preload(state)))

    async def stop_streams(_: web.Application) -> None:
        closer.close_all()
        hub.close()

    async def stop_background(_: web.Application) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    app.on_response_prepare.append(remember_prepared)  # access log of abandoned streams
    app.on_startup.append(start_background)
    app.on_shutdown.append(stop_streams)
    app.on_cleanup.append(stop_background)

    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/unload", unload)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/metrics", api_metrics)
    app.router.add_get("/api/events", make_events_handler(hub, burst, closer))
    app.router.add_get("/logs", make_logs_handler(lambda: mux_of(state)))
    stream = make_log_stream_handler(lambda name: resolve_log(state, name), closer)
    app.router.add_get("/logs/stream", stream)
    app.router.add_get("/logs/stream/{id:.*}", stream)  # "/logs/stream/" is the mux too
    app.router.add_get("/wol-health", health)
    app.router.add_get("/", to_ui)
    app.router.add_get("/upstream", to_ui_models)
