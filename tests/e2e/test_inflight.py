"""The in-flight list and cancelling from it, through the real proxy, on both front doors.

- `GET /api/inflight` and the `/api/events` `inflight` events list the requests being
  served: model, path, method, headers (secrets redacted), client address, the answer's
  headers and bytes so far;
- `POST /api/inflight/{id}/cancel` on a streaming answer cuts it off: the model server sees
  the disconnect, and the scheduler (serial: one request at a time) admits the request
  queued behind it at once -- it completes while the cancelled one would still be streaming
  for a minute;
- a request cancelled while it waits in the queue gets a 499 `request cancelled` in the
  OpenAI error shape; an unknown id is a 404 `inflight request not found`;
- `/upstream/<model>/<route>` is listed under the route's path when it is a
  model-dispatched one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import fake_model, make_plan

DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])
LONG = {"model": "long", "stream": True, "max_tokens": 600, "messages": []}  # 60 s of tokens


def start(proxy: Any, record_file: Path, door: tuple[str, ...], scheduler: str = "serial") -> Any:
    """`long` streams a token every 0.1 s; `quick` answers at once; serial scheduling.
    `long` ignores SIGTERM, so when it is swapped out it lives on for the stop's grace
    period: a request it saw end is in the record file, one it never saw end is not."""
    long = fake_model("long", record_file, "--token-delay", "0.1", "--ignore-sigterm")
    quick = fake_model("quick", record_file)
    return proxy(make_plan([long, quick], scheduler=scheduler), *door)


async def listing(s: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with s.get(url + "/api/inflight") as resp:
        assert resp.status == 200
        got: list[dict[str, Any]] = await resp.json()
        return got


async def until(
    s: aiohttp.ClientSession, url: str, ok: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Poll the list until `ok(list)` (the test's timeout bounds the wait)."""
    while not ok(entries := await listing(s, url)):
        await asyncio.sleep(0.02)
    return entries


async def read_stream(resp: aiohttp.ClientResponse) -> bytes:
    """Everything of a streamed answer until it ends, cleanly or cut off."""
    data = b""
    try:
        async for chunk in resp.content.iter_any():
            data += chunk
    except aiohttp.ClientPayloadError:
        pass
    return data


