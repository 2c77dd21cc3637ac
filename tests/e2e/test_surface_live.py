"""Dashboards' live views through the real proxy: /api/events and /logs/stream read by a
real client while models load and unload."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import surface_plan


async def next_events(resp: aiohttp.ClientResponse, buf: list[bytes], until: Any, timeout: float = 15) -> list[dict[str, Any]]:
    """Read SSE frames until `until(frames)` holds; returns all frames read."""
    frames: list[dict[str, Any]] = []
    async def read() -> None:
        while not until(frames):
            chunk = await resp.content.readany()
            assert chunk, "event stream ended"
            buf[0] += chunk
            while b"\n\n" in buf[0]:
                frame, buf[0] = buf[0].split(b"\n\n", 1)
                head, data = frame.split(b"\n", 1)
                assert head == b"event:message" and data.startswith(b"data:")
                msg = json.loads(data[5:])
                frames.append({"type": msg["type"], "data": json.loads(msg["data"])})
    await asyncio.wait_for(read(), timeout)
    return frames


def states(frames: list[dict[str, Any]], model: str) -> list[str]:
    return [rec["state"] for f in frames if f["type"] == "modelStatus"
            for rec in f["data"] if rec["id"] == model]


async def test_events_follow_loads_and_unloads(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("a", record_file), fake_model("b", record_file)]))
    async with aiohttp.ClientSession() as s, s.get(p.url + "/api/events") as events:
        assert events.headers["Content-Type"] == "text/event-stream"
        buf = [b""]
        burst = await next_events(events, buf, lambda f: len(f) >= 6)
        assert [f["type"] for f in burst[:6]] == [
            "logData", "logData", "modelStatus", "profileChanged", "metrics", "inflight"
        ]
        assert [r["state"] for r in burst[2]["data"]] == ["stopped", "stopped"]
        assert burst[3]["data"] == {"active": None}
        assert burst[5]["data"] == {"operation": "snapshot"}  # nothing in flight

        async with s.post(p.url + "/v1/chat/completions", json={"model": "a"}) as r:
            assert r.status == 200
        def logged(f: list[dict[str, Any]]) -> bool:
            return any(x["type"] == "logData" and "POST /v1/chat/completions" in x["data"]["data"]
                       for x in f)

        frames = await next_events(events, buf, lambda f: "ready" in states(f, "a") and logged(f))
        assert states(frames, "a")[:2] == ["starting", "ready"]
        inflight = [f["data"] for f in frames if f["type"] == "inflight"]
        # added, (maybe updated as its answer went,) removed
        assert {(d["operation"], d.get("request", {}).get("model")) for d in inflight[:-1]} == {
            ("upsert", "a")}
        assert inflight[-1] == {"operation": "remove", "id": inflight[0]["request"]["id"]}

        async with s.post(p.url + "/api/models/unload/a") as r:
            assert r.status == 200
        frames = await next_events(events, buf, lambda f: "stopped" in states(f, "a"))
        assert states(frames, "a") == ["stopping", "stopped"]


async def test_log_stream_follows_a_model(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("a", record_file)]))
    async with aiohttp.ClientSession() as s:
        async with s.get(p.url + "/logs/stream/nope") as r:
            assert r.status == 400
        proxy_stream = await s.get(p.url + "/logs/stream/proxy?no-history")
        model_stream = await s.get(p.url + "/logs/stream/a")
        await asyncio.sleep(0.2)
        async with s.post(p.url + "/v1/chat/completions", json={"model": "a"}) as r:
            assert r.status == 200

        async def read_until(resp: aiohttp.ClientResponse, needle: str) -> str:
            text = ""
            while needle not in text:
                chunk = await resp.content.readany()
                assert chunk, f"stream ended before {needle!r}: {text!r}"
                text += chunk.decode()
            return text

        proxy_text = await asyncio.wait_for(read_until(proxy_stream, '"POST /v1/chat/completions'), 15)
        assert "listening on" not in proxy_text  # no-history: only what came after
        model_text = await asyncio.wait_for(read_until(model_stream, "127.0.0.1"), 15)
        assert model_text  # the fake upstream's own start-up output
        proxy_stream.close()
        model_stream.close()
