"""Profiles and selectors through the real proxy, with fake upstreams, on both front doors.

Each test runs once with the fast path in front and once with `--no-fast-path` (plain
JSON chat requests take the fast path when it is on; `/metrics` shows it served them).
What reaches the upstream is read from the fake's echo (`fake.model` is the server,
`fake.body.model` the name it was asked for).

Ports the behaviour of the Go original's TestServer_ProfileAPI,
_ProfileMiddleware_JSONAndFilters, _Profile_UpstreamPreservesBody,
_ProfileMiddleware_RewriteUpstreamPath, _Profile_ModelListings,
_Profile_ConcurrentSelectionAndListing, TestServer_SelectorStrategyPin, _Warm,
_Spillover, _SelectorMiddleware_RewritesBeforeFiltersAndRecordsActivity,
_ProfileRunsFirst, _SpilloverReservations and _UpstreamUnsupported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest

from llama_swap.compiler.plan import Filters, Group, Peer, Plan, Profile, Selector
from tests.e2e import surface_fixtures
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_serial import post_chat

DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])


def selector(sid: str, strategy: str, *targets: str, spillover: int = 1) -> Selector:
    return Selector(sid, strategy, targets, targets, spillover=spillover)


def the_plan(record: Path) -> Plan:
    a = fake_model("a", record, "--response-delay", "0.05")
    b = dataclasses.replace(
        fake_model("b", record, "--response-delay", "0.05"),
        filters=Filters(setParams=MappingProxyType({"seen_by_b": True})),
    )
    c = fake_model("c", record)
    plan = make_plan(
        [a, b, c],
        scheduler="fifo",
        groups={"pool": Group("pool", ("a", "b", "c"), swap=False, exclusive=False)},
    )
    selectors = {
        "pinned": selector("pinned", "pin", "b", "a"),
        "warm": selector("warm", "warm", "a", "b"),
        "spill": selector("spill", "spillover", "a", "b"),
    }
    profiles = {
        "coding": Profile(
            "coding", "Coding", MappingProxyType({"llm": "b", "gone": "", "sel": "pinned"})
        ),
        "chat": Profile("chat", "", MappingProxyType({"llm": "c"})),
    }
    return dataclasses.replace(
        plan, selectors=MappingProxyType(selectors), profiles=MappingProxyType(profiles)
    )


async def served_by(
    s: aiohttp.ClientSession, url: str, model: str, **extra: Any
) -> tuple[str, str]:
    """(the fake that answered, the model name it was asked for)."""
    status, body = await post_chat(s, url, model, **extra)
    assert status == 200, body
    return body["fake"]["model"], body["fake"]["body"]["model"]


async def set_profile(s: aiohttp.ClientSession, url: str, name: Any) -> tuple[int, Any]:
    async with s.put(f"{url}/api/profiles/active", json={"name": name}) as resp:
        return resp.status, await resp.json(content_type=None)


async def fast_path_served(s: aiohttp.ClientSession, url: str) -> int:
    async with s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("llamaswap_fast_path_requests_total"):
            return int(float(line.split()[-1]))
    return 0


@DOORS
async def test_each_selector_strategy_picks_its_target(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(the_plan(record_file), *door)
    async with aiohttp.ClientSession() as s:
        # pin: always the first target; the request reaches it under the target's name,
        # and the target's filters apply (they run after the rewrite)
        status, body = await post_chat(s, p.url, "pinned")
        assert status == 200 and body["fake"]["model"] == "b"
        assert body["fake"]["body"]["model"] == "b" and body["fake"]["body"]["seen_by_b"] is True
        # warm: b is loaded now, a is not: the first loaded target wins
        assert await served_by(s, p.url, "warm") == ("b", "b")
        # spillover 1: two requests at once go to two targets
        both = await asyncio.gather(
            served_by(s, p.url, "spill", fake_delay=0.5),
            served_by(s, p.url, "spill", fake_delay=0.5),
        )
        assert sorted(m for m, _ in both) == ["a", "b"]
        # with a loaded too, warm keeps its order
        assert await served_by(s, p.url, "warm") == ("a", "a")
        fast = await fast_path_served(s, p.url)
    assert (fast > 0) == (door == ())


@DOORS
async def test_spillover_counts_only_running_requests(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(the_plan(record_file), *door)
    async with aiohttp.ClientSession() as s:
        # one after another, each request has finished before the next: never a spill
        seen = [await served_by(s, p.url, "spill") for _ in range(3)]
        assert seen == [("a", "a")] * 3


@DOORS
async def test_profiles_are_listed_switched_and_shown(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(the_plan(record_file), *door)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{p.url}/api/profiles") as resp:
            assert await resp.json() == {
                "active": None,
                "profiles": [
                    {"id": "chat", "description": "", "pins": {"llm": "c"}},
                    {
                        "id": "coding",
                        "description": "Coding",
                        "pins": {"gone": "", "llm": "b", "sel": "pinned"},
                    },
                ],
            }
        assert (await post_chat(s, p.url, "llm"))[0] == 404  # no profile: not a name
        assert await set_profile(s, p.url, "coding") == (200, {"active": "coding"})
        assert await served_by(s, p.url, "llm") == ("b", "b")
        assert await served_by(s, p.url, "sel") == ("b", "b")  # pin -> selector -> b
        status, body = await post_chat(s, p.url, "gone")
        assert status == 404 and "no model id could be identified" in json.dumps(body)
        async with s.get(f"{p.url}/v1/models") as resp:
            ids = {r["id"]: r for r in (await resp.json())["data"]}
        assert ids["llm"]["meta"] == {"llamaswap": {"type": "profile"}}
        assert "gone" not in ids and ids["pinned"]["meta"]["llamaswap"]["type"] == "selector"
        async with s.get(f"{p.url}/running") as resp:
            assert (await resp.json())["profile"] == "coding"
        # the pin also works on /upstream: the path names the pin, the target answers
        async with s.get(f"{p.url}/upstream/llm/v1/models") as resp:
            assert resp.status == 200 and (await resp.json())["data"][0]["id"] == "b"
        async with s.get(f"{p.url}/upstream/gone/v1/models") as resp:
            assert resp.status == 404
        async with s.get(f"{p.url}/upstream/pinned/v1/models") as resp:
            assert resp.status == 404  # no selectors on /upstream
        assert await set_profile(s, p.url, "missing") == (404, unknown_profile_error())
        assert (await set_profile(s, p.url, 7))[0] == 400
        assert await set_profile(s, p.url, None) == (200, {"active": None})
        assert (await post_chat(s, p.url, "llm"))[0] == 404


def unknown_profile_error() -> Any:
    """The 404 body of an unknown profile: the OpenAI-style error object."""
    return {
        "src": "llama-swap",
        "error": {
            "message": 'profile "missing" not found',
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        },
    }


@DOORS
async def test_switching_the_profile_while_requests_run(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    # A request already rewritten finishes on its target; later ones follow the new pins.
    plan = the_plan(record_file)
    p = proxy(plan, *door)
    async with aiohttp.ClientSession() as s:
        assert (await set_profile(s, p.url, "coding"))[0] == 200
        assert await served_by(s, p.url, "llm") == ("b", "b")  # b loaded
        slow = asyncio.ensure_future(served_by(s, p.url, "llm", fake_delay=1.0))
        while await _running_on(s, plan.models["b"].proxy) == 0:  # b is serving it
            await asyncio.sleep(0.02)
        assert (await set_profile(s, p.url, "chat"))[0] == 200
        assert await served_by(s, p.url, "llm") == ("c", "c")
        assert await slow == ("b", "b")
        assert await set_profile(s, p.url, "coding") == (200, {"active": "coding"})
        results = await asyncio.gather(*(served_by(s, p.url, "llm") for _ in range(4)))
        assert results == [("b", "b")] * 4


async def _running_on(s: aiohttp.ClientSession, upstream: str) -> int:
    async with s.get(f"{upstream}/fake/stats") as resp:
        return int((await resp.json())["current"])


async def test_profile_changes_reach_the_event_stream(proxy: Any, record_file: Path) -> None:
    p = proxy(the_plan(record_file))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{p.url}/api/events") as events:
            first = await _next_of(events, "profileChanged")
            assert first == {"active": None}
            assert (await set_profile(s, p.url, "chat"))[0] == 200
            assert await _next_of(events, "profileChanged") == {"active": "chat"}


async def _next_of(events: aiohttp.ClientResponse, kind: str) -> Any:
    async with asyncio.timeout(10):
        while True:
            line = (await events.content.readline()).decode()
            if line.startswith("data:"):
                frame = json.loads(line[5:])
                if frame["type"] == kind:
                    return json.loads(frame["data"])


peer_server = surface_fixtures.peer_server


@DOORS
async def test_peer_models_by_full_name_and_a_spillover_selector_over_peers(
    proxy: Any, record_file: Path, peer_server: Any, door: tuple[str, ...]
) -> None:
    # Two peers offer `shared`, a local model is called `shared` too: the bare name is the
    # local model's, `p1/shared` and `p2/shared` reach the peers, under the peers' own id.
    p1, p2 = peer_server("p1-fake"), peer_server("p2-fake")
    plan = make_plan([fake_model("shared", record_file)], scheduler="fifo")
    peers = {
        "p1": Peer("p1", p1, models=("shared", "only-p1")),
        "p2": Peer("p2", p2, models=("shared",)),
    }
    sel = {"both": selector("both", "spillover", "p1/shared", "p2/shared")}
    plan = dataclasses.replace(plan, peers=MappingProxyType(peers), selectors=MappingProxyType(sel))
    p = proxy(plan, *door)
    async with aiohttp.ClientSession() as s:
        assert await served_by(s, p.url, "shared") == ("shared", "shared")
        assert await served_by(s, p.url, "p1/shared") == ("p1-fake", "shared")
        assert await served_by(s, p.url, "p2/shared") == ("p2-fake", "shared")
        assert await served_by(s, p.url, "only-p1") == ("p1-fake", "only-p1")
        both = await asyncio.gather(
            served_by(s, p.url, "both", fake_delay=0.5), served_by(s, p.url, "both", fake_delay=0.5)
        )
        assert sorted(both) == [("p1-fake", "shared"), ("p2-fake", "shared")]
        async with s.get(f"{p.url}/upstream/p2/shared/v1/models") as resp:
            assert resp.status == 200 and (await resp.json())["data"][0]["id"] == "p2-fake"


async def test_a_pin_rewrites_the_model_field_of_a_multipart_upload(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(the_plan(record_file))
    async with aiohttp.ClientSession() as s:
        assert (await set_profile(s, p.url, "coding"))[0] == 200
        form = aiohttp.FormData()
        form.add_field("model", "llm")
        form.add_field("file", b"RIFF....WAVE", filename="a.wav", content_type="audio/wav")
        async with s.post(f"{p.url}/v1/audio/transcriptions", data=form) as resp:
            assert resp.status == 200
            fake = (await resp.json())["fake"]
    assert fake["model"] == "b"
    parts = {part["name"]: part for part in fake["parts"]}
    assert parts["model"]["value"] == "b"
    assert parts["file"]["bytes"] == len(b"RIFF....WAVE")
