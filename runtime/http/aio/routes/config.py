"""Config routes: `GET /api/config/status` and `POST /api/config/reload` (hot reload).

Both read the `Reloader` that runtime/serve.py puts in `services.reloader` when the
server can reload (503 otherwise).
`POST /api/config/reload` runs the same recompile as the file watcher and SIGHUP
(coalesced with a reload already running) and answers with its outcome: 200 when
the new plan was applied or nothing changed, 422 when the config was refused (the
running plan is kept; the body carries the errors with file and line).

After an applied reload that changed the preload list, or added or restarted a model
on it, `hooks.on_startup.preload` runs again (models already running are kept; the
Go original re-runs it after every reload because it restarts everything).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from llama_swap.runtime.engine.reload import Reloader
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.aio.preload import needs_preload, preload
from llama_swap.runtime.http.render.errors import error_response
from llama_swap.runtime.http.services import Services


def _reloader(request: web.Request) -> Reloader | None:
    return request.app[STATE].reloader


def _unavailable(request: web.Request) -> web.Response:
    """503 when this server runs without a config file to reload."""
    return error_response(request.headers, 503, "config reload is not available in this server")


async def config_status(request: web.Request) -> web.Response:
    reloader = _reloader(request)
    if reloader is None:
        return _unavailable(request)
    return web.json_response(reloader.status())


async def config_reload(request: web.Request) -> web.Response:
    reloader = _reloader(request)
    if reloader is None:
        return _unavailable(request)
    outcome = await reloader.reload("POST /api/config/reload")
    return web.json_response(outcome.as_dict(), status=200 if outcome.ok else 422)


def _preload_after_reloads(app: web.Application, services: Services) -> None:
    """Run the preload hook again after a reload that asks for it; the runs are ended
    at cleanup."""
    tasks: set[asyncio.Task[None]] = set()

    def on_event(event: dict[str, Any]) -> None:
        if needs_preload(services.plan.preload, event):
            task = asyncio.get_running_loop().create_task(preload(services), name="preload")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    services.listeners.add(on_event)

    async def stop_preloads(_: web.Application) -> None:
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(BaseException):
                await task

    app.on_cleanup.append(stop_preloads)


def register(app: web.Application, services: Services) -> None:
    app.router.add_get("/api/config/status", config_status)
    app.router.add_post("/api/config/reload", config_reload)
    _preload_after_reloads(app, services)
