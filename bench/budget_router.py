"""The budget router's figures.

1. Decision cost: fifo's per-request work on the fast path (model loaded, nothing to evict),
   in-process with a minimal Effects, under the group policy and under the budget policy,
   in microseconds of CPU per request (CPU time: the machine is shared, wall time is noise).
2. Churn through the real proxy: N requests over 4 fake models (sizes 8/8/6/12 of a
   24-unit budget, maxLoaded 3, maxWait 2 s) from C clients: wall time, requests/s,
   evictions by reason (from /metrics) and how many models were loaded at most at once.

Nothing is asserted; the numbers are printed.

Run: .venv/bin/python bench/budget_router.py [--requests 1000] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

import aiohttp
from _runtime_harness import fake_model, llama_swap  # type: ignore[import-not-found]

from llama_swap.compiler.plan import Budget, Group, Model, Plan, Routing, Settings
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers import FifoScheduler
from llama_swap.runtime.core.schedulers.base import Evicted, Observed, Request, Swapper
from llama_swap.runtime.core.swappers import BudgetSwapper, GroupSwapper

SIZES = {"a": 8.0, "b": 8.0, "c": 6.0, "d": 12.0}


class QuietEffects:
    """Every model ready; grants delivered; nothing recorded."""

    def __init__(self, models: Sequence[str]) -> None:
        self.models = sorted(models)
        self.seen = Observed(last_used=MappingProxyType({m: 0.0 for m in models}))

    def model_state(self, model: str) -> ProcessState | None:
        return ProcessState.READY

    def running_models(self) -> Sequence[str]:
        return self.models

    def start_swap(self, model: str, evict: tuple[str, ...]) -> None: ...

    def grant_admission(self, request: Request) -> bool:
        return True

    def grant_serve(self, request: Request) -> bool:
        return True

    def grant_error(self, request: Request, error: RouteError) -> None: ...

    def stop_processes(self, models: tuple[str, ...]) -> None: ...

    def queue_positions(self, positions: Mapping[int, int]) -> None: ...

    def observe(self) -> Observed:
        return self.seen

    def run_probes(self, resources: tuple[str, ...]) -> None: ...

    def evicting(self, target: str, evicted: tuple[Evicted, ...]) -> None: ...


def models_of(ids: Sequence[str]) -> dict[str, Model]:
    return {
        m: Model(id=m, cmd=("x",), cmdStop=None, proxy="http://127.0.0.1:1", checkEndpoint="/",
                 ttl=0, resources=MappingProxyType({"vram": SIZES[m]}))
        for m in ids
    }  # fmt: skip


def decision_cost(swapper: Swapper, models: dict[str, Model], n: int) -> float:
    fx = QuietEffects(list(models))
    s = FifoScheduler(models, fx, swapper)
    names = list(models)
    t0 = time.process_time()
    for i in range(n):
        model = names[i % len(names)]
        s.on_request(Request(i, model))
        s.on_serve_done(model)
    return (time.process_time() - t0) / n * 1e6


def churn_plan(max_wait: float) -> Plan:
    models = [replace(fake_model(m), resources=MappingProxyType({"vram": v})) for m, v in SIZES.items()]
    return Plan(
        settings=Settings(healthCheckTimeout=30),
        routing=Routing(
            scheduler="fifo",
            router="budget",
            budget=Budget(maxLoaded=3, resources=MappingProxyType({"vram": 24.0})),
            maxWait=max_wait,
        ),
        models=MappingProxyType({m.id: m for m in models}),
    )


async def churn(url: str, requests: int, clients: int) -> tuple[float, str, int]:
    rng = random.Random(12)
    todo = [rng.choice(sorted(SIZES)) for _ in range(requests)]
    most = 0

    async def client(s: aiohttp.ClientSession) -> None:
        while todo:
            model = todo.pop()
            async with s.post(f"{url}/v1/chat/completions",
                              json={"model": model, "messages": [], "max_tokens": 2}) as r:
                await r.read()
                assert r.status == 200, r.status

    async def watch(s: aiohttp.ClientSession, done: asyncio.Event) -> None:
        nonlocal most
        while not done.is_set():
            async with s.get(f"{url}/running") as r:
                most = max(most, len((await r.json())["running"]))
            await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients + 2)) as s:
        done = asyncio.Event()
        watcher = asyncio.ensure_future(watch(s, done))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(s) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        done.set()
        await watcher
        async with s.get(f"{url}/metrics") as r:
            text = await r.text()
    pairs = re.findall(r'llamaswap_evictions_total\{reason="([^"]+)"\} (\d+)', text)
    evictions = " ".join(f"{k}={v}" for k, v in pairs)
    return elapsed, evictions or "none", most


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--decisions", type=int, default=100_000)
    args = ap.parse_args()

    models = models_of(list(SIZES))
    group = GroupSwapper(MappingProxyType({"all": Group("all", tuple(SIZES), swap=False)}), SIZES)
    budget = BudgetSwapper(Budget(resources=MappingProxyType({"vram": 100.0})), models)
    print("fifo fast-path decision (request + serve done), 4 ready models:")
    for name, swapper in (("group", group), ("budget", budget)):
        costs = [decision_cost(swapper, models, args.decisions) for _ in range(3)]
        print(f"  {name:7s} {min(costs):6.2f} us CPU/request (best of 3)")

    for max_wait in (0.0, 2.0):
        with llama_swap(churn_plan(max_wait)) as run:
            elapsed, evictions, most = asyncio.run(churn(run.url, args.requests, args.clients))
        print(
            f"churn maxWait={max_wait:g}: {args.requests} requests / {args.clients} clients over 4 "
            f"models in {elapsed:.1f} s ({args.requests / elapsed:.0f} req/s); evictions {evictions}; "
            f"at most {most} loaded"
        )


if __name__ == "__main__":
    main()
