"""`GET /api/hardware`: the host's hardware snapshot (runtime/http/observe/hardware.py).

Taken once, in a thread, when the server starts (the external tools it asks may take a
while), and kept for the server's life, reloads included. A request before it is ready
waits for it. Where nothing could be detected the answer is an empty object with a 200,
never an error: the route is informational.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from llama_swap.runtime.http.observe.hardware import detect
from llama_swap.runtime.http.services import Services

log = logging.getLogger("llama_swap.hardware")


def register(app: web.Application, services: Services) -> None:
    pending: list[asyncio.Task[dict[str, Any]]] = []

    async def snapshot() -> dict[str, Any]:
        try:
            return await asyncio.to_thread(detect, services.version or "0")
        except Exception:  # detection is best effort: an empty answer, never an error
            log.warning("hardware detection failed", exc_info=True)
            return {}

    def task() -> asyncio.Task[dict[str, Any]]:
        if not pending:
            pending.append(asyncio.ensure_future(snapshot()))
        return pending[0]

    async def start(_: web.Application) -> None:
        task()

    async def stop(_: web.Application) -> None:
        for t in pending:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t

    async def hardware(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.shield(task()))

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/api/hardware", hardware)
