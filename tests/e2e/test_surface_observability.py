"""Captures, `/api/performance` and `/metrics` through the real proxy."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import fetch, surface_plan


async def wait_for_samples(s: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    for _ in range(100):  # the first sample comes ~1 s after start
        async with s.get(url + "/api/performance") as r:
            assert r.status == 200
            doc: dict[str, Any] = await r.json()
        if doc["sys_stats"]:
            return doc
        await asyncio.sleep(0.1)
    raise AssertionError("no system sample within 10 s")


async def test_exchanges_are_captured_and_served_by_id(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("a", record_file, "--tokens", "3")], captureBuffer=1))
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": "Bearer secret", "X-Trace": "t1"}
    async with aiohttp.ClientSession() as s:
        status, _, answer = await fetch(s, "POST", p.url + "/v1/chat/completions",
                                        json=body, headers=headers)
        assert status == 200
        stream = {**body, "stream": True}
        status, _, streamed = await fetch(s, "POST", p.url + "/v1/chat/completions", json=stream)
        assert status == 200
        status, _, _ = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "zz"})
        assert status == 404
        status, _, _ = await fetch(s, "POST", p.url + "/upstream/a/v1/completions",
                                   json={"prompt": "x"})
        assert status == 200
        async with s.get(p.url + "/api/metrics") as r:
            entries = await r.json()
        captures = {}
        for entry in entries:
            status, _, raw = await fetch(s, "GET", p.url + f"/api/captures/{entry['id']}")
            assert status == 200
            captures[entry["id"]] = json.loads(raw)
        bad = await fetch(s, "GET", p.url + "/api/captures/abc")
        missing = await fetch(s, "GET", p.url + "/api/captures/999")

    assert [e["has_capture"] for e in entries] == [True, True, True, True]
    plain, sse, unknown, upstream = (captures[e["id"]] for e in entries)
    assert plain["id"] == entries[0]["id"] and plain["req_path"] == "/v1/chat/completions"
    assert json.loads(base64.b64decode(plain["req_body"])) == body
    assert base64.b64decode(plain["resp_body"]) == answer
    assert plain["req_headers"]["Authorization"] == "[REDACTED]"
    assert plain["req_headers"]["X-Trace"] == "t1"
    assert plain["resp_headers"]["Content-Type"].startswith("application/json")
    assert base64.b64decode(sse["resp_body"]) == streamed
    assert unknown["resp_body"] is None and unknown["resp_headers"] is None  # request side only
    assert json.loads(base64.b64decode(unknown["req_body"])) == {"model": "zz"}
    assert upstream["req_path"] == "/v1/completions"
    # streamed through, and kept on the way (it fits in the capture buffer)
    assert json.loads(base64.b64decode(upstream["req_body"])) == {"prompt": "x"}
    assert upstream["resp_body"] is not None
    assert bad[0] == 400
    assert missing[0] == 404 and b"capture not found" in missing[2]


async def test_performance_samples_and_prometheus_text(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("a", record_file)]))
    async with aiohttp.ClientSession() as s:
        doc = await wait_for_samples(s, p.url)
        status, _, _ = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "a"})
        assert status == 200
        last = doc["sys_stats"][-1]["timestamp"]
        later = await fetch(s, "GET", p.url + "/api/performance", params={"after": last})
        bad = await fetch(s, "GET", p.url + "/api/performance", params={"after": "yesterday"})
        status, headers, text = await fetch(s, "GET", p.url + "/metrics")

    assert doc["enabled"] is True and doc["gpu_stats"] == []
    sample = doc["sys_stats"][0]
    assert sample["mem_total_mb"] > 0 and len(sample["cpu_util_per_core"]) >= 1
    assert json.loads(later[2]) == {"enabled": True, "sys_stats": [], "gpu_stats": []}
    assert bad[0] == 400
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = text.decode().splitlines()
    assert 'llamaswap_cpu_util_percent{core="0"}' in text.decode()
    assert any(line.startswith("llamaswap_memory_total_bytes ") for line in lines)
    assert 'llamaswap_load_average{interval="15m"}' in text.decode()
    assert "llamaswap_models_loaded 1.0" in lines
    assert 'llamaswap_model_ready{model="a"} 1.0' in lines
    assert 'llamaswap_requests_total{model="a",status="200"} 1.0' in lines
    assert "llamaswap_inflight_requests 0.0" in lines


async def test_disabled_monitor_and_captures(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("a", record_file)], captureBuffer=0,
                           performanceDisabled=True))
    async with aiohttp.ClientSession() as s:
        perf = await fetch(s, "GET", p.url + "/api/performance")
        prom = await fetch(s, "GET", p.url + "/metrics")
        status, _, _ = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "a"})
        assert status == 200
        async with s.get(p.url + "/api/metrics") as r:
            entries = await r.json()
        capture = await fetch(s, "GET", p.url + f"/api/captures/{entries[0]['id']}")

    assert perf[0] == 503 and json.loads(perf[2]) == {"enabled": False}
    assert prom[0] == 503 and prom[2] == b"# performance monitor not available\n"
    assert entries[0]["has_capture"] is False
    assert capture[0] == 404
