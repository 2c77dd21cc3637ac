"""ComfyUI, `compat.ignoreWebsockets` and audio.cpp's task API through the real proxy, with
a small real upstream that speaks HTTP (echoing the path it got) and websockets.

- `/comfyui` redirects to `/comfyui/` (301 GET, 308 otherwise), query kept; without a local
  `comfyui_auto` every `/comfyui/...` is a 404;
- only `/comfyui/` starts the model; any other path (a websocket too) before it is ready is
  a 409 and starts nothing; once ready, paths and queries reach the server as encoded and
  websockets are bridged both ways;
- an ignored websocket does not keep its model: the serial scheduler swaps the model out for
  another model's request while the socket is open (the socket then ends); a model without
  the flag is started by a websocket like by any request;
- `POST /audioapi/v1/tasks/run` reaches the model's server as `/v1/tasks/run`, on both doors.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from llama_swap.compiler.plan import Model
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.procs import free_port
from tests.e2e.surface_fixtures import fetch

# A ComfyUI stand-in: /health, a websocket at /ws (echo), any other path echoed as JSON.
SERVER = """
import json, sys
from aiohttp import web, WSMsgType

async def health(request):
    return web.Response(text="OK")

async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str("echo:" + msg.data)
    return sock

async def echo(request):
    body = await request.read()
    return web.json_response({"raw_path": request.raw_path, "method": request.method,
                              "bytes": len(body)})

app = web.Application()
app.router.add_get("/health", health)
app.router.add_get("/ws", ws)
app.router.add_route("*", "/{tail:.*}", echo)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""
DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])


def comfy(mid: str = "comfyui_auto", *, ignore: bool = True) -> Model:
    """The stand-in as a model; the compiler marks `comfyui_auto` so (and limits it to 50+)."""
    port = free_port()
    return Model(id=mid, cmd=(sys.executable, "-c", SERVER, str(port)), cmdStop=None,
                 proxy=f"http://127.0.0.1:{port}", checkEndpoint="/health", ttl=0,
                 concurrencyLimit=50, ignoreWebsockets=ignore)


async def state_of(s: aiohttp.ClientSession, url: str, model: str) -> str:
    async with s.get(url + "/running") as resp:
        running = (await resp.json())["running"]
    return next((r["state"] for r in running if r["model"] == model), "stopped")


async def test_redirects_and_no_local_model(proxy: Any, record_file: Path) -> None:
    p = proxy(make_plan([fake_model("m", record_file)]))
    async with aiohttp.ClientSession() as s:
        status, headers, _ = await fetch(s, "GET", p.url + "/comfyui?a=1")
        assert (status, headers["Location"]) == (301, "/comfyui/?a=1")
        status, headers, _ = await fetch(s, "POST", p.url + "/comfyui")
        assert (status, headers["Location"]) == (308, "/comfyui/")
        for path in ("/comfyui/", "/comfyui/api/queue"):
            status, _, raw = await fetch(s, "GET", p.url + path)
            assert (status, json.loads(raw)["error"]["message"]) == (404, "local model comfyui_auto not found")


async def test_only_the_root_starts_comfyui_then_everything_passes(proxy: Any, record_file: Path) -> None:
    p = proxy(make_plan([comfy()]))
    async with aiohttp.ClientSession() as s:
        status, _, raw = await fetch(s, "GET", p.url + "/comfyui/api/queue")
        assert status == 409
        assert json.loads(raw)["error"]["message"] == (
            "model comfyui_auto is not loaded; only /comfyui/ can start it")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(p.url + "/comfyui/ws")
        assert refused.value.status == 409
        assert await state_of(s, p.url, "comfyui_auto") == "stopped"  # nothing started

        status, _, raw = await fetch(s, "GET", p.url + "/comfyui/")
        assert status == 200 and json.loads(raw)["raw_path"] == "/"
        url = URL(p.url + "/comfyui/view/a%2Fb%20c.png?type=output&x=%2F", encoded=True)
        status, _, raw = await fetch(s, "POST", url, data=b"12345")
        assert status == 200
        assert json.loads(raw) == {"raw_path": "/view/a%2Fb%20c.png?type=output&x=%2F",
                                   "method": "POST", "bytes": 5}
        async with s.ws_connect(p.url + "/comfyui/ws?clientId=1") as sock:
            await sock.send_str("hi")
            assert (await sock.receive()).data == "echo:hi"


async def test_an_ignored_websocket_does_not_keep_its_model(proxy: Any, record_file: Path) -> None:
    p = proxy(make_plan([comfy(), fake_model("other", record_file)]))  # serial: one at a time
    async with aiohttp.ClientSession() as s:
        assert (await fetch(s, "GET", p.url + "/comfyui/"))[0] == 200
        async with s.ws_connect(p.url + "/comfyui/ws") as sock:
            await sock.send_str("hi")
            assert (await sock.receive()).data == "echo:hi"
            status, _, _ = await fetch(s, "POST", p.url + "/v1/chat/completions",
                                       json={"model": "other", "messages": []})
            assert status == 200  # served while the socket is open: comfyui was swapped out
            assert await state_of(s, p.url, "comfyui_auto") == "stopped"
            closed = await sock.receive()
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                   aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR)


async def test_upstream_websockets_of_an_ignoring_model_never_start_it(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([comfy("quiet"), comfy("plain", ignore=False)], scheduler="fifo"))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(p.url + "/upstream/quiet/ws")
        assert refused.value.status == 409
        assert await state_of(s, p.url, "quiet") == "stopped"
        async with s.ws_connect(p.url + "/upstream/plain/ws") as sock:  # starts its model
            await sock.send_str("x")
            assert (await sock.receive()).data == "echo:x"
        assert (await fetch(s, "GET", p.url + "/upstream/quiet/health"))[0] == 200  # loads it
        async with s.ws_connect(p.url + "/upstream/quiet/ws") as sock:  # ready: served
            await sock.send_str("y")
            assert (await sock.receive()).data == "echo:y"


@DOORS
async def test_audio_api_tasks_reach_the_server_without_the_prefix(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    model = dataclasses.replace(fake_model("tts", record_file))
    p = proxy(make_plan([model]), *door)
    async with aiohttp.ClientSession() as s:
        status, _, raw = await fetch(s, "POST", p.url + "/audioapi/v1/tasks/run",
                                     json={"model": "tts", "task": "speak"})
        assert status == 200
        fake = json.loads(raw)["fake"]
        assert (fake["path"], fake["body"]) == ("/v1/tasks/run", {"model": "tts", "task": "speak"})
