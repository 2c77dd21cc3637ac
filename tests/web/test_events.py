"""/api/events SSE and the log endpoints, consumed by a real client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from llama_swap.compiler.plan import Capabilities, Peer
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.http.aio.live import (
    close_on_shutdown,
    make_events_handler,
    make_log_stream_handler,
    make_logs_handler,
)
from llama_swap.runtime.http.observe.events import EventHub, StreamCloser, model_status
from llama_swap.runtime.http.observe.inflight import InflightTracker

from .conftest import make_plan, model


async def read_frames(resp, n: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    buf = b""
    while len(frames) < n:
        chunk = await asyncio.wait_for(resp.content.readany(), 5)
        assert chunk, "stream ended early"
        buf += chunk
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            event, data = frame.split(b"\n")
            assert event == b"event:message"
            msg = json.loads(data.removeprefix(b"data:"))
            frames.append({"type": msg["type"], "data": json.loads(msg["data"]) if msg["data"][:1] in "[{" else msg["data"]})
    return frames


def test_model_status_payload() -> None:
    plan = make_plan(model("b", aliases=("bb",), capabilities=Capabilities(tools=True, context=2048)),
                     model("a", unlisted=True), peers=(Peer(id="p", proxy="http://x", models=("r",)),))
    status = model_status(plan, {"b": ProcessState.READY})
    assert status == [  # context_length only where configured
        {"id": "a", "name": "", "description": "", "state": "stopped", "unlisted": True, "peerID": ""},
        {"id": "b", "name": "", "description": "", "state": "ready", "unlisted": False, "peerID": "",
         "aliases": ["bb"], "capabilities": ["function_calling"], "context_length": 2048},
        {"id": "p/r", "name": "", "description": "", "state": "", "unlisted": False, "peerID": "p"},
    ]


async def test_events_burst_then_live_then_closed(serve) -> None:
    hub = EventHub()
    closer = StreamCloser()
    tracker = InflightTracker(hub)
    plan = make_plan(model("m"))
    burst = lambda: [  # noqa: E731
        ("logData", {"source": "proxy", "data": "hello\n"}),
        ("modelStatus", model_status(plan, {})),
        ("metrics", []),
        ("inflight", tracker.snapshot()),
    ]
    app = web.Application()
    app.router.add_get("/api/events", make_events_handler(hub, burst, closer))
    app.on_shutdown.append(close_on_shutdown(closer))
    client = await serve(app)
    resp = await client.get("/api/events")
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["X-Accel-Buffering"] == "no"
    first = await read_frames(resp, 4)
    assert [f["type"] for f in first] == ["logData", "modelStatus", "metrics", "inflight"]
    assert first[1]["data"][0]["state"] == "stopped"
    assert first[3]["data"] == {"operation": "snapshot"}  # nothing in flight: no `requests`
    entry = tracker.add(model="m", req_path="/v1/chat/completions", method="POST",
                        headers={"User-Agent": "t"}, peer="127.0.0.1", cancel=lambda: None)
    hub.publish("modelStatus", model_status(plan, {"m": ProcessState.STARTING}))
    tracker.remove(entry)
    live = await read_frames(resp, 3)
    assert [f["type"] for f in live] == ["inflight", "modelStatus", "inflight"]
    assert live[0]["data"]["operation"] == "upsert" and live[0]["data"]["request"]["id"] == "1"
    assert live[2]["data"] == {"operation": "remove", "id": "1"}
    assert live[1]["data"][0]["state"] == "starting"
    closer.close_all()
    assert await asyncio.wait_for(resp.content.read(), 5) == b""


async def test_hub_drops_when_a_subscriber_is_full() -> None:
    hub = EventHub(buffer=2)
    with hub.subscribe() as queue:
        for i in range(5):
            hub.publish("x", {"i": i})
        assert queue.qsize() == 2 and hub.dropped == 3


async def test_logs_history_and_stream(serve) -> None:
    mux, proxy, upstream, own = LogBuffer("mux"), LogBuffer("proxy"), LogBuffer("upstream"), LogBuffer("m")
    mux.write("old mux\n")
    own.write("old model\n")
    logs = {"": mux, "proxy": proxy, "upstream": upstream, "m": own, "alias/with/slash": own}
    closer = StreamCloser()
    app = web.Application()
    app.router.add_get("/logs", make_logs_handler(lambda: mux))
    handler = make_log_stream_handler(logs.get, closer)
    app.router.add_get("/logs/stream", handler)
    app.router.add_get("/logs/stream/{id:.*}", handler)
    client = await serve(app)

    r = await client.get("/logs")
    assert await r.text() == "old mux\n" and r.headers["Content-Type"].startswith("text/plain")
    r = await client.get("/logs", headers={"Accept": "text/html"}, allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/ui/"
    assert (await client.get("/logs/stream/nope")).status == 400

    s1 = await client.get("/logs/stream/alias/with/slash")
    assert await asyncio.wait_for(s1.content.readany(), 5) == b"old model\n"
    s2 = await client.get("/logs/stream/m?no-history")
    s3 = await client.get("/logs/stream")
    assert await asyncio.wait_for(s3.content.readany(), 5) == b"old mux\n"
    await asyncio.sleep(0.05)
    own.write("live\n")
    mux.write("mux live\n")
    assert await asyncio.wait_for(s1.content.readany(), 5) == b"live\n"
    assert await asyncio.wait_for(s2.content.readany(), 5) == b"live\n"
    assert await asyncio.wait_for(s3.content.readany(), 5) == b"mux live\n"
    closer.close_all()
    for s in (s1, s2, s3):
        assert await asyncio.wait_for(s.content.read(), 5) == b""
