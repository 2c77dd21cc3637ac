"""The router's own cost per request, in-process: CPU microseconds per acquire + release.

Why in-process: end to end, the router is ~10 us of a ~100 us request, well inside what a
busy 2-core machine's noise moves a proxy's CPU per request by; measured alone, with the
process's CPU clock, a change to the run loop shows.  A model whose command is `sleep 60`
with no health check is started once, then `--tasks` concurrent tasks each acquire a lease,
yield once to the event loop (standing for the request's I/O) and release it.

Before/after a change: run it under each build, e.g. with another checkout's package
directory first on PYTHONPATH.

Run: .venv/bin/python bench/router_events.py [--requests 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from types import MappingProxyType

from llama_swap.compiler.plan import Group, Model, Plan, Routing, Settings
from llama_swap.runtime.engine import router as router_module
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.router import Router

MODEL = Model(id="m", cmd=("sleep", "60"), cmdStop=None, proxy="http://127.0.0.1:9",
              checkEndpoint="none", ttl=0, concurrencyLimit=100000)


def plan(scheduler: str) -> Plan:
    return Plan(settings=Settings(), models=MappingProxyType({"m": MODEL}),
                routing=Routing(scheduler=scheduler,
                                groups=MappingProxyType({"g": Group("g", ("m",))})))


async def measure(scheduler: str, tasks: int, requests: int) -> float:
    """CPU microseconds per acquire + release."""
    r = Router(plan(scheduler), upstream_log=LogBuffer("upstream"))
    await r.start()
    (await r.acquire("m")).release()  # start the model once
    per = max(1, requests // tasks)

    async def worker() -> None:
        for _ in range(per):
            lease = await r.acquire("m")
            await asyncio.sleep(0)
            lease.release()

    c0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    cpu = time.process_time() - c0
    await r.shutdown(5)
    return cpu / (per * tasks) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    print(f"router: {router_module.__file__}")
    for scheduler in ("fifo", "serial"):
        for tasks in (1, 32) if scheduler == "fifo" else (1,):
            xs = [run(measure(scheduler, tasks, args.requests)) for _ in range(args.repeat)]
            print(f"  {scheduler:6s} {tasks:3d} task(s): {statistics.median(xs):6.2f} us CPU per "
                  f"acquire + release (median of {args.repeat}, min {min(xs):.2f})")


if __name__ == "__main__":
    main()
