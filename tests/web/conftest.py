"""Fixtures for the HTTP-surface building blocks: tiny plans and real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from llama_swap.compiler.plan import Filters, Model, Peer, Plan, Settings, freeze
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.http.aio.stack import default_middlewares


def model(mid: str, **kw: Any) -> Model:
    base: dict[str, Any] = {
        "id": mid,
        "cmd": ("true",),
        "cmdStop": None,
        "proxy": "http://127.0.0.1:1",
        "checkEndpoint": "/health",
        "ttl": 0,
    }
    base.update(kw)
    return Model(**base)


def filters(strip: tuple[str, ...] = (), set_: Mapping[str, Any] | None = None,
            by_id: Mapping[str, Any] | None = None) -> Filters:
    return Filters(stripParams=strip, setParams=freeze(dict(set_ or {})),
                   setParamsByID=freeze(dict(by_id or {})))


def make_plan(*models: Model, peers: tuple[Peer, ...] = (), **settings: Any) -> Plan:
    aliases = {a: m.id for m in models for a in m.aliases}
    return Plan(
        settings=Settings(**settings),
        models=MappingProxyType({m.id: m for m in sorted(models, key=lambda m: m.id)}),
        aliases=MappingProxyType(dict(sorted(aliases.items()))),
        peers=MappingProxyType({p.id: p for p in sorted(peers, key=lambda p: p.id)}),
    )


class StackOnly:
    """What the middleware stack reads: a plan and the proxy log."""

    def __init__(self, plan: Plan, proxy_log: LogBuffer) -> None:
        self.plan = plan
        self.proxy_log = proxy_log


def real_stack(plan: Plan | None = None, proxy_log: LogBuffer | None = None) -> list[Any]:
    """The middleware stack every server runs, over `plan` (default: no settings)."""
    log = proxy_log if proxy_log is not None else LogBuffer("proxy")
    return default_middlewares(StackOnly(plan if plan is not None else make_plan(), log))


Serve = Callable[[web.Application], Awaitable[TestClient]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an app on a real 127.0.0.1 port; every client is closed afterwards."""
    clients: list[TestClient] = []

    async def start(app: web.Application) -> TestClient:
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for c in clients:
        await c.close()
