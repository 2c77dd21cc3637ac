"""Config routes: `GET /api/config/status` and `POST /api/config/reload` (hot reload, issue 5).

Both read the `Reloader` that `runtime.live_config` puts in `state.extras["reloader"]`.
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

RELOADER_KEY = "reloader"


def _reloader(request: web.Request) -> Reloader | None:
    found = request.app[STATE].extras.get(RELOADER_KEY)
    return found if isinstance(found, Reloader) else None


def _unavailable() -> web.Response:
    return web.json_response(
        {"error": {"message": "config reload is not available in this server", "type": "server_error"}},
        status=503,
    )


async def config_status(request: web.Request) -> web.Response:
    reloader = _reloader(request)
    if reloader is None:
        return _unavailable()
    return web.json_response(reloader.status())


async def config_reload(request: web.Request) -> web.Response:
    reloader = _reloader(request)
    if reloader is None:
        return _unavailable()
    outcome = await reloader.reload("POST /api/config/reload")
    return web.json_response(outcome.as_dict(), status=200 if outcome.ok else 422)


def needs_preload(preload: tuple[str, ...], event: dict[str, Any]) -> bool:
    """Should an applied reload (its `configReload` event) run the preload hook again?"""
    if not preload or event.get("type") != "configReload" or not event.get("changed"):
        return False
    diff = event.get("diff") or {}
    touched = set(diff.get("added", ())) | set(diff.get("changedRestart", ()))
    return bool(diff.get("preloadChanged")) or any(m in touched for m in preload)


def register(app: web.Application) -> None:
    app.router.add_get("/api/config/status", config_status)
    app.router.add_post("/api/config/reload", config_reload)
    state = app[STATE]
    tasks: set[asyncio.Task[None]] = set()

    def on_event(event: dict[str, Any]) -> None:
        if needs_preload(state.plan.preload, event):
            from llama_swap.runtime.http.aio.routes.surface import preload

            task = asyncio.get_running_loop().create_task(preload(state), name="preload")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    listeners = state.extras.get("event_listeners")
    if isinstance(listeners, list):
        listeners.append(on_event)

    async def stop_preloads(_: web.Application) -> None:
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(BaseException):
                await task

    app.on_cleanup.append(stop_preloads)
