"""What a profile pin or a selector leaves in the activity log and sends upstream, through
the real proxy with fake upstreams, on both front doors.

- An entry's `model` is always the concrete model that served the request; a request
  routed through a selector also gets `metadata.selector` naming it (beside the fifo
  scheduler's note), whether the client named the selector or a pin that targets it.  A
  pin alone leaves no note (the Go original's
  TestServer_SelectorMiddleware_RewritesBeforeFiltersAndRecordsActivity and _ProfileRunsFirst).
- A GET naming its model in `?model=` (llama-server's `/props`) reaches the upstream
  with the concrete name there, the rest of the query kept, keys in sorted order (the
  Go original re-encodes the query when it rewrites the model); a `peer/model` name
  reaches the peer as the peer's own id, as bodies do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from yarl import URL

from llama_swap.compiler.plan import Peer, Selector
from tests.e2e import surface_fixtures
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_profiles_selectors import (
    DOORS,
    fast_path_served,
    served_by,
    set_profile,
    the_plan,
)


async def activity(s: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    """The stored history, oldest first, as (model, metadata) pairs."""
    async with s.get(f"{url}/api/metrics/activity?sort=id&order=asc") as resp:
        assert resp.status == 200
        return [{"model": e["model"], "metadata": e.get("metadata")}
                for e in (await resp.json())["data"]]


@DOORS
async def test_the_selector_a_request_went_through_is_in_its_activity_entry(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(the_plan(record_file), *door)
    # a connection per request: one the fast path handed to aiohttp stays there
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        assert await served_by(s, p.url, "b") == ("b", "b")  # the model itself
        assert await served_by(s, p.url, "pinned") == ("b", "b")  # a selector
        assert (await set_profile(s, p.url, "coding"))[0] == 200
        assert await served_by(s, p.url, "llm") == ("b", "b")  # a pin to a model
        assert await served_by(s, p.url, "sel") == ("b", "b")  # a pin to a selector
        entries = await activity(s, p.url)
        fast = await fast_path_served(s, p.url)
    priority = {"fifo_priority": "0"}
    assert entries == [
        {"model": "b", "metadata": priority},
        {"model": "b", "metadata": {**priority, "selector": "pinned"}},
        {"model": "b", "metadata": priority},
        {"model": "b", "metadata": {**priority, "selector": "pinned"}},
    ]
    assert fast == (4 if door == () else 0)  # with the fast path on, it served them all


async def upstream_query(s: aiohttp.ClientSession, url: str, query: str) -> tuple[str, str]:
    """GET /props?<query>: (the fake that answered, the query string it received, still
    percent-encoded)."""
    async with s.get(URL(f"{url}/props?{query}", encoded=True)) as resp:
        assert resp.status == 200, await resp.text()
        fake = (await resp.json())["fake"]
    return fake["model"], fake["raw_path"].partition("?")[2]


@DOORS
async def test_a_get_names_the_concrete_model_upstream_for_pins_and_selectors(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(the_plan(record_file), *door)
    async with aiohttp.ClientSession() as s:
        # a model named directly: the query goes out exactly as sent
        assert await upstream_query(s, p.url, "z=1&model=a&a=2") == ("a", "z=1&model=a&a=2")
        # a selector: the target's name, the other fields kept, keys sorted
        model, query = await upstream_query(s, p.url, "z=1&model=pinned&a=x+y&a=%2F")
        assert model == "b"
        assert query == "a=x+y&a=%2F&model=b&z=1"
        assert await set_profile(s, p.url, "coding") == (200, {"active": "coding"})
        model, query = await upstream_query(s, p.url, "model=llm")  # a pin
        assert (model, query) == ("b", "model=b")
        model, query = await upstream_query(s, p.url, "model=sel&model=other")  # pin, selector
        assert (model, parse_qsl(query)) == ("b", [("model", "b")])
        async with s.get(f"{p.url}/props?model=gone") as resp:  # a disabled pin
            assert resp.status == 404


peer_server = surface_fixtures.peer_server


async def test_a_get_reaches_a_peer_under_the_peers_own_model_id(
    proxy: Any, record_file: Path, peer_server: Any
) -> None:
    # `p1/shared` is the peer's `shared`, by name or through a selector; GETs are never
    # the fast path's
    p1 = peer_server("p1-fake")
    plan = make_plan([fake_model("local", record_file)])
    peers = {"p1": Peer("p1", p1, models=("shared", "only-p1"))}
    sel = {"remote": Selector("remote", "pin", ("p1/shared",), ("p1/shared",))}
    plan = dataclasses.replace(plan, peers=MappingProxyType(peers), selectors=MappingProxyType(sel))
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        assert await upstream_query(s, p.url, "model=p1/shared&x=1") == ("p1-fake", "model=shared&x=1")
        assert await upstream_query(s, p.url, "x=1&model=remote") == ("p1-fake", "model=shared&x=1")
        # a bare name one peer offers is the peer's id already: sent as is
        assert await upstream_query(s, p.url, "x=1&model=only-p1") == ("p1-fake", "x=1&model=only-p1")
