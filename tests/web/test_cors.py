"""CORS: every OPTIONS is a 204 preflight; /v1/models echoes Origin."""

from __future__ import annotations

from aiohttp import web

from llama_swap.runtime.http.middleware.cors import (
    DEFAULT_ALLOW_HEADERS,
    allowed_headers,
    origin_headers,
)

from .conftest import real_stack


def test_requested_headers_are_filtered_to_valid_tokens() -> None:
    assert allowed_headers("Content-Type, X-Custom,bad header, (x), Authorization") == (
        "Content-Type, X-Custom, Authorization"
    )
    assert allowed_headers(None) == DEFAULT_ALLOW_HEADERS


def test_origin_is_echoed_only_when_sent() -> None:
    assert origin_headers({"Origin": "http://ui.local"}) == {
        "Access-Control-Allow-Origin": "http://ui.local"
    }
    assert origin_headers({}) == {}


async def test_preflight_on_any_path(serve) -> None:
    async def never(request: web.Request) -> web.Response:
        raise AssertionError("OPTIONS must not reach handlers")

    app = web.Application(middlewares=real_stack())
    app.router.add_route("*", "/{tail:.*}", never)
    client = await serve(app)
    r = await client.options("/anything/at/all", headers={"Access-Control-Request-Headers": "X-A, b c"})
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    assert r.headers["Access-Control-Max-Age"] == "86400"
    assert r.headers["Access-Control-Allow-Headers"] == "X-A"
    r = await client.options("/v1/models")
    assert r.headers["Access-Control-Allow-Headers"] == DEFAULT_ALLOW_HEADERS
