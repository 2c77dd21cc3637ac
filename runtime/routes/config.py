"""Config routes: `GET /api/config/status` and `POST /api/config/reload` (hot reload, issue 5).

Both read the `Reloader` that `runtime.live_config` puts in `state.extras["reloader"]`.
`POST /api/config/reload` runs the same recompile as the file watcher and SIGHUP
(coalesced with a reload already running) and answers with its outcome: 200 when
the new plan was applied or nothing changed, 422 when the config was refused (the
running plan is kept; the body carries the errors with file and line).
"""

from __future__ import annotations

from aiohttp import web

from runtime.app import STATE
from runtime.reload import Reloader

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


def register(app: web.Application) -> None:
    app.router.add_get("/api/config/status", config_status)
    app.router.add_post("/api/config/reload", config_reload)
