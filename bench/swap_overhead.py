"""Swap overhead: time from a request to its first response byte when the model must be
started, minus the upstream's own start-to-healthy time.

1. The upstream alone: spawn the fake upstream directly and poll its /health every 5 ms
   until 200 (faster polling steals CPU from the starting server on 2 cores).
2. Cold start through llama-swap: unload, then time a small request to its first byte
   (interleaved with 1, so both see the same machine load).
3. The proxy's own view of spawn-to-healthy (its "health ok after N ms" log line), which
   isolates what the router and proxy add around the start from process-start noise.
4. A swap a<->b under `serial`, the other model's stop and exit included.
Target (printed, not asserted): < 50 ms added.

Run: .venv/bin/python bench/swap_overhead.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import time
from typing import Any

import aiohttp
from _runtime_harness import (  # type: ignore[import-not-found]
    fake_model,
    llama_swap,
    plan_of,
    wait_healthy,
)

HEALTH_OK = re.compile(r"health ok after (\d+) ms")


def direct_start_times(cmd: tuple[str, ...], proxy: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(f"{proxy}/health", interval=0.005)
            out.append(time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait(10)
    return out


async def first_byte(session: aiohttp.ClientSession, url: str, model: str) -> float:
    t0 = time.perf_counter()
    async with session.post(
        f"{url}/v1/chat/completions", json={"model": model, "messages": [], "max_tokens": 1}
    ) as resp:
        elapsed = time.perf_counter() - t0
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
    return elapsed


async def through_proxy(runs: int) -> dict[str, Any]:
    """Direct starts and cold starts are interleaved so both see the same machine load."""
    a, b = fake_model("a"), fake_model("b")
    direct: list[float] = []
    cold: list[float] = []
    swaps: list[float] = []
    plan = plan_of([a, b], scheduler="serial", log_level="warn", log_to_stdout="upstream")
    with llama_swap(plan, capture=True) as ls:
        async with aiohttp.ClientSession() as s:
            await first_byte(s, ls.url, "a")
            warm = statistics.median([await first_byte(s, ls.url, "a") for _ in range(20)])
            mark = len(ls.output)
            for _ in range(runs):
                async with s.post(f"{ls.url}/api/models/unload") as resp:
                    await resp.read()
                direct += await asyncio.to_thread(direct_start_times, a.cmd, a.proxy, 1)
                cold.append(await first_byte(s, ls.url, "a"))
            await asyncio.sleep(0.2)
            seen = [float(m.group(1)) / 1000 for line in ls.output[mark:]
                    if (m := HEALTH_OK.search(line))]
            for i in range(runs):
                swaps.append(await first_byte(s, ls.url, "b" if i % 2 == 0 else "a"))
    return {"direct": direct, "cold": cold, "warm": warm, "swaps": swaps, "seen": seen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    r = asyncio.run(through_proxy(args.runs))
    med = statistics.median
    d, c, w, sw = med(r["direct"]), med(r["cold"]), r["warm"], med(r["swaps"])
    seen = med(r["seen"]) if r["seen"] else float("nan")
    print(f"swap overhead ({args.runs} runs each, medians; ms)")
    print(f"  upstream alone, spawn to healthy (polled every 5 ms) : {d * 1000:8.1f}")
    print(f"  spawn to healthy as the proxy saw it (its log)       : {seen * 1000:8.1f}")
    print(f"  warm request through the proxy                       : {w * 1000:8.1f}")
    print(f"  cold start through the proxy, request to first byte  : {c * 1000:8.1f}")
    print(f"  swap a<->b, eviction included                        : {sw * 1000:8.1f}")
    print(f"  added by the proxy on a cold start (cold - alone - warm)      : {(c - d - w) * 1000:7.1f}"
          "  (target < 50; noisy: two separate process starts)")
    print(f"  added around the start itself (cold - proxy's own view - warm): {(c - seen - w) * 1000:7.1f}"
          "  (router, swap task, first proxied byte)")


if __name__ == "__main__":
    main()
