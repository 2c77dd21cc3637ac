"""Proxy overhead: a small non-streaming chat request through llama-swap vs straight to
the same fake upstream, with 1 and 32 concurrent clients.

Prints p50/p99 latency for both paths, the p50 the proxy adds, and the throughput ratio
at 32 concurrent clients.  The proxy runs the `fifo` scheduler here: `serial` admits one
request at a time by design, so its 32-client figure would measure that rule, not the
proxy (`--scheduler serial` shows it anyway).  Targets (printed, not asserted): p50 added < 1 ms,
throughput at 32 >= 60 % of direct.  On a 2-core machine the client, the proxy and the
upstream share the cores, so the figures are pessimistic for the proxy.

Run: .venv/bin/python bench/proxy_overhead.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
from _runtime_harness import fake_model, llama_swap, percentile, plan_of  # type: ignore[import-not-found]

BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
).encode()
HEADERS = {"Content-Type": "application/json"}


async def one(session: aiohttp.ClientSession, url: str) -> float:
    t0 = time.perf_counter()
    async with session.post(url, data=BODY, headers=HEADERS) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
    return time.perf_counter() - t0


async def run(url: str, clients: int, total: int) -> tuple[list[float], float]:
    """`total` requests spread over `clients` concurrent workers; latencies and req/s."""
    connector = aiohttp.TCPConnector(limit=clients)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(20, total)):  # warm the pools
            await one(session, url)
        per_worker = max(1, total // clients)

        async def worker() -> None:
            for _ in range(per_worker):
                latencies.append(await one(session, url))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return latencies, len(latencies) / elapsed


def ms(x: float) -> str:
    return f"{x * 1000:7.3f} ms"


async def main_async(total: int, scheduler: str) -> None:
    model = fake_model("m")
    with llama_swap(plan_of([model], scheduler=scheduler, log_level="warn")) as ls:
        proxied = f"{ls.url}/v1/chat/completions"
        direct = f"{model.proxy}/v1/chat/completions"
        async with aiohttp.ClientSession() as s:  # load the model through the proxy
            await one(s, proxied)
        print(f"proxy overhead: small non-streaming chat, {total} requests per run, "
              f"scheduler {scheduler}")
        ratio = 0.0
        for clients in (1, 32):
            d_lat, d_rps = await run(direct, clients, total)
            p_lat, p_rps = await run(proxied, clients, total)
            added = percentile(p_lat, 50) - percentile(d_lat, 50)
            print(f"\n  {clients} concurrent client(s)")
            print(f"    direct : p50 {ms(percentile(d_lat, 50))}  p99 {ms(percentile(d_lat, 99))}"
                  f"  {d_rps:8.0f} req/s")
            print(f"    proxied: p50 {ms(percentile(p_lat, 50))}  p99 {ms(percentile(p_lat, 99))}"
                  f"  {p_rps:8.0f} req/s")
            print(f"    p50 added by the proxy: {ms(added)}"
                  f"   (target < 1 ms{'' if clients == 1 else ', informative at 32'})")
            ratio = p_rps / d_rps
        print(f"\n  throughput at 32 concurrent: {ratio * 100:.0f}% of direct (target >= 60%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--scheduler", choices=("fifo", "serial"), default="fifo")
    args = parser.parse_args()
    asyncio.run(main_async(args.requests, args.scheduler))


if __name__ == "__main__":
    main()
