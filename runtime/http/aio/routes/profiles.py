"""Profiles switched at runtime: `GET /api/profiles`, `PUT /api/profiles/active`.

`GET` lists the plan's profiles (sorted by id, disabled pins as "") and the active one.
`PUT` takes `{"name": "<profile>"}` (or `null` / `""` to clear it) and answers
`{"active": <name or null>}`; the request checks are runtime/core/profiles.py's
(`requested_profile`).  The router holds the active profile; a change is announced to the
event listeners (the `/api/events` hub publishes `profileChanged`, then `modelStatus`).
"""

from __future__ import annotations

import json

from aiohttp import web

from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.profiles import profiles_body, requested_profile
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.render.errors import route_error_response
from llama_swap.runtime.http.services import Services

_MAX_BODY = 64 * 1024


async def list_profiles(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(profiles_body(state.plan, state.router.active_profile))


async def set_active(request: web.Request) -> web.Response:
    state = request.app[STATE]
    raw = await request.content.read(_MAX_BODY + 1)
    try:
        body = json.loads(raw) if len(raw) <= _MAX_BODY else None
    except (ValueError, UnicodeDecodeError):
        body = None
    wanted = requested_profile(state.plan, body)
    if isinstance(wanted, RouteError):
        return route_error_response(request.headers, wanted)
    state.router.set_active_profile(wanted)
    return web.json_response({"active": state.router.active_profile})


def register(app: web.Application, services: Services) -> None:
    app.router.add_get("/api/profiles", list_profiles)
    app.router.add_put("/api/profiles/active", set_active)
