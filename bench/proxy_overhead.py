"""Proxy overhead: a small non-streaming chat request through llama-swap vs straight to
the same fake upstream, with 1 and 32 concurrent clients.

Prints p50/p99 latency for both paths, the p50 the proxy adds, the throughput ratio at
32 concurrent clients, and the CPU time each process spends per request (client, proxy,
upstream; psutil user+system deltas over the timed part).  Each round measures direct and
proxied back to back (alternating which goes first), after a warm-up; with `--rounds N`
the medians over the rounds are printed as well (the machine is shared and noisy).  The
proxy runs the `fifo` scheduler here: `serial` admits one request at a time by design, so
its 32-client figure would measure that rule, not the proxy (`--scheduler serial` shows
it anyway).  Targets (printed, not asserted): p50 added < 1 ms, throughput at 32 >= 60 %
of direct.  On a 2-core machine the client, the proxy and the upstream share the cores,
so the figures are pessimistic for the proxy.

Run: .venv/bin/python bench/proxy_overhead.py [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass

import aiohttp
import psutil
from _runtime_harness import fake_model, llama_swap, percentile, plan_of  # type: ignore[import-not-found]

BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
).encode()
HEADERS = {"Content-Type": "application/json"}
WARMUP = 200


@dataclass
class Run:
    latencies: list[float]
    rps: float
    cpu_ms: dict[str, float]  # process -> CPU ms per request


def cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, proc in procs.items():
        t = proc.cpu_times()
        out[name] = t.user + t.system
    return out


async def one(session: aiohttp.ClientSession, url: str) -> float:
    t0 = time.perf_counter()
    async with session.post(url, data=BODY, headers=HEADERS) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
    return time.perf_counter() - t0


async def run(url: str, clients: int, total: int, procs: dict[str, psutil.Process]) -> Run:
    """`total` requests spread over `clients` concurrent workers, after a warm-up."""
    connector = aiohttp.TCPConnector(limit=clients)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        per_warm = max(1, WARMUP // clients)
        await asyncio.gather(*(_loop(session, url, per_warm, []) for _ in range(clients)))
        per_worker = max(1, total // clients)
        before = cpu_seconds(procs)
        t0 = time.perf_counter()
        await asyncio.gather(*(_loop(session, url, per_worker, latencies) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        after = cpu_seconds(procs)
    n = len(latencies)
    cpu = {k: (after[k] - before[k]) * 1000 / n for k in procs}
    return Run(latencies, n / elapsed, cpu)


async def _loop(session: aiohttp.ClientSession, url: str, count: int, out: list[float]) -> None:
    for _ in range(count):
        out.append(await one(session, url))


def ms(x: float) -> str:
    return f"{x * 1000:7.3f} ms"


def cpu_text(r: Run) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in r.cpu_ms.items())


async def main_async(total: int, rounds: int, scheduler: str) -> None:
    model = fake_model("m")
    with llama_swap(plan_of([model], scheduler=scheduler, log_level="warn")) as ls:
        proxied = f"{ls.url}/v1/chat/completions"
        direct = f"{model.proxy}/v1/chat/completions"
        async with aiohttp.ClientSession() as s:  # load the model through the proxy
            await one(s, proxied)
        proxy_proc = psutil.Process(ls.proc.pid)
        upstream_proc = proxy_proc.children(recursive=True)[0]
        client_proc = psutil.Process()
        print(f"proxy overhead: small non-streaming chat, {total} requests per run, "
              f"{rounds} round(s), scheduler {scheduler}")
        print("  CPU ms per request: client / proxy / upstream process")
        summary: dict[int, list[tuple[Run, Run]]] = {1: [], 32: []}
        for rnd in range(rounds):
            for clients in (1, 32):
                d_procs = {"client": client_proc, "upstream": upstream_proc}
                p_procs = {"client": client_proc, "proxy": proxy_proc, "upstream": upstream_proc}
                if rnd % 2 == 0:
                    d = await run(direct, clients, total, d_procs)
                    p = await run(proxied, clients, total, p_procs)
                else:
                    p = await run(proxied, clients, total, p_procs)
                    d = await run(direct, clients, total, d_procs)
                summary[clients].append((d, p))
                added = percentile(p.latencies, 50) - percentile(d.latencies, 50)
                print(f"\n  round {rnd + 1}, {clients} concurrent client(s)")
                print(f"    direct : p50 {ms(percentile(d.latencies, 50))}  "
                      f"p99 {ms(percentile(d.latencies, 99))}  {d.rps:8.0f} req/s   cpu {cpu_text(d)}")
                print(f"    proxied: p50 {ms(percentile(p.latencies, 50))}  "
                      f"p99 {ms(percentile(p.latencies, 99))}  {p.rps:8.0f} req/s   cpu {cpu_text(p)}")
                print(f"    p50 added by the proxy: {ms(added)}"
                      f"   (target < 1 ms{'' if clients == 1 else ', informative at 32'})")
                if clients == 32:
                    print(f"    throughput at 32 concurrent: {p.rps / d.rps * 100:.0f}% of direct")
        med = statistics.median
        print(f"\n  medians over {rounds} round(s):")
        for clients, pairs in summary.items():
            added = med(percentile(p.latencies, 50) - percentile(d.latencies, 50) for d, p in pairs)
            p99_d = med(percentile(d.latencies, 99) for d, _ in pairs)
            p99_p = med(percentile(p.latencies, 99) for _, p in pairs)
            proxy_cpu = med(p.cpu_ms["proxy"] for _, p in pairs)
            line = (f"    {clients:2d} client(s): p50 added {ms(added)}  p99 direct {ms(p99_d)}"
                    f"  p99 proxied {ms(p99_p)}  proxy CPU {proxy_cpu:.3f} ms/request")
            if clients == 32:
                ratio = med(p.rps / d.rps for d, p in pairs)
                line += f"\n    throughput at 32 concurrent: {ratio * 100:.0f}% of direct (target >= 60%)"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scheduler", choices=("fifo", "serial"), default="fifo")
    args = parser.parse_args()
    asyncio.run(main_async(args.requests, args.rounds, args.scheduler))


if __name__ == "__main__":
    main()
