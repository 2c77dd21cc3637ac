"""The aiohttp application: the shared services plus route modules, nothing else.

Each module in `routes/` has `register(app, services)`; handlers read the plan through
`services.plan` on every request, so a hot reload (one reference replaced on the
router's loop) takes effect for the next request without rebuilding the app.  The
services are built once, before any route module, by `create_services`, so no module
depends on another having registered first.

`build_app` does not start anything; `runtime/serve.py` owns the lifecycle (start the
router, listen, shut down in order).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from llama_swap.compiler.defaults import parse_duration
from llama_swap.compiler.plan import Plan, Settings
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.router import Router
from llama_swap.runtime.http.aio.peers import PeerPool
from llama_swap.runtime.http.aio.proxy import UpstreamPool
from llama_swap.runtime.http.listeners import EventListener, EventListeners
from llama_swap.runtime.http.observe.activity import ActivityLog
from llama_swap.runtime.http.observe.activity_store import ActivityStore, Retention
from llama_swap.runtime.http.observe.captures import CaptureStore
from llama_swap.runtime.http.observe.events import EventHub
from llama_swap.runtime.http.observe.inflight import InflightTracker
from llama_swap.runtime.http.observe.prom import ProxyMetrics
from llama_swap.runtime.http.services import Services

# Request bodies are read whole only for model extraction (JSON); allow big prompts/images.
MAX_BODY = 1024 * 1024 * 1024

# The full surface.  `ui` before `surface`: aiohttp matches routes in registration order.
ROUTE_MODULES: tuple[str, ...] = (
    "llama_swap.runtime.http.aio.routes.admin",
    "llama_swap.runtime.http.aio.routes.dispatch",
    "llama_swap.runtime.http.aio.routes.ui",
    "llama_swap.runtime.http.aio.routes.surface",
    "llama_swap.runtime.http.aio.routes.upstream",
    "llama_swap.runtime.http.aio.routes.config",
    "llama_swap.runtime.http.aio.routes.metrics",
    "llama_swap.runtime.http.aio.routes.inflight",
    "llama_swap.runtime.http.aio.routes.hardware",
    "llama_swap.runtime.http.aio.routes.activity",
    "llama_swap.runtime.http.aio.routes.profiles",
    "llama_swap.runtime.http.aio.routes.comfyui",
)

STATE: web.AppKey[Services] = web.AppKey("llama_swap_services", Services)


def create_services(
    plan: Plan,
    *,
    proxy_log: LogBuffer | None = None,
    upstream_log: LogBuffer | None = None,
    on_event: EventListener | None = None,
    ttl_interval: float = 1.0,
    version: str = "0",
) -> Services:
    """Build the router, the client pools and the observers for `plan`, wired to each
    other (nothing runs yet)."""
    upstream_log = upstream_log if upstream_log is not None else LogBuffer("upstream")
    proxy_log = proxy_log if proxy_log is not None else LogBuffer("proxy")
    listeners = EventListeners()
    metrics = ProxyMetrics()
    listeners.add(metrics.on_event)
    if on_event is not None:
        listeners.add(on_event)
    router = Router(plan, upstream_log=upstream_log, on_event=listeners, ttl_interval=ttl_interval)
    hub = EventHub()
    activity = ActivityLog(
        lambda: router.plan.settings.metricsMaxInMemory,
        listener=lambda entry: _publish_entry(hub, entry),
        live=hub.has_subscribers,  # entries are rendered lazily while nobody listens
    )
    store = ActivityStore(
        lambda: router.plan.settings.storePath,
        lambda memory: retention(router.plan.settings, memory),
    )
    activity.sink = store.record
    store.on_written = metrics.tokens
    upstreams = UpstreamPool()
    listeners.add(upstreams.on_event)
    return Services(
        router=router,
        upstreams=upstreams,
        peers=PeerPool(),
        proxy_log=proxy_log,
        upstream_log=upstream_log,
        listeners=listeners,
        hub=hub,
        inflight=InflightTracker(hub),
        activity=activity,
        captures=CaptureStore(lambda: router.plan.settings.captureBuffer),
        store=store,
        metrics=metrics,
        version=version,
    )


def _publish_entry(hub: EventHub, entry: dict[str, Any]) -> None:
    """A recorded request on the events stream: the whole entry (`metrics`, the in-memory
    log's live view) and its id (`activity`: a history view fetches the page again)."""
    hub.publish("metrics", [entry])
    hub.publish("activity", {"id": entry["id"]})


def retention(settings: Settings, memory: bool) -> Retention:
    """How much history the store keeps: `store.maxRows` and `store.maxAge`; an
    in-memory database is also capped at `metricsMaxInMemory` rows."""
    rows = settings.storeMaxRows
    if memory:
        rows = min(rows, settings.metricsMaxInMemory)
    age = parse_duration(settings.storeMaxAge) / 1e9
    return Retention(max_rows=rows, max_age=age if age > 0 else None)


def build_app(
    services: Services,
    *,
    route_modules: Sequence[str] = ROUTE_MODULES,
    middlewares: Iterable[Any] = (),
) -> web.Application:
    """An application serving `services` with the given route modules and middlewares
    (outermost first; the usual stack is `aio.stack.default_middlewares`)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=list(middlewares))
    app[STATE] = services
    for name in route_modules:
        importlib.import_module(name).register(app, services)

    async def close_clients(_: web.Application) -> None:
        await services.upstreams.close()
        await services.peers.close()

    app.on_cleanup.append(close_clients)
    return app
