"""Helpers for the HTTP-surface end-to-end tests (tests/e2e/test_surface_*.py).

Builds on tests/e2e/conftest.py (the `proxy` fixture, `fake_model`, `make_plan`):
plans with surface settings (apiKeys, peers, preload, includeAliasesInList...),
a stand-alone fake upstream process to act as a peer, and small HTTP helpers.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest

from llama_swap.compiler.plan import Model, Peer, Plan
from tests.e2e.conftest import FAKE, make_plan
from tests.e2e.procs import free_port, stop_process

# A model server with a websocket endpoint (the fake upstream has none): /health and /ws echo.
WS_SERVER = """
import sys
from aiohttp import web, WSMsgType

async def health(request):
    return web.Response(text="OK")

async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str("echo:" + msg.data + ":" + request.query_string)
        elif msg.type == WSMsgType.BINARY:
            await sock.send_bytes(msg.data[::-1])
    return sock

app = web.Application()
app.router.add_get("/health", health)
app.router.add_get("/ws", ws)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def ws_model(mid: str) -> Model:
    """A model whose server speaks websockets at /ws."""
    port = free_port()
    return Model(id=mid, cmd=(sys.executable, "-c", WS_SERVER, str(port)), cmdStop=None,
                 proxy=f"http://127.0.0.1:{port}", checkEndpoint="/health", ttl=0)


def surface_plan(
    models: list[Model],
    *,
    peers: tuple[Peer, ...] = (),
    preload: tuple[str, ...] = (),
    scheduler: str = "serial",
    **settings: Any,
) -> Plan:
    """`make_plan` plus top-level settings (apiKeys=..., includeAliasesInList=...), peers, preload."""
    plan = make_plan(models, scheduler=scheduler)
    aliases = dict(plan.aliases)
    for m in models:
        for key in m.filters.setParamsByID:
            if key != m.id:
                aliases.setdefault(key, m.id)
    return dataclasses.replace(
        plan,
        settings=dataclasses.replace(plan.settings, **settings),
        peers=MappingProxyType({p.id: p for p in sorted(peers, key=lambda p: p.id)}),
        aliases=MappingProxyType(dict(sorted(aliases.items()))),
        preload=preload,
    )


def with_model(model: Model, **changes: Any) -> Model:
    return dataclasses.replace(model, **changes)


@pytest.fixture
def peer_server(tmp_path: Path) -> Iterator[Any]:
    """Factory: start a stand-alone fake upstream (a peer); returns its base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(model: str = "peer-model") -> str:
        port = free_port()
        proc = subprocess.Popen(
            [FAKE, "--port", str(port), "--model", model],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)
        raise AssertionError("peer fake upstream did not start")

    yield start
    for proc in procs:
        stop_process(proc, grace=5)


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    async with session.request(method, url, allow_redirects=False, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.read()