async def events_until(
    resp: aiohttp.ClientResponse, ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Read `/api/events` frames until an `inflight` one satisfies `ok`."""
    buf = b""
    while True:
        while b"\n\n" not in buf:
            buf += await resp.content.readany()
        frame, buf = buf.split(b"\n\n", 1)
        msg = json.loads(frame.split(b"data:", 1)[1])
        if msg["type"] == "inflight" and ok(data := json.loads(msg["data"])):
            return data


@DOORS
@pytest.mark.timeout(60)
async def test_cancelling_a_stream_frees_the_upstream_and_the_scheduler(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = start(proxy, record_file, door)
    headers = {"Authorization": "Bearer sk-secret", "X-Session-ID": "lspg-abc12", "User-Agent": "t/1"}
    async with aiohttp.ClientSession() as s, s.get(p.url + "/api/events") as events:
        async with s.post(p.url + "/v1/chat/completions", json=LONG, headers=headers) as streaming:
            assert streaming.status == 200
            first = await streaming.content.readany()
            assert first.startswith(b"data: ")
            queued = asyncio.ensure_future(s.post(
                p.url + "/v1/chat/completions", json={"model": "quick", "messages": []}))
            entries = await until(s, p.url, lambda es: len(es) == 2 and es[0]["resp_bytes"] > 0)
            running, waiting = entries
            assert (running["model"], running["req_path"], running["method"]) == (
                "long", "/v1/chat/completions", "POST")
            assert running["req_headers"]["Authorization"] == "[REDACTED]"
            assert running["req_headers"]["X-Session-Id"] == "lspg-abc12"
            assert running["req_headers"]["User-Agent"] == "t/1"
            assert running["remote_ip"] == "127.0.0.1"
            assert "text/event-stream" in running["resp_headers"]["Content-Type"]
            assert (waiting["model"], waiting["resp_headers"], waiting["resp_bytes"]) == ("quick", {}, 0)
            update = await events_until(events, lambda d: d["operation"] == "upsert"
                                        and d["request"]["id"] == running["id"]
                                        and d["request"]["resp_bytes"] > 0)
            assert update["request"]["model"] == "long"

            async with s.post(p.url + f"/api/inflight/{running['id']}/cancel") as cancel:
                assert (cancel.status, await cancel.json()) == (200, {"msg": "ok"})
            rest = await read_stream(streaming)
            assert b"[DONE]" not in rest  # cut off, not finished

        answer = await queued  # admitted as soon as the stream was cancelled
        assert answer.status == 200 and (await answer.json())["fake"]["model"] == "quick"
        answer.release()
        removed = await events_until(events, lambda d: d["operation"] == "remove")
        assert removed["id"] in (running["id"], waiting["id"])
    async with aiohttp.ClientSession() as s:
        assert await until(s, p.url, lambda es: es == []) == []
    # the model server saw the disconnect: its handler ended (recorded) long before the end
    # of the 60 s stream, and before the next model's request started
    (stream,) = [r for r in p.records() if r["model"] == "long"]
    (after,) = [r for r in p.records() if r["model"] == "quick"]
    assert stream["end"] - stream["start"] < 50 and stream["end"] <= after["start"]


@DOORS
@pytest.mark.timeout(60)
async def test_a_queued_request_cancelled_gets_a_499_and_unknown_ids_a_404(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = start(proxy, record_file, door)
    async with aiohttp.ClientSession() as s:
        async with s.post(p.url + "/v1/chat/completions", json=LONG) as streaming:
            await streaming.content.readany()
            queued = asyncio.ensure_future(s.post(
                p.url + "/v1/chat/completions", json={"model": "quick", "messages": []}))
            _, waiting = await until(s, p.url, lambda es: len(es) == 2)
            async with s.post(p.url + f"/api/inflight/{waiting['id']}/cancel") as cancel:
                assert cancel.status == 200
            answer = await queued
            assert answer.status == 499
            assert await answer.json() == {"src": "llama-swap", "error": {
                "message": "request cancelled", "type": "invalid_request_error", "param": None,
                "code": "request_cancelled"}}
            (still,) = await until(s, p.url, lambda es: len(es) == 1)
            assert still["model"] == "long"  # the other request goes on

            async with s.post(p.url + "/api/inflight/999/cancel") as missing:
                assert missing.status == 404
                assert (await missing.json())["error"]["message"] == "inflight request not found"
            async with s.post(p.url + f"/api/inflight/{still['id']}/cancel") as cancel:
                assert cancel.status == 200
            await read_stream(streaming)
        assert await until(s, p.url, lambda es: es == []) == []


@pytest.mark.timeout(60)
async def test_upstream_requests_to_a_model_route_are_listed_under_the_route(
    proxy: Any, record_file: Path
) -> None:
    p = start(proxy, record_file, (), scheduler="fifo")  # requests to one model side by side
    async with aiohttp.ClientSession() as s:
        url = p.url + "/upstream/long/v1/chat/completions"
        async with s.post(url, json=LONG) as streaming:
            await streaming.content.readany()
            (entry,) = await until(s, p.url, lambda es: len(es) == 1)
            assert (entry["model"], entry["req_path"]) == ("long", "/v1/chat/completions")
            async with s.get(p.url + "/upstream/long/health") as health:  # not a model route
                assert health.status == 200
                assert len(await listing(s, p.url)) == 1
            async with s.post(p.url + f"/api/inflight/{entry['id']}/cancel") as cancel:
                assert cancel.status == 200
            await read_stream(streaming)
        assert await until(s, p.url, lambda es: es == []) == []


async def test_the_ui_is_told_which_headers_are_a_session(proxy: Any, record_file: Path) -> None:
    plan = make_plan([fake_model("quick", record_file)])
    plan = dataclasses.replace(
        plan, settings=dataclasses.replace(plan.settings, uiSessionHeaders=("X-Conv",)))
    p = proxy(plan)
    async with aiohttp.ClientSession() as s, s.get(p.url + "/api/events") as events:
        buf = b""
        while b'"uiConfig"' not in buf:
            buf += await events.content.readany()
        frame = next(f for f in buf.split(b"\n\n") if b'"uiConfig"' in f)
        msg = json.loads(frame.split(b"data:", 1)[1])
        assert json.loads(msg["data"]) == {"activity": {"session_id": ["X-Conv"]}}
