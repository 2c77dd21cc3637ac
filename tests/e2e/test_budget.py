"""The budget router through the real proxy and real child processes (the fake upstream;
sizes are declared, the fake needs none): models that fit run side by side, the least
recently used idle one makes room, a streaming model is never evicted, a probe script
whose output changes between requests, and many clients over four models with the
process table sampled throughout.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import psutil

from llama_swap.compiler.plan import Budget, Model, Plan, Routing, Settings
from tests.e2e.conftest import Proxy, fake_model
from tests.e2e.test_fifo import running_models
from tests.e2e.test_serial import post_chat


def sized(model: Model, **sizes: float) -> Model:
    return replace(model, resources=MappingProxyType(sizes))


def budget_plan(
    models: list[Model],
    *,
    max_loaded: int = 0,
    probes: dict[str, str] | None = None,
    max_wait: float = 0,
    **caps: float,
) -> Plan:
    return Plan(
        settings=Settings(healthCheckTimeout=15, logLevel="debug"),
        routing=Routing(
            scheduler="fifo",
            router="budget",
            budget=Budget(
                maxLoaded=max_loaded,
                resources=MappingProxyType(caps),
                probes=MappingProxyType(probes or {}),
            ),
            maxWait=max_wait,
        ),
        models=MappingProxyType({m.id: m for m in sorted(models, key=lambda m: m.id)}),
    )


async def get_json(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as resp:
        return await resp.json()


async def metrics(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(f"{url}/metrics") as resp:
        return await resp.text()


def models_alive(p: Proxy) -> list[str]:
    """The models whose fake server process is alive right now (from the process table)."""
    names = []
    for kid in p.children():
        try:
            cmd = kid.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--model" in cmd:
            names.append(cmd[cmd.index("--model") + 1])
    return sorted(names)


async def test_models_that_fit_run_side_by_side_and_the_lru_idle_one_makes_room(
    proxy: Any, record_file: Path
) -> None:
    models = [sized(fake_model(m, record_file), vram=10) for m in ("a", "b", "c")]
    p = proxy(budget_plan(models, vram=20))
    async with aiohttp.ClientSession() as s:
        for m in ("a", "b", "a"):  # a is used last
            assert (await post_chat(s, p.url, m))[0] == 200
        assert await running_models(s, p.url) == ["a", "b"]
        assert models_alive(p) == ["a", "b"]
        assert (await post_chat(s, p.url, "c"))[0] == 200
        assert await running_models(s, p.url) == ["a", "c"]
        assert models_alive(p) == ["a", "c"]
        running = await get_json(s, f"{p.url}/running")
        assert [r["resources"] for r in running["running"]] == [{"vram": 10}, {"vram": 10}]
        assert running["budget"] == {
            "maxLoaded": 0,
            "loaded": 2,
            "models": ["a", "c"],
            "resources": {"vram": {"capacity": 20, "used": 20}},
        }
        text = await metrics(s, p.url)
    assert 'llamaswap_budget_capacity{resource="vram"} 20' in text
    assert 'llamaswap_budget_used{resource="vram"} 20' in text
    assert 'llamaswap_evictions_total{reason="vram"} 1' in text
    assert "budget vram 20/20 needs 10: evicting b, idle " in p.log_text()


async def test_a_streaming_model_is_never_evicted_its_idle_neighbour_is(
    proxy: Any, record_file: Path
) -> None:
    slow = ("--tokens", "30", "--token-delay", "0.05")
    models = [sized(fake_model(m, record_file, *slow), vram=10) for m in ("a", "b", "c")]
    p = proxy(budget_plan(models, vram=20))
    async with aiohttp.ClientSession() as s:
        assert (await post_chat(s, p.url, "b"))[0] == 200
        assert (await post_chat(s, p.url, "a", max_tokens=1))[0] == 200  # b is now the LRU
        assert (await post_chat(s, p.url, "b", max_tokens=1))[0] == 200  # ... and now a is
        async with s.post(
            f"{p.url}/v1/chat/completions",
            json={"model": "a", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as stream:
            first = await stream.content.readline()  # a is streaming now
            assert first.startswith(b"data:")
            assert (await post_chat(s, p.url, "c", max_tokens=1))[0] == 200
            assert models_alive(p) == ["a", "c"]  # b went although a was used longer ago
            rest = await stream.read()
        assert rest.rstrip().endswith(b"data: [DONE]")


async def test_when_only_a_streaming_model_could_make_room_the_request_waits_for_it(
    proxy: Any, record_file: Path
) -> None:
    slow = ("--tokens", "20", "--token-delay", "0.05")
    models = [sized(fake_model(m, record_file, *slow), vram=15) for m in ("a", "b")]
    p = proxy(budget_plan(models, vram=20))
    async with aiohttp.ClientSession() as s:
        assert (await post_chat(s, p.url, "a", max_tokens=1))[0] == 200
        streaming = asyncio.ensure_future(post_chat(s, p.url, "a", stream=False))
        await asyncio.sleep(0.3)
        assert (await post_chat(s, p.url, "b", max_tokens=1))[0] == 200
        assert (await streaming)[0] == 200
    a_long, b = [r for r in p.records() if r["model"] == "a"][-1], p.records()[-1]
    assert b["model"] == "b" and b["start"] >= a_long["end"]


async def test_a_probe_script_sees_memory_held_outside_llama_swap(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    free = tmp_path / "free.txt"
    free.write_text("95\n")
    models = [sized(fake_model(m, record_file), vram=10) for m in ("a", "b", "c")]
    p = proxy(budget_plan(models, vram=100, probes={"vram": f"cat {free}"}))
    async with aiohttp.ClientSession() as s:
        for m in ("a", "b"):
            assert (await post_chat(s, p.url, m))[0] == 200
        assert models_alive(p) == ["a", "b"]
        free.write_text("3\n")  # something outside took the memory: only 3 left
        assert (await post_chat(s, p.url, "c"))[0] == 200
        assert models_alive(p) == ["b", "c"]  # declared sizes fit; the probe did not
        free.write_text("not a number\n")  # a failing probe: the declared sizes alone
        assert (await post_chat(s, p.url, "a"))[0] == 200
        assert models_alive(p) == ["a", "b", "c"]
        text = await metrics(s, p.url)
    log = p.log_text()
    assert "budget vram free 3 (probed) + 0 evicted needs 10: evicting a, idle " in log
    assert "budget probe vram failed" in log
    assert 'llamaswap_evictions_total{reason="probe:vram"} 1' in text


class BudgetSampler:
    """Samples the process table every few ms: which model servers are alive at once."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.seen: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(models_alive(self.proxy))
            time.sleep(0.005)

    def __enter__(self) -> BudgetSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


