"""Proxy overhead: a small non-streaming chat request through llama-swap vs straight to
the same fake upstream, with 1 and 32 concurrent clients.

Three targets, measured side by side in every round (their order rotates from round
to round, after a warm-up): the upstream directly, llama-swap with its fast path (the
default), llama-swap with `--no-fast-path` (every request through aiohttp), and, when
nginx is installed, nginx in front of the same upstream as a peer (bench/_nginx_peer.py;
`--no-nginx` leaves it out).  `--baseline EXE` adds another build's `llama-swap` (for
instance an older checkout's `.venv/bin/llama-swap`) with its fast path, as "baseline",
so a change's before and after are measured side by side in one run; `--baseline pure`
runs this install with `LLAMA_SWAP_PURE_PYTHON=1` (its compiled modules' Python source),
and `--baseline LABEL=EXE` names a target; the option may be given several times.  Two
load generators drive them: `lean` (bench/_lean_client.py, an asyncio protocol
costing ~0.02 ms of CPU per request, the role wrk plays elsewhere) and `aiohttp`
(aiohttp's client, ~0.08 ms per request: as much as the fake upstream's own
answer).  On a 2-core machine the client, the proxy and the upstream share the
cores, so with the aiohttp client the ratio at 32 clients mostly measures the
client; the lean client measures the proxy.  Both are printed.

Printed per target: p50/p99 latency, requests/s, and the CPU each process spends per
request (psutil user+system deltas over the timed part).  Medians over `--rounds`
close the report.  Targets (printed, not asserted): p50 added < 1 ms, throughput at
32 >= 60 % of direct.  The proxy runs the `fifo` scheduler: `serial` admits one
request at a time by design (`--scheduler serial` shows it anyway).

Run: .venv/bin/python bench/proxy_overhead.py [--requests N] [--rounds N] [--client lean|aiohttp|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import dataclass

import aiohttp
import psutil
from _lean_client import drive  # type: ignore[import-not-found]
from _nginx_peer import available as nginx_available  # type: ignore[import-not-found]
from _nginx_peer import nginx  # type: ignore[import-not-found]
from _runtime_harness import (  # type: ignore[import-not-found]
    LLAMA_SWAP,
    fake_model,
    llama_swap,
    model_processes,
    percentile,
    plan_of,
    proxy_processes,
)

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


async def run_lean(url: str, clients: int, total: int, procs: dict[str, psutil.Process]) -> Run:
    latencies: list[float] = []
    await drive(url, BODY, clients, max(1, WARMUP // clients), [])
    before = cpu_seconds(procs)
    t0 = time.perf_counter()
    await drive(url, BODY, clients, max(1, total // clients), latencies)
    elapsed = time.perf_counter() - t0
    after = cpu_seconds(procs)
    n = len(latencies)
    return Run(latencies, n / elapsed, {k: (after[k] - before[k]) * 1000 / n for k in procs})


DRIVERS = {"lean": run_lean, "aiohttp": run}


async def main_async(
    total: int, rounds: int, scheduler: str, kinds: list[str], peer: bool,
    baselines: tuple[tuple[str, str], ...] = (),
) -> None:
    fast_model, plain_model = fake_model("m"), fake_model("m")
    with contextlib.ExitStack() as stack:
        fast = stack.enter_context(
            llama_swap(plan_of([fast_model], scheduler=scheduler, log_level="warn")))
        plain = stack.enter_context(
            llama_swap(plan_of([plain_model], scheduler=scheduler, log_level="warn"),
                       "--no-fast-path"))
        targets: tuple[str, ...] = ("direct", "fast path", "aiohttp path")
        urls = {
            "direct": f"{fast_model.proxy}/v1/chat/completions",
            "fast path": f"{fast.url}/v1/chat/completions",
            "aiohttp path": f"{plain.url}/v1/chat/completions",
        }
        async with aiohttp.ClientSession() as s:  # load the models through the proxies
            await one(s, urls["fast path"])
            await one(s, urls["aiohttp path"])
        client = psutil.Process()
        fast_proc, fast_store = proxy_processes(fast.proc.pid)
        plain_proc, plain_store = proxy_processes(plain.proc.pid)
        fast_upstream = model_processes(fast.proc.pid)[0]
        procs = {
            "direct": {"client": client, "upstream": fast_upstream},
            "fast path": {"client": client, "proxy": fast_proc, "store": fast_store,
                          "upstream": fast_upstream},
            "aiohttp path": {"client": client, "proxy": plain_proc, "store": plain_store,
                             "upstream": model_processes(plain.proc.pid)[0]},
        }
        for label, exe in baselines:  # other builds, each with its own upstream
            base_model = fake_model("m")
            pure = exe == "pure"  # this install, its compiled modules' Python source
            base = stack.enter_context(llama_swap(
                plan_of([base_model], scheduler=scheduler, log_level="warn"),
                exe=LLAMA_SWAP if pure else exe, pure=pure))
            targets += (label,)
            urls[label] = f"{base.url}/v1/chat/completions"
            async with aiohttp.ClientSession() as s:
                await one(s, urls[label])
            base_proc, *base_store = proxy_processes(base.proc.pid)  # older builds: no writer
            procs[label] = {"client": client, "proxy": base_proc,
                            **({"store": base_store[0]} if base_store else {}),
                            "upstream": model_processes(base.proc.pid)[0]}
        if peer:  # nginx in front of the same upstream as "direct"
            nginx_url, nginx_pid = stack.enter_context(
                nginx(fast_model.proxy.removeprefix("http://")))
            targets += ("nginx",)
            urls["nginx"] = f"{nginx_url}/v1/chat/completions"
            worker = psutil.Process(nginx_pid).children()[0]
            procs["nginx"] = {"client": client, "proxy": worker, "upstream": fast_upstream}
        print(f"proxy overhead: small non-streaming chat, {total} requests per run, "
              f"{rounds} round(s), scheduler {scheduler}, clients: {', '.join(kinds)}")
        print("  CPU ms per request: client / proxy / its store writer / upstream process "
              "(\"proxy CPU\" below: proxy + store writer)")
        results: dict[tuple[str, int], list[dict[str, Run]]] = {}
        for rnd in range(rounds):
            shift = rnd % len(targets)
            order = targets[shift:] + targets[:shift]
            for kind in kinds:
                for clients in (1, 32):
                    runs = {t: await DRIVERS[kind](urls[t], clients, total, procs[t]) for t in order}
                    results.setdefault((kind, clients), []).append(runs)
                    print(f"\n  round {rnd + 1}, {kind} client, {clients} concurrent")
                    for t in targets:
                        r = runs[t]
                        print(f"    {t:14s}: p50 {ms(percentile(r.latencies, 50))}  "
                              f"p99 {ms(percentile(r.latencies, 99))}  {r.rps:8.0f} req/s"
                              f"   cpu {cpu_text(r)}")
                    d = runs["direct"]
                    for t in targets[1:]:
                        added = percentile(runs[t].latencies, 50) - percentile(d.latencies, 50)
                        line = f"    {t}: p50 added {ms(added)}"
                        if clients == 32:
                            line += f", throughput {runs[t].rps / d.rps * 100:.0f}% of direct"
                        print(line)
        med = statistics.median
        print(f"\n  medians over {rounds} round(s)  (targets: p50 added < 1 ms at 1 client, "
              "throughput >= 60% of direct at 32)")
        for (kind, clients), rows in results.items():
            for t in targets[1:]:
                added = med(percentile(r[t].latencies, 50) - percentile(r["direct"].latencies, 50)
                            for r in rows)
                cpu = med(r[t].cpu_ms["proxy"] + r[t].cpu_ms.get("store", 0.0) for r in rows)
                line = (f"    {kind:7s} client, {clients:2d} concurrent, {t:14s}: p50 added "
                        f"{ms(added)}  proxy CPU {cpu:.3f} ms/request")
                if clients == 32:
                    ratio = med(r[t].rps / r["direct"].rps for r in rows)
                    line += f"  throughput {ratio * 100:3.0f}% of direct"
                print(line)


def baseline_target(arg: str) -> tuple[str, str]:
    """`LABEL=EXE`, `EXE` (labelled "baseline") or `pure` (labelled "pure Python")."""
    label, sep, exe = arg.partition("=")
    if sep:
        return label, exe
    return ("pure Python", "pure") if arg == "pure" else ("baseline", arg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scheduler", choices=("fifo", "serial"), default="fifo")
    parser.add_argument("--client", choices=("lean", "aiohttp", "both"), default="both")
    parser.add_argument("--no-nginx", action="store_true",
                        help="leave out the nginx peer (measured only when nginx is installed)")
    parser.add_argument("--baseline", metavar="[LABEL=]EXE", action="append", default=[],
                        help="another build's llama-swap, measured side by side as LABEL "
                             "(default 'baseline'); EXE 'pure': this install running its "
                             "Python source, not the modules it compiled; repeatable")
    args = parser.parse_args()
    baselines = tuple(baseline_target(b) for b in args.baseline)
    kinds = ["lean", "aiohttp"] if args.client == "both" else [args.client]
    peer = not args.no_nginx and nginx_available()
    # the load generators run on uvloop when it is installed (as llama-swap does): the
    # measuring client should take as little of the shared CPU as it can
    try:
        import uvloop

        uvloop.run(main_async(args.requests, args.rounds, args.scheduler, kinds, peer, baselines))
    except ImportError:
        asyncio.run(main_async(args.requests, args.rounds, args.scheduler, kinds, peer, baselines))


if __name__ == "__main__":
    main()
