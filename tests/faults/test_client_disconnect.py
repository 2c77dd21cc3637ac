"""Clients that leave before their answer is complete: nothing keeps running for them.

Under the `serial` scheduler (one request at a time, exact arrival order) a client that
leaves while queued, while its model loads or in the middle of a streamed answer:

- is no longer counted in flight (`llamaswap_inflight_requests` goes back down);
- leaves nothing running on its behalf (the upstream stops producing its stream);
- does not hold up the queue: the next queued request is served at once, and a request
  abandoned while queued never makes its model load.

Each case runs with the fast path and with `--no-fast-path`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_serial import post_chat
from tests.faults.conftest import Site, inflight, running, until_async

PATHS = [pytest.param((), id="fast-path"), pytest.param(("--no-fast-path",), id="aiohttp-path")]


async def stats(s: aiohttp.ClientSession, upstream: str) -> dict[str, Any]:
    """The fake upstream's own counters (requests served, current concurrency)."""
    async with s.get(f"{upstream}/fake/stats") as resp:
        return dict(await resp.json())


async def inflight_is(s: aiohttp.ClientSession, url: str, n: int) -> bool:
    return await inflight(s, url) == n


async def abandon(task: asyncio.Task[Any]) -> None:
    """The client gives up: its request task is cancelled, its connection closed."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("extra", PATHS)
async def test_a_client_leaving_while_queued_frees_its_place_at_once(
    site: Site, extra: tuple[str, ...]
) -> None:
    a, b = fake_model("a", site.record), fake_model("b", site.record)
    p = site.proxy(make_plan([a, b]), *extra)
    async with aiohttp.ClientSession() as s, aiohttp.ClientSession() as leaver:
        assert (await post_chat(s, p.url, "a"))[0] == 200  # a is loaded
        first = asyncio.create_task(post_chat(s, p.url, "a", fake_delay=1.5))
        await until_async(lambda: _current_is(s, a.proxy, 1), "a serving the first request")
        queued_b = asyncio.create_task(post_chat(leaver, p.url, "b"))
        await until_async(lambda: inflight_is(s, p.url, 2), "the request for b to be queued")
        next_a = asyncio.create_task(post_chat(s, p.url, "a"))
        await until_async(lambda: inflight_is(s, p.url, 3), "the second request for a queued")

        await abandon(queued_b)
        await until_async(lambda: inflight_is(s, p.url, 2), "the abandoned request to leave")
        status, body = await first
        assert status == 200
        status, again = await asyncio.wait_for(next_a, 5)
        assert status == 200
        assert again["fake"]["pid"] == body["fake"]["pid"]  # a was never swapped out for b
        assert await inflight(s, p.url) == 0
        assert await running(s, p.url) == ["a"]
    assert {r["model"] for r in site_records(site)} == {"a"}


@pytest.mark.parametrize("extra", PATHS)
async def test_a_client_leaving_while_its_model_loads_is_not_left_in_flight(
    site: Site, extra: tuple[str, ...]
) -> None:
    slow = fake_model("slow", site.record, "--start-delay", "1.5")
    p = site.proxy(make_plan([slow, fake_model("b", site.record)]), *extra)
    async with aiohttp.ClientSession() as s, aiohttp.ClientSession() as leaver:
        loading = asyncio.create_task(post_chat(leaver, p.url, "slow"))
        await until_async(lambda: _is(["slow"], running(s, p.url)), "slow to be loading")
        await abandon(loading)
        await until_async(lambda: inflight_is(s, p.url, 0), "no request left in flight")
        status, body = await post_chat(s, p.url, "b")  # the queue is free for others
        assert status == 200 and body["fake"]["model"] == "b"
        assert await inflight(s, p.url) == 0
    assert [r["model"] for r in site_records(site)] == ["b"]


@pytest.mark.parametrize("extra", PATHS)
async def test_a_client_leaving_mid_stream_stops_the_stream_and_frees_the_queue(
    site: Site, extra: tuple[str, ...]
) -> None:
    a = fake_model("a", site.record, "--tokens", "100", "--token-delay", "0.05")  # ~5 s stream
    p = site.proxy(make_plan([a]), *extra)
    body = {"model": "a", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s, aiohttp.ClientSession() as leaver:
        resp = await leaver.post(f"{p.url}/v1/chat/completions", json=body)
        assert resp.status == 200
        for _ in range(3):
            assert (await resp.content.readline()).startswith(b"data:")
            await resp.content.readline()  # the blank line after each event
        waiting = asyncio.create_task(post_chat(s, p.url, "a", max_tokens=1))
        await until_async(lambda: inflight_is(s, p.url, 2), "the next request to be queued")

        t0 = time.monotonic()
        resp.close()  # the client leaves mid-stream
        status, _ = await asyncio.wait_for(waiting, 5)
        assert status == 200
        assert time.monotonic() - t0 < 2.5  # well before the abandoned stream would end
        await until_async(lambda: inflight_is(s, p.url, 0), "no request left in flight")
        await until_async(lambda: _current_is(s, a.proxy, 0), "the upstream to stop streaming")


def site_records(site: Site) -> list[dict[str, Any]]:
    import json

    if not site.record.exists():
        return []
    return [json.loads(line) for line in site.record.read_text().splitlines() if line]


async def _current_is(s: aiohttp.ClientSession, upstream: str, n: int) -> bool:
    return (await stats(s, upstream))["current"] == n


async def _is(expected: object, value: Any) -> bool:
    return bool(expected == await value)
