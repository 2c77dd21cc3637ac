"""Helpers for the HTTP-surface end-to-end tests (tests/e2e/test_surface_*.py).

Builds on tests/e2e/conftest.py (the `proxy` fixture, `fake_model`, `make_plan`):
plans with surface settings (apiKeys, peers, preload, includeAliasesInList...),
a stand-alone fake upstream process to act as a peer, and small HTTP helpers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest

from compiler.plan import Model, Peer, Plan
from tests.e2e.conftest import FAKE, free_port, make_plan


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
        import urllib.request

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
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    async with session.request(method, url, allow_redirects=False, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def as_json(raw: bytes) -> Any:
    return json.loads(raw)


def env_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
