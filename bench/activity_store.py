"""Activity store: does keeping the history in SQLite cost the request path anything?

Two measurements, each side by side in one run:

1. End to end: the same small chat request through two llama-swap processes in front of
   their own fake upstream, one keeping its history in a SQLite file (WAL, on disk) and
   one in `:memory:`, in alternating rounds (the order rotates) until each has recorded
   `--requests` requests (default 10,000).  Printed: p50/p99 latency per target and the
   difference, then each store's status (rows written, dropped) and the file's row count.
2. In process: the part of a request that touches the store -- `ActivityLog.record`
   with the store attached (file, `:memory:`) and with none (disabled) -- timed per call,
   and the event loop thread's CPU per entry once the store has rendered and sent every
   entry to its writer process (`--requests` calls each).

Nothing is asserted (shared machines are noisy); read the figures.  The fast path (the
default) serves the requests; the lean client drives one connection at a time so
latency, not throughput, is what moves.

Run: .venv/bin/python bench/activity_store.py [--requests N] [--rounds N] [--clients N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sqlite3
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from _lean_client import drive  # type: ignore[import-not-found]
from _runtime_harness import fake_model, llama_swap, percentile, plan_of  # type: ignore[import-not-found]

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.http.observe.activity import ActivityLog, ResponseMeter
from llama_swap.runtime.http.observe.activity_store import ActivityStore, Retention

BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
).encode()
ANSWER = b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}'
WARMUP = 200


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.3f}"


def status_of(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/api/store/status") as r:  # noqa: S310 -- local
        return json.loads(r.read())  # type: ignore[no-any-return]


async def end_to_end(requests: int, rounds: int, clients: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db_file = str(Path(tmp) / "activity.sqlite")
        def plan_for(path: str) -> Plan:
            plan = plan_of([fake_model("m")], scheduler="fifo", log_level="warn")
            return dataclasses.replace(plan, settings=dataclasses.replace(
                plan.settings, storePath=path, storeMaxRows=requests + WARMUP * 2 + 10))

        targets = {"file": plan_for(db_file), ":memory:": plan_for(":memory:")}
        per_round = max(1, requests // rounds // clients)
        latencies: dict[str, list[float]] = {name: [] for name in targets}
        with llama_swap(targets["file"]) as a, llama_swap(targets[":memory:"]) as b:
            urls = {"file": a.url, ":memory:": b.url}
            for url in urls.values():  # load the model, warm the pools
                await drive(url + "/v1/chat/completions", BODY, 1, WARMUP, [])
            names = list(urls)
            for r in range(rounds):
                for name in names[r % 2:] + names[:r % 2]:
                    await drive(urls[name] + "/v1/chat/completions", BODY, clients, per_round,
                                latencies[name])
            statuses = {name: status_of(url) for name, url in urls.items()}
        rows = sqlite3.connect(db_file).execute("SELECT COUNT(*) FROM activity").fetchone()[0]
    print(f"end to end: {len(latencies['file'])} requests per target, {clients} client(s), "
          f"{rounds} rounds")
    print(f"  {'target':10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in latencies.items():
        print(f"  {name:10} {ms(values, 50)} {ms(values, 99)}")
    d50 = (percentile(latencies["file"], 50) - percentile(latencies[":memory:"], 50)) * 1000
    d99 = (percentile(latencies["file"], 99) - percentile(latencies[":memory:"], 99)) * 1000
    print(f"  file - :memory:  p50 {d50:+.3f} ms  p99 {d99:+.3f} ms")
    for name, st in statuses.items():
        print(f"  {name:10} store: state={st['state']} written={st['written']} "
              f"dropped={st['dropped']}")
    print(f"  rows in the file after shutdown: {rows}")


def finished_meter() -> ResponseMeter:
    meter = ResponseMeter()
    meter.start(200, {"Content-Type": "application/json"})
    meter.feed(ANSWER)
    meter.finish()
    return meter


async def in_process(requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, list[float]] = {}
        loop_cpu: dict[str, float] = {}
        stores: dict[str, ActivityStore | None] = {
            "file": ActivityStore(lambda: str(Path(tmp) / "a.sqlite"),
                                  lambda memory: Retention(requests * 2, None)),
            ":memory:": ActivityStore(lambda: ":memory:",
                                      lambda memory: Retention(requests * 2, None)),
            "disabled": None,
        }
        for name, store in stores.items():
            log = ActivityLog(lambda: 1000)
            if store is not None:
                log.continue_after(await store.open())
                log.sink = store.record
            times: list[float] = []
            cpu0 = time.thread_time()
            for i in range(requests):
                meter = finished_meter()
                t0 = time.perf_counter()
                log.record(started=time.time(), duration_ms=1.0, model="m",
                           req_path="/v1/chat/completions", meter=meter)
                times.append(time.perf_counter() - t0)
                if i % 100 == 0:
                    await asyncio.sleep(0)  # a loop turn, as between requests
            if store is not None:
                await store.flush()  # every entry rendered (on this thread) and written
            loop_cpu[name] = (time.thread_time() - cpu0) / requests
            if store is not None:
                await store.close()
            results[name] = times
    print(f"in process: ActivityLog.record, {requests} calls each")
    print(f"  {'store':10} {'p50 us':>8} {'p99 us':>8} {'mean us':>8} {'loop CPU us':>12}")
    for name, times in results.items():
        print(f"  {name:10} {percentile(times, 50) * 1e6:8.2f} {percentile(times, 99) * 1e6:8.2f}"
              f" {statistics.fmean(times) * 1e6:8.2f} {loop_cpu[name] * 1e6:12.2f}")
    print("  (loop CPU: the event loop thread's CPU per entry, recording and rendering it for "
          "the store included; the writer process's is its own)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(end_to_end(args.requests, args.rounds, args.clients))
    asyncio.run(in_process(args.requests))


if __name__ == "__main__":
    main()
