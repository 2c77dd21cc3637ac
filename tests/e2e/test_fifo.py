"""The `fifo` scheduler and the eviction policies through the real proxy: collation,
concurrency on one model, the 429 limit, group and matrix eviction."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from llama_swap.compiler.plan import Group
from tests.e2e.conftest import fake_model, make_plan, matrix_of
from tests.e2e.test_serial import post_chat, staggered


def max_concurrency(records: list[dict[str, Any]]) -> int:
    edges = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    best = cur = 0
    for _, step in edges:
        cur += step
        best = max(best, cur)
    return best


async def running_models(s: aiohttp.ClientSession, url: str) -> list[str]:
    async with s.get(f"{url}/running") as resp:
        return [r["model"] for r in (await resp.json())["running"]]


async def test_requests_arriving_during_a_load_are_collated_by_model(
    proxy: Any, record_file: Path
) -> None:
    plan = make_plan(
        [
            fake_model("a", record_file, "--start-delay", "0.6", "--response-delay", "0.2"),
            fake_model("b", record_file, "--response-delay", "0.2"),
        ],
        scheduler="fifo",
    )
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        results = await staggered([post_chat(s, p.url, m) for m in ["a", "b", "a", "b"]])
    assert [status for status, _ in results] == [200] * 4
    assert [r["model"] for r in p.records()] == ["a", "a", "b", "b"]


async def test_requests_for_a_ready_model_run_concurrently(proxy: Any, record_file: Path) -> None:
    plan = make_plan([fake_model("a", record_file, "--response-delay", "0.5")], scheduler="fifo")
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        assert (await post_chat(s, p.url, "a", fake_delay=0))[0] == 200  # load it
        results = await asyncio.gather(*(post_chat(s, p.url, "a") for _ in range(3)))
    assert [status for status, _ in results] == [200] * 3
    assert max_concurrency(p.records()) == 3


async def test_the_concurrency_limit_answers_429_with_retry_after(
    proxy: Any, record_file: Path
) -> None:
    plan = make_plan(
        [fake_model("a", record_file, "--response-delay", "0.8", concurrency=1)], scheduler="fifo"
    )
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        assert (await post_chat(s, p.url, "a", fake_delay=0))[0] == 200  # load it
        first = asyncio.ensure_future(post_chat(s, p.url, "a"))
        await asyncio.sleep(0.2)
        async with s.post(
            f"{p.url}/v1/chat/completions", json={"model": "a", "messages": []}
        ) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1"
            assert await resp.read() == (
                b'{"src":"llama-swap","error":{"message":"Too many requests",'
                b'"type":"rate_limit_error","param":null,"code":"concurrency_limit"}}'
            )
        assert (await first)[0] == 200


async def test_group_eviction_keeps_group_mates_and_persistent_groups(
    proxy: Any, record_file: Path
) -> None:
    models = [fake_model(m, record_file) for m in ("a", "b", "c", "p")]
    groups = {
        "pair": Group("pair", ("a", "b"), swap=False, exclusive=False),
        "solo": Group("solo", ("c",), swap=True, exclusive=True),
        "keep": Group("keep", ("p",), swap=True, exclusive=False, persistent=True),
    }
    p = proxy(make_plan(models, scheduler="fifo", groups=groups))
    async with aiohttp.ClientSession() as s:
        for m in ("p", "a", "b"):
            assert (await post_chat(s, p.url, m))[0] == 200
        assert await running_models(s, p.url) == ["a", "b", "p"]
        assert (await post_chat(s, p.url, "c"))[0] == 200
        assert await running_models(s, p.url) == ["c", "p"]
    alive = " ".join(" ".join(k.cmdline()) for k in p.children())
    assert "--model a " not in alive and "--model b " not in alive


async def test_matrix_eviction_keeps_allowed_sets_and_evicts_the_rest(
    proxy: Any, record_file: Path
) -> None:
    models = [fake_model(m, record_file) for m in ("a", "b", "c")]
    matrix = matrix_of({"ab": [["a", "b"]], "c": [["c"]]})
    p = proxy(make_plan(models, scheduler="fifo", matrix=matrix, groups={}))
    async with aiohttp.ClientSession() as s:
        for m in ("a", "b"):
            assert (await post_chat(s, p.url, m))[0] == 200
        assert await running_models(s, p.url) == ["a", "b"]
        assert (await post_chat(s, p.url, "c"))[0] == 200
        assert await running_models(s, p.url) == ["c"]
        assert (await post_chat(s, p.url, "a"))[0] == 200
        assert await running_models(s, p.url) == ["a"]