SIZES = {"a": 8.0, "b": 8.0, "c": 6.0, "d": 12.0}
CAPACITY = 24.0
MAX_LOADED = 3


async def test_a_thousand_requests_over_four_models_keep_the_budget_in_the_process_table(
    proxy: Any, record_file: Path
) -> None:
    models = [sized(fake_model(m, record_file, concurrency=32), vram=v) for m, v in SIZES.items()]
    p = proxy(budget_plan(models, max_loaded=MAX_LOADED, max_wait=2.0, vram=CAPACITY))
    rng = random.Random(12)
    todo = [rng.choice(sorted(SIZES)) for _ in range(1000)]
    statuses: list[int] = []

    async def client(s: aiohttp.ClientSession) -> None:
        while todo:
            model = todo.pop()
            statuses.append((await post_chat(s, p.url, model, max_tokens=2))[0])

    with BudgetSampler(p) as sampler:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as s:
            await asyncio.gather(*(client(s) for _ in range(16)))
    assert statuses == [200] * 1000
    assert len(sampler.seen) > 100
    over = [alive for alive in sampler.seen if sum(SIZES[m] for m in alive) > CAPACITY]
    assert over == []
    assert [alive for alive in sampler.seen if len(alive) > MAX_LOADED] == []
    assert max(len(alive) for alive in sampler.seen) >= 2  # models did share the budget
    assert len(p.records()) == 1000


async def test_api_events_carries_the_budget_in_use_and_the_declared_sizes(
    proxy: Any, record_file: Path
) -> None:
    models = [sized(fake_model(m, record_file), vram=10) for m in ("a", "b")]
    p = proxy(budget_plan(models, max_loaded=2, vram=20))
    async with aiohttp.ClientSession() as s:
        assert (await post_chat(s, p.url, "a"))[0] == 200
        frames: dict[str, Any] = {}
        async with s.get(f"{p.url}/api/events") as events:
            async for raw in events.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    frame = json.loads(line[len("data:") :])
                    frames[frame["type"]] = json.loads(frame["data"])
                if "budget" in frames and "modelStatus" in frames:
                    break
    assert frames["budget"] == {
        "maxLoaded": 2,
        "loaded": 1,
        "models": ["a"],
        "resources": {"vram": {"capacity": 20, "used": 10}},
    }
    assert [m["resources"] for m in frames["modelStatus"]] == [{"vram": 10}, {"vram": 10}]


async def test_the_active_profiles_pinned_model_is_never_evicted(
    proxy: Any, record_file: Path
) -> None:
    """A profile pinning `a` keeps it loaded although it is the least recently used; the
    next idle model makes room instead.  With no profile active, `a` goes again."""
    from llama_swap.compiler.plan import Profile

    models = [sized(fake_model(m, record_file), vram=10) for m in ("a", "b", "c")]
    plan = budget_plan(models, vram=20)
    pinned = Profile(id="keep-a", description="", pins=MappingProxyType({"chat": "a"}))
    p = proxy(replace(plan, profiles=MappingProxyType({"keep-a": pinned})))
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{p.url}/api/profiles/active", json={"name": "keep-a"}) as resp:
            assert resp.status == 200
        for m in ("a", "b"):  # a is the least recently used
            assert (await post_chat(s, p.url, m))[0] == 200
        assert (await post_chat(s, p.url, "c"))[0] == 200
        assert await running_models(s, p.url) == ["a", "c"]  # b made room, not a
        assert models_alive(p) == ["a", "c"]

        async with s.put(f"{p.url}/api/profiles/active", json={"name": None}) as resp:
            assert resp.status == 200
        assert (await post_chat(s, p.url, "b"))[0] == 200  # now a, the LRU one, goes
        assert await running_models(s, p.url) == ["b", "c"]
