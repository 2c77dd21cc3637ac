"""Operational routes: `GET /health`, `GET /running`, `POST /api/models/unload[/{model}]`.

Shapes follow the Go original: `/running` lists processes that are not stopped, sorted
by id; the unload routes return only after the processes
have exited (the router's `unload` waits for them).  A configured key quoted in a
model's command line is shown as `[REDACTED]` in `/running`.  Under the budget router
each record carries the model's declared `resources` and the answer a `budget` object
(capacities and what the loaded models use of them).
"""

from __future__ import annotations

from aiohttp import web

from llama_swap.runtime.core.auth import redact, secrets_of
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.render.errors import route_error_response
from llama_swap.runtime.http.services import Services

MODEL_NOT_FOUND = "model not found"


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def running(request: web.Request) -> web.Response:
    state = request.app[STATE]
    records = state.router.running()
    secrets = secrets_of(state.plan)
    if secrets:
        records = [{**r, "cmd": redact(str(r["cmd"]), secrets)} for r in records]
    budget = state.router.budget_usage()
    extra = {"budget": budget.to_json()} if budget is not None else {}
    return web.json_response({"running": records} | extra)


async def unload_all(request: web.Request) -> web.Response:
    await request.app[STATE].router.unload()
    return web.json_response({"msg": "ok"})


async def unload_one(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["model"].removeprefix("/")
    plan = state.plan
    model_id = plan.resolve(name)
    if model_id is None:  # peers' models too: the original resolves local ids and aliases only
        return route_error_response(request.headers, RouteError(404, MODEL_NOT_FOUND))
    await state.router.unload((model_id,))
    return web.Response(text="OK")


def register(app: web.Application, services: Services) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/running", running)
    app.router.add_post("/api/models/unload", unload_all)
    app.router.add_post("/api/models/unload/{model:.*}", unload_one)  # "" -> model not found
