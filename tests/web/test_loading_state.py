"""sendLoadingState: progress as reasoning_content deltas, then the real stream in the same response."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable

import pytest
from aiohttp import web

from llama_swap.runtime.core.admission import wants_loading_state
from llama_swap.runtime.core.errors import RouteFailure, start_failed
from llama_swap.runtime.http.aio.forward import start_sse
from llama_swap.runtime.http.render.loading_state import (
    LoadingState,
)

FAST = {"tick": 0.01, "chars_per_second": 0, "first_remark": (100, 100), "rng": random.Random(1)}


def deltas(raw: bytes) -> tuple[str, list[bytes]]:
    """The concatenated reasoning text, and the other frames."""
    text, others = "", []
    for frame in raw.split(b"\n\n"):
        if not frame:
            continue
        data = frame.removeprefix(b"data: ")
        try:
            doc = json.loads(data)
            text += doc["choices"][0]["delta"]["reasoning_content"]
        except (ValueError, KeyError, TypeError):
            others.append(frame)
    return text, others


@pytest.mark.parametrize(
    ("path", "streaming", "enabled", "ready", "expected"),
    [
        ("/v1/chat/completions", True, True, False, True),
        ("/v1/chat/completions", False, True, False, False),
        ("/v1/chat/completions", True, False, False, False),
        ("/v1/chat/completions", True, True, True, False),
        ("/chat/completions", True, True, False, False),
        ("/v1/completions", True, True, False, False),
    ],
)
def test_conditions(path: str, streaming: bool, enabled: bool, ready: bool, expected: bool) -> None:
    assert wants_loading_state(path, streaming, enabled, ready) is expected


async def serve_loading(serve, acquire_factory: Callable[[], Callable], **kw):
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = await start_sse(request)
        loader = LoadingState(resp, "llama", **{**FAST, **kw})
        try:
            grant = await loader.run(acquire_factory())
        except RouteFailure:
            return resp
        await resp.write(b"data: " + json.dumps({"grant": grant}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return await serve(app)


async def test_progress_positions_done_then_upstream(serve) -> None:
    def factory():
        async def acquire(on_position):
            for pos in (3, 2, 1):
                on_position(pos)
                await asyncio.sleep(0.05)
            return "lease-1"

        return acquire

    client = await serve_loading(serve, factory)
    r = await client.post("/v1/chat/completions")
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
    text, others = deltas(await r.read())
    assert text.startswith("━━━━━\nllama-swap loading model: llama\n")
    assert "Queue position: #3" in text and "Queue position: #1" in text
    assert "Done! (" in text and text.rstrip().endswith("━━━━━")
    assert others == [b'data: {"grant": "lease-1"}', b"data: [DONE]"]


async def test_remarks_and_pacing_are_injectable(serve) -> None:
    def factory():
        async def acquire(on_position):
            await asyncio.sleep(0.1)
            return "ok"

        return acquire

    client = await serve_loading(serve, factory, first_remark=(0, 0), next_remark=(0.01, 0.01),
                                 remarks=("Hold on.",), chars_per_second=5000)
    text, _ = deltas(await (await client.post("/v1/chat/completions")).read())
    assert "Hold on." in text


async def test_grant_error_is_appended_and_status_stays_200(serve) -> None:
    def factory():
        async def acquire(on_position):
            await asyncio.sleep(0.03)
            raise RouteFailure(start_failed("llama", "exit status 1"))

        return acquire

    client = await serve_loading(serve, factory)
    r = await client.post("/v1/chat/completions")
    assert r.status == 200
    text, others = deltas(await r.read())
    assert "Done! (" in text
    assert [json.loads(o.removeprefix(b"data: ")) for o in others] == [
        {"src": "llama-swap", "error": {"message": "[llama] start failed: exit status 1", "type": "server_error", "param": None, "code": "bad_gateway"}}
    ]


async def test_client_disconnect_cancels_the_wait(serve) -> None:
    cancelled = asyncio.Event()

    def factory():
        async def acquire(on_position):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        return acquire

    client = await serve_loading(serve, factory)
    r = await client.post("/v1/chat/completions")
    await r.content.readany()
    r.close()
    await asyncio.wait_for(cancelled.wait(), 5)
