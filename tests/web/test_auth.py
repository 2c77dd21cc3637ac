"""apiKeys: Basic password, Bearer (any case), x-api-key; exempt routes; 401 shape."""

from __future__ import annotations

import base64

import pytest
from aiohttp import web

from llama_swap.runtime.core.auth import extract_api_key, is_exempt, key_matches

from .conftest import make_plan, real_stack

KEYS = ("sk-one", "sk-two")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": basic("anyone", "sk-one")}, "sk-one"),
        ({"Authorization": "Bearer sk-two"}, "sk-two"),
        ({"Authorization": "bEaReR sk-two"}, "sk-two"),
        ({"x-api-key": "sk-one"}, "sk-one"),
        ({"Authorization": basic("u", "p"), "x-api-key": "x"}, "p"),
        ({"Authorization": "Basic !!notbase64"}, ""),
        ({"Authorization": "Bearer"}, ""),
        ({}, ""),
    ],
)
def test_candidate_key_precedence(headers: dict[str, str], expected: str) -> None:
    assert extract_api_key(headers) == expected


def test_key_comparison_is_exact() -> None:
    assert key_matches("sk-two", KEYS)
    assert not key_matches("sk-tw", KEYS)
    assert not key_matches("sk-two ", KEYS)
    assert not key_matches("", KEYS)
    assert not key_matches("", ("",))


@pytest.mark.parametrize(
    ("method", "path", "exempt"),
    [
        ("GET", "/health", True),
        ("GET", "/wol-health", True),
        ("GET", "/", True),
        ("GET", "/favicon.ico", True),
        ("GET", "/upstream", True),
        ("OPTIONS", "/v1/chat/completions", True),
        ("POST", "/", False),
        ("GET", "/upstream/m/health", False),
        ("GET", "/v1/models", False),
        ("GET", "/running", False),
    ],
)
def test_exempt_routes(method: str, path: str, exempt: bool) -> None:
    assert is_exempt(method, path) is exempt


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_the_stack_accepts_each_form_and_rejects_others(serve) -> None:
    app = web.Application(middlewares=real_stack(make_plan(apiKeys=KEYS)))
    app.router.add_route("*", "/{tail:.*}", ok)
    client = await serve(app)
    for headers in (
        {"Authorization": basic("x", "sk-one")},
        {"Authorization": "Bearer sk-two"},
        {"x-api-key": "sk-one"},
    ):
        r = await client.post("/v1/chat/completions", headers=headers)
        assert r.status == 200, headers
    r = await client.post("/v1/chat/completions", headers={"Authorization": "Bearer nope"})
    assert r.status == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
    assert await r.json() == {"src": "llama-swap", "error": {"message": "unauthorized: invalid or missing API key", "type": "authentication_error", "param": None, "code": "unauthorized"}}
    r = await client.get("/running", headers={"Accept": "text/plain"})
    assert r.status == 401 and await r.text() == "llama-swap: unauthorized: invalid or missing API key"
    assert (await client.get("/health")).status == 200
    assert (await client.options("/v1/models")).status == 204


async def test_no_keys_means_no_auth(serve) -> None:
    app = web.Application(middlewares=real_stack(make_plan(apiKeys=())))
    app.router.add_get("/running", ok)
    client = await serve(app)
    assert (await client.get("/running")).status == 200
