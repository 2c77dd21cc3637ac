"""The activity log through the real proxy: `GET /api/metrics`, the
`metrics` event on /api/events, and streams relayed while they are being measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import surface_plan
from tests.e2e.test_surface_live import next_events

UNKNOWN = -1


async def metrics(s: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with s.get(url + "/api/metrics") as r:
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]


async def test_requests_are_recorded_with_tokens_and_published(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("a", record_file, "--tokens", "5")], metricsMaxInMemory=3))
    async with aiohttp.ClientSession() as s, s.get(p.url + "/api/events") as events:
        buf = [b""]
        burst = await next_events(events, buf, lambda f: len(f) >= 6)
        assert burst[4] == {"type": "metrics", "data": []}  # after profileChanged

        async with s.post(p.url + "/v1/chat/completions", json={"model": "a"}) as r:
            assert r.status == 200
        chat = {"model": "a", "stream": True, "stream_options": {"include_usage": True}}
        async with s.post(p.url + "/v1/chat/completions", json=chat) as r:
            assert b"[DONE]" in await r.read()
        async with s.post(p.url + "/upstream/a/v1/completions", json={"prompt": "x"}) as r:
            assert r.status == 200
        async with s.get(p.url + "/v1/audio/voices?model=a") as r:  # GETs are not recorded
            assert r.status == 200
        async with s.post(p.url + "/v1/chat/completions", json={"model": "nope"}) as r:
            assert r.status == 404

        frames = await next_events(
            events, buf, lambda f: sum(x["type"] == "metrics" for x in f) >= 4)
        published = [e for f in frames if f["type"] == "metrics" for e in f["data"]]
        entries = await metrics(s, p.url)

    assert [e["id"] for e in published] == [1, 2, 3, 4]  # a fresh history starts at 1
    assert entries == published[1:]  # metricsMaxInMemory: 3
    plain, streamed, upstream, unknown = published
    assert (plain["model"], plain["req_path"], plain["resp_status_code"]) == (
        "a", "/v1/chat/completions", 200)
    assert plain["resp_content_type"].startswith("application/json")
    assert plain["tokens"]["input_tokens"] == 1 and plain["tokens"]["output_tokens"] == 5
    assert plain["tokens"]["tokens_per_second"] == UNKNOWN
    assert plain["has_capture"] is True and "error_msg" not in plain  # captureBuffer: 5 MB default
    assert plain["duration_ms"] >= 0
    assert streamed["resp_content_type"].startswith("text/event-stream")
    assert (streamed["tokens"]["input_tokens"], streamed["tokens"]["output_tokens"]) == (1, 5)
    assert (upstream["model"], upstream["req_path"]) == ("a", "/v1/completions")
    assert upstream["tokens"]["output_tokens"] == 5
    assert (unknown["model"], unknown["resp_status_code"]) == ("nope", 404)
    assert "nope" in unknown["error_msg"]
    assert set(unknown["tokens"].values()) == {UNKNOWN}


async def test_a_stream_reaches_the_client_before_it_is_recorded(proxy: Any, record_file: Path) -> None:
    """The meter sees chunks as they pass: the first token is at the client while the
    upstream is still producing (the entry only appears once the stream ends)."""
    p = proxy(surface_plan([fake_model("a", record_file, "--tokens", "40", "--token-delay", "0.1")]))
    async with aiohttp.ClientSession() as s:
        chat = {"model": "a", "stream": True, "stream_options": {"include_usage": True}}
        async with s.post(p.url + "/v1/chat/completions", json=chat) as r:
            first = await r.content.readuntil(b"\n\n")
            assert first.startswith(b"data: ")
            assert await metrics(s, p.url) == []
            rest = await r.read()
        assert b"[DONE]" in rest
        (entry,) = await metrics(s, p.url)
        assert entry["tokens"]["output_tokens"] == 40
        assert json.loads(first[6:])["choices"]
