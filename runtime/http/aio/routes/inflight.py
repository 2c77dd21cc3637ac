"""The in-flight list's API: `GET /api/inflight` (the list as `/api/events` sends it in its
`inflight` snapshot) and `POST /api/inflight/{id}/cancel` (200 `{"msg":"ok"}`, or 404
`inflight request not found`). A cancelled request is still recorded in the activity
log when an answer had started."""

from __future__ import annotations

from aiohttp import web

from llama_swap.runtime.http.render.errors import error_response
from llama_swap.runtime.http.services import Services

NOT_FOUND = "inflight request not found"


def register(app: web.Application, services: Services) -> None:
    tracker = services.inflight

    async def listing(request: web.Request) -> web.Response:
        return web.json_response(tracker.snapshot().get("requests", []))

    async def cancel(request: web.Request) -> web.Response:
        if not tracker.cancel(request.match_info["id"]):
            return error_response(request.headers, 404, NOT_FOUND)
        return web.json_response({"msg": "ok"})

    async def stop_ticker(_: web.Application) -> None:
        tracker.close()

    app.router.add_get("/api/inflight", listing)
    app.router.add_post("/api/inflight/{id}/cancel", cancel)
    app.on_cleanup.append(stop_ticker)
