"""The persistent activity history: `GET /api/metrics/activity`, `GET /api/metrics/stats`,
`GET /api/store/status`, and the store's lifecycle.

The store (runtime/http/observe/activity_store.py) opens when the app starts -- before
the server listens, so request ids continue after the highest one on disk -- and
closes at cleanup, after the last request, writing what is still pending.  Whether
an entry still has a capture is looked up per answer: captures live in memory only.
"""

from __future__ import annotations

import logging

from aiohttp import web

from llama_swap.runtime.http.observe.activity_query import QueryError, parse_activity_query
from llama_swap.runtime.http.observe.activity_store import default_path
from llama_swap.runtime.http.render.errors import error_response
from llama_swap.runtime.http.services import Services

log = logging.getLogger("llama_swap.store")


def _lifecycle(app: web.Application, services: Services) -> None:
    async def open_store(_: web.Application) -> None:
        last = await services.store.open()
        services.activity.continue_after(last)
        status = services.store.status()
        if status["state"] == "open":
            log.debug("activity store: %s", status["path"])

    async def close_store(_: web.Application) -> None:
        await services.store.close()

    app.on_startup.append(open_store)
    app.on_cleanup.append(close_store)


def _changed_path_is_noted(services: Services) -> None:
    """A reload that names another store file: it applies at the next start."""

    def on_event(event: dict[str, object]) -> None:
        if event.get("type") != "configReload":
            return
        store = services.store
        configured = services.plan.settings.storePath
        wanted = configured if configured is not None else default_path()
        if store.wanted and wanted != store.wanted:
            log.warning("store.path changed to %s; it applies after a restart", wanted)

    services.listeners.add(on_event)


def register(app: web.Application, services: Services) -> None:
    _lifecycle(app, services)
    _changed_path_is_noted(services)
    store = services.store

    async def activity(request: web.Request) -> web.Response:
        try:
            query = parse_activity_query(request.query)
        except QueryError as exc:
            return error_response(request.headers, 400, str(exc))
        try:
            page = await store.page(query)
        except Exception as exc:  # any database failure (StoreError, sqlite3.Error) is a 500
            log.warning("activity store: listing failed: %s", exc)
            return error_response(request.headers, 500, "failed to get activity")
        captures = services.captures
        for entry in page["data"]:
            entry["has_capture"] = entry["id"] in captures
        return web.json_response(page)

    async def stats(request: web.Request) -> web.Response:
        try:
            answer = await store.stats((request.query.get("model") or "").strip())
        except Exception as exc:  # any database failure is a 500
            log.warning("activity store: stats failed: %s", exc)
            return error_response(request.headers, 500, "failed to get activity stats")
        return web.json_response(answer)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(store.status())

    app.router.add_get("/api/metrics/activity", activity)
    app.router.add_get("/api/metrics/stats", stats)
    app.router.add_get("/api/store/status", status)
