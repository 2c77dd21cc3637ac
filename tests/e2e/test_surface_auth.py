"""apiKeys through the real proxy: each credential form works, others are rejected,
exempt routes stay open, and no key ever reaches the proxy's log output."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import fetch, surface_plan

KEY = "sk-very-secret-1"
OTHER = "sk-very-secret-2"


def basic(password: str, user: str = "anyone") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def keyed_proxy(proxy: Any, record_file: Path) -> Any:
    return proxy(surface_plan([fake_model("m", record_file)], apiKeys=(KEY, OTHER)))


async def test_auth_matrix(keyed_proxy: Any) -> None:
    p = keyed_proxy
    accepted = [
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer {OTHER}"},
        {"Authorization": basic(KEY)},
        {"x-api-key": OTHER},
        {"Authorization": basic(KEY), "x-api-key": "wrong"},  # Basic wins over x-api-key
    ]
    rejected = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": basic("wrong", user=KEY)},  # the user part is not the key
        {"x-api-key": KEY[:-1]},
        {"Authorization": f"Token {KEY}"},
        {"Authorization": "Bearer wrong", "x-api-key": KEY},  # Bearer wins over x-api-key
    ]
    async with aiohttp.ClientSession() as s:
        for headers in accepted:
            status, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions",
                                         json={"model": "m"}, headers=headers)
            assert status == 200, headers
            forwarded = json.loads(raw)["fake"]["headers"]  # credentials reach local upstreams
            assert {k.lower() for k in headers} <= {k.lower() for k in forwarded}
        for headers in rejected:
            for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                                 ("GET", "/running"), ("GET", "/upstream/m/health"),
                                 ("GET", "/logs"), ("GET", "/api/events")):
                status, resp_headers, raw = await fetch(s, method, p.url + path, headers=headers,
                                                        json={"model": "m"} if method == "POST" else None)
                assert status == 401, (method, path, headers)
                assert resp_headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
                assert json.loads(raw) == {"src": "llama-swap", "error": {
                    "message": "unauthorized: invalid or missing API key",
                    "type": "authentication_error", "param": None, "code": "unauthorized",
                }}
        for method, path, expected in (("GET", "/health", 200), ("GET", "/wol-health", 200),
                                       ("GET", "/", 302), ("GET", "/upstream", 302),
                                       ("GET", "/favicon.ico", 200), ("GET", "/ui", 301),
                                       ("OPTIONS", "/v1/chat/completions", 204)):
            status, _, _ = await fetch(s, method, p.url + path)
            assert status == expected, (method, path)
        status, _, logs = await fetch(s, "GET", p.url + "/logs", headers={"x-api-key": KEY})
    assert status == 200 and b"/v1/chat/completions" in logs
    output = p.log_text()
    assert "Request " in output
    for secret in (KEY, OTHER, KEY[:-1], base64.b64encode(f"anyone:{KEY}".encode()).decode()):
        assert secret not in output and secret.encode() not in logs
