"""Error bodies follow the client's Accept header; statuses come from RouteError."""

from __future__ import annotations

import json

from aiohttp import web

from llama_swap.runtime.core.error_body import TOO_MANY_REQUESTS_BODY, error_payload, render_error
from llama_swap.runtime.core.errors import (
    RouteError,
    RouteFailure,
    health_timeout,
    start_failed,
    too_many_requests,
)

from .conftest import real_stack


def test_json_is_the_default_shape() -> None:
    body, ctype = render_error("", 500, "boom")
    assert ctype == "application/json"
    assert json.loads(body) == {"src": "llama-swap", "error": {
        "message": "boom", "type": "server_error", "param": None, "code": "internal_error"}}


def test_text_plain_and_html_by_accept() -> None:
    assert render_error("text/plain", 500, "boom") == (b"llama-swap: boom", "text/plain")
    body, ctype = render_error("text/html,application/xhtml+xml", 500, "<b>&")
    assert ctype == "text/html"
    assert b"&lt;b&gt;&amp;" in body and b"<b>" not in body


def test_the_429_names_the_concurrency_limit() -> None:
    assert json.loads(error_payload(too_many_requests()))["error"] == {
        "message": "Too many requests", "type": "rate_limit_error", "param": None,
        "code": "concurrency_limit"}


async def test_route_failures_render_with_their_status(serve) -> None:
    errors = {
        "/start": start_failed("m", "exited"),
        "/slow": health_timeout("m", 2),
        "/busy": too_many_requests(),
        "/none": RouteError(404, "no model id could be identified"),
    }

    async def handler(request: web.Request) -> web.Response:
        raise RouteFailure(errors[request.path])

    app = web.Application(middlewares=real_stack())
    app.router.add_get("/{x}", handler)
    client = await serve(app)

    r = await client.get("/start")
    assert r.status == 502 and (await r.json())["error"]["message"] == "[m] start failed: exited"
    r = await client.get("/slow", headers={"Accept": "text/plain"})
    assert r.status == 503 and (await r.text()).startswith("llama-swap: [m] health check timed out")
    r = await client.get("/busy")
    assert r.status == 429 and r.headers["Retry-After"] == "1"
    assert await r.read() == TOO_MANY_REQUESTS_BODY
    r = await client.get("/none")
    assert r.status == 404
    assert await r.json() == {"src": "llama-swap", "error": {
        "message": "no model id could be identified", "type": "invalid_request_error",
        "param": None, "code": "not_found"}}
