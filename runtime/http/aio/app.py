"""The aiohttp application: shared state plus route modules, nothing else.

Why this shape: the HTTP surface grows route module by route module (issue 3's
inference and admin routes here; issue 4 adds models, logs, events, upstream,
peers...).  Each module in `runtime/routes/` has `register(app)` and reads the
shared `AppState` from `app[STATE]`.  Handlers read the plan through
`state.plan` on every request, so a hot reload (one reference replaced on the
router's loop) takes effect for the next request without rebuilding the app.

`build_app` does not start anything; `runtime/serve.py` owns the lifecycle
(start the router, listen, shut down in order).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.router import Router
from llama_swap.runtime.http.aio.proxy import UpstreamPool

# Request bodies are read whole only for model extraction (JSON); allow big prompts/images.
MAX_BODY = 1024 * 1024 * 1024

# The full surface: admin (issue 3), dispatch (every model-dispatched route, built on
# inference's route table), surface and upstream (issue 4), config (issue 5).  `runtime.routes.inference`
# alone serves issue 3's JSON routes without filters/peers (see its docstring).
ROUTE_MODULES: tuple[str, ...] = (
    "llama_swap.runtime.http.aio.routes.admin",
    "llama_swap.runtime.http.aio.routes.dispatch",
    "llama_swap.runtime.http.aio.routes.ui",  # before surface: its /favicon.ico wins over surface's 404
    "llama_swap.runtime.http.aio.routes.surface",
    "llama_swap.runtime.http.aio.routes.upstream",
    "llama_swap.runtime.http.aio.routes.config",
    "llama_swap.runtime.http.aio.routes.metrics",  # after dispatch: serves its capture store
)
CORE_ROUTE_MODULES: tuple[str, ...] = ("llama_swap.runtime.http.aio.routes.admin", "llama_swap.runtime.http.aio.routes.inference")


@dataclass(eq=False)
class AppState:
    """What every handler may need; one per running server."""

    router: Router
    upstreams: UpstreamPool
    proxy_log: LogBuffer
    upstream_log: LogBuffer
    version: str = "0"
    extras: dict[str, Any] = field(default_factory=dict)  # for route modules' own state

    @property
    def plan(self) -> Plan:
        return self.router.plan


STATE: web.AppKey[AppState] = web.AppKey("llama_swap_state", AppState)


def create_state(
    plan: Plan,
    *,
    proxy_log: LogBuffer | None = None,
    upstream_log: LogBuffer | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    ttl_interval: float = 1.0,
    version: str = "0",
) -> AppState:
    """Build the router and upstream pool for `plan` (nothing runs yet)."""
    upstream_log = upstream_log if upstream_log is not None else LogBuffer("upstream")
    proxy_log = proxy_log if proxy_log is not None else LogBuffer("proxy")
    listeners: list[Callable[[dict[str, Any]], None]] = [on_event] if on_event else []

    def fan_out(event: dict[str, Any]) -> None:
        for listener in tuple(listeners):
            listener(event)

    router = Router(plan, upstream_log=upstream_log, on_event=fan_out, ttl_interval=ttl_interval)
    state = AppState(router, UpstreamPool(), proxy_log, upstream_log, version)
    state.extras["event_listeners"] = listeners  # route modules subscribe to router events here
    return state


def build_app(
    state: AppState,
    *,
    route_modules: Sequence[str] = ROUTE_MODULES,
    middlewares: Iterable[Any] = (),
) -> web.Application:
    """An application serving `state` with the given route modules and middlewares
    (outermost first; e.g. access log, CORS, auth from runtime/web)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=list(middlewares))
    app[STATE] = state
    for name in route_modules:
        importlib.import_module(name).register(app)

    async def close_upstreams(_: web.Application) -> None:
        await state.upstreams.close()

    app.on_cleanup.append(close_upstreams)
    return app
