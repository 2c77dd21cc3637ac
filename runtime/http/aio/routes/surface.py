"""The rest of the HTTP surface: model list, dashboards' live views, admin and redirects.

`GET /v1/models` (the request's Origin echoed), `GET /unload`, `GET /api/version`,
`GET /api/events`, `GET /api/metrics` (the activity log), `GET /logs`,
`GET /logs/stream[/{id}]`, `GET /wol-health`, `GET /` -> /ui, `GET /upstream` ->
/ui/models, and the startup preload (runtime/http/aio/preload.py).

Router state changes and reload ends (as modelStatus) and every write to the proxy and
upstream logs are published to the /api/events hub; the in-flight counter and the
activity log publish to it themselves (they are wired to it when the services are built).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.aio.live import (
    make_events_handler,
    make_log_stream_handler,
    make_logs_handler,
)
from llama_swap.runtime.http.aio.preload import preload
from llama_swap.runtime.http.aio.stack import remember_prepared
from llama_swap.runtime.http.middleware.cors import origin_headers
from llama_swap.runtime.http.observe.events import EventHub, StreamCloser, model_status
from llama_swap.runtime.http.render.models_list import models_list
from llama_swap.runtime.http.render.version import build_info
from llama_swap.runtime.http.services import Services

_EMPTY_MUX = LogBuffer("mux")


def mux_of(state: Services) -> LogBuffer:
    """The log /logs shows: whatever proxy/upstream feed (the mux); empty when neither does."""
    return state.proxy_log.parent or state.upstream_log.parent or _EMPTY_MUX


def resolve_log(state: Services, name: str) -> LogBuffer | None:
    if name == "":
        return mux_of(state)
    if name == "proxy":
        return state.proxy_log
    if name == "upstream":
        return state.upstream_log
    model_id = state.plan.resolve(name)
    proc = state.router.processes.get(model_id) if model_id else None
    return proc.log if proc is not None else None


def statuses(state: Services) -> list[dict[str, Any]]:
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


async def _forward_log(buffer: LogBuffer, source: str, hub: EventHub) -> None:
    async with buffer.subscribe() as sub:
        async for chunk in sub:
            hub.publish("logData", {"source": source, "data": chunk})


def _burst(services: Services) -> Callable[[], list[tuple[str, Any]]]:
    """What a new /api/events subscriber gets first: both logs' history, model status,
    the activity log, the in-flight count."""

    def burst() -> list[tuple[str, Any]]:
        return [
            ("logData", {"source": "proxy", "data": services.proxy_log.history()}),
            ("logData", {"source": "upstream", "data": services.upstream_log.history()}),
            ("modelStatus", statuses(services)),
            ("metrics", services.activity.entries()),
            ("inflight", {"total": services.inflight.total}),
        ] + _budget_event(services)

    return burst


def _budget_event(services: Services) -> list[tuple[str, Any]]:
    """The budget in use, as an event, when the budget router is used."""
    usage = services.router.budget_usage()
    return [("budget", usage.to_json())] if usage is not None else []


def _publish_model_status(services: Services) -> None:
    """Process state changes, and a reload's end (models may have come or gone), reach
    the hub as modelStatus."""

    def on_router_event(event: dict[str, Any]) -> None:
        if event.get("type") in ("state", "configReload"):
            services.hub.publish("modelStatus", statuses(services))
            for kind, data in _budget_event(services):
                services.hub.publish(kind, data)

    services.listeners.add(on_router_event)


def _background(app: web.Application, services: Services, closer: StreamCloser) -> None:
    """Log forwarding to the hub and the startup preload run with the app; live streams
    end at shutdown, before the server waits for handlers."""
    tasks: list[asyncio.Task[None]] = []
    hub = services.hub

    async def start_background(_: web.Application) -> None:
        tasks.append(asyncio.ensure_future(_forward_log(services.proxy_log, "proxy", hub)))
        tasks.append(asyncio.ensure_future(_forward_log(services.upstream_log, "upstream", hub)))
        if services.plan.preload:
            tasks.append(asyncio.ensure_future(preload(services)))

    async def stop_streams(_: web.Application) -> None:
        closer.close_all()
        hub.close()

    async def stop_background(_: web.Application) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    app.on_startup.append(start_background)
    app.on_shutdown.append(stop_streams)
    app.on_cleanup.append(stop_background)


def register(app: web.Application, services: Services) -> None:
    closer = StreamCloser()
    _publish_model_status(services)
    _background(app, services, closer)
    app.on_response_prepare.append(remember_prepared)  # access log of abandoned streams

    async def api_metrics(request: web.Request) -> web.Response:
        return web.json_response(services.activity.entries())

    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/unload", unload)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/metrics", api_metrics)
    app.router.add_get("/api/events", make_events_handler(services.hub, _burst(services), closer))
    app.router.add_get("/logs", make_logs_handler(lambda: mux_of(services)))
    stream = make_log_stream_handler(lambda name: resolve_log(services, name), closer)
    app.router.add_get("/logs/stream", stream)
    app.router.add_get("/logs/stream/{id:.*}", stream)  # "/logs/stream/" is the mux too
    app.router.add_get("/wol-health", health)
    app.router.add_get("/", to_ui)
    app.router.add_get("/upstream", to_ui_models)
