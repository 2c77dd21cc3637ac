"""The `serial` scheduler through the real proxy: arrival order, one request and one model
at a time, failures that leave the proxy usable, clients that leave while queued."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import (
    ResidencySampler,
    fake_model,
    make_plan,
    overlapping,
)


async def post_chat(
    session: aiohttp.ClientSession, url: str, model: str, **extra: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def staggered(coros: list[Any], gap: float = 0.05) -> list[Any]:
    """Start each coroutine `gap` s after the previous one (fixes arrival order)."""
    tasks = []
    for coro in coros:
        tasks.append(asyncio.ensure_future(coro))
        await asyncio.sleep(gap)
    return await asyncio.gather(*tasks)


async def test_interleaved_requests_are_served_in_arrival_order_one_model_at_a_time(
    proxy: Any, record_file: Path
) -> None:
    plan = make_plan(
        [
            fake_model("a", record_file, "--response-delay", "0.1"),
            fake_model("b", record_file, "--response-delay", "0.1"),
        ]
    )
    p = proxy(plan)
    order = ["a", "b", "a", "b", "a"]
    with ResidencySampler(p) as sampler:
        async with aiohttp.ClientSession() as s:
            results = await staggered([post_chat(s, p.url, m) for m in order])
    assert [status for status, _ in results] == [200] * len(order)
    assert [body["fake"]["model"] for _, body in results] == order
    served = [r for r in p.records() if r["path"] == "/v1/chat/completions"]
    assert [r["model"] for r in served] == order
    assert overlapping(served) == []
    assert sampler.samples > 10
    assert len(sampler.max_models) == 1, sampler.max_models


async def test_same_model_requests_are_not_batched(proxy: Any, record_file: Path) -> None:
    plan = make_plan([fake_model("a", record_file, "--response-delay", "0.15")])
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(*(post_chat(s, p.url, "a") for _ in range(4)))
    assert [status for status, _ in results] == [200] * 4
    assert overlapping(p.records()) == []


async def test_start_failure_is_a_502_with_the_log_tail_and_the_next_request_works(
    proxy: Any, record_file: Path
) -> None:
    plan = make_plan(
        [
            fake_model("broken", record_file, "--fail", "exit-on-start"),
            fake_model("good", record_file),
        ]
    )
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        status, body = await post_chat(s, p.url, "broken")
        assert status == 502
        assert body["src"] == "llama-swap"
        assert "broken" in body["error"]["message"] and "failed to load the model" in body["error"]["message"]
        assert (await post_chat(s, p.url, "good"))[0] == 200
        # a failed model may be retried: it fails again, cleanly
        assert (await post_chat(s, p.url, "broken"))[0] == 502


async def test_a_health_timeout_fails_every_queued_request_for_that_model_at_once(
    proxy: Any, record_file: Path
) -> None:
    timeout = 15  # the smallest healthCheckTimeout a plan may carry
    plan = make_plan(
        [
            fake_model("sick", record_file, "--fail", "never-healthy"),
            fake_model("good", record_file),
        ],
        health_timeout=timeout,
    )
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        results = await staggered([post_chat(s, p.url, "sick") for _ in range(3)], gap=0.02)
        elapsed = loop.time() - t0
        assert [status for status, _ in results] == [503, 503, 503]
        assert all("health check timed out" in body["error"]["message"] for _, body in results)
        # one health-check timeout for all three, not three in a row
        assert elapsed < 2 * timeout
        assert (await post_chat(s, p.url, "good"))[0] == 200
    assert all("--model sick" not in " ".join(k.cmdline()) for k in p.children())


async def test_a_client_that_leaves_while_queued_never_triggers_a_load(
    proxy: Any, record_file: Path
) -> None:
    plan = make_plan(
        [
            fake_model("a", record_file, "--response-delay", "1.0"),
            fake_model("b", record_file),
        ]
    )
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        first = asyncio.ensure_future(post_chat(s, p.url, "a"))
        await asyncio.sleep(0.3)  # a is loading or serving; b queues behind it
        leaver = asyncio.ensure_future(post_chat(s, p.url, "b"))
        await asyncio.sleep(0.2)
        leaver.cancel()  # the client disconnects while queued
        assert (await first)[0] == 200
        await asyncio.sleep(0.3)
        assert [r["model"] for r in p.records()] == ["a"]
        assert all("--model b" not in " ".join(k.cmdline()) for k in p.children())
        # the proxy is still in order: b can be served now
        assert (await post_chat(s, p.url, "b"))[0] == 200


async def test_unknown_and_missing_models_are_404(proxy: Any, record_file: Path) -> None:
    p = proxy(make_plan([fake_model("a", record_file, aliases=("alpha",))]))
    async with aiohttp.ClientSession() as s:
        status, body = await post_chat(s, p.url, "nope")
        assert status == 404 and body == {"src": "llama-swap", "error": {
            "message": "no local server found for requested model: nope",
            "type": "invalid_request_error", "param": None, "code": "not_found",
        }}
        async with s.post(f"{p.url}/v1/chat/completions", json={"messages": []}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "no model id could be identified"
        status, body = await post_chat(s, p.url, "alpha")  # alias resolves to a
        assert status == 200 and body["fake"]["model"] == "a"
