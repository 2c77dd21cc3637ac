"""What the side-by-side suite measures on each target, and the figures it keeps.

A `Target` is one way to reach an upstream: straight ("direct"), or through a proxy
whose processes are charged for CPU and memory.  Each workload runs every target in
`rounds` slices whose order rotates, so a burst of load from the shared machine hits
all of them alike; the slices' figures are pooled into one `Row` per target.

The load generators: bench/_lean_client.py for plain requests (an asyncio protocol
that costs the client far less CPU than the proxies under test), aiohttp for
streams (each read's arrival time is what is measured) and for swaps.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import psutil
from _lean_client import drive  # type: ignore[import-not-found]
from _peers import cpu_seconds, peak_rss  # type: ignore[import-not-found]
from _runtime_harness import percentile  # type: ignore[import-not-found]


@dataclass
class Target:
    name: str
    url: str  # base URL, no trailing slash
    model: str
    procs: list[psutil.Process] = field(default_factory=list)  # the proxy's; [] for direct
    headers: dict[str, str] = field(default_factory=dict)
    scale: float = 1.0  # share of the request count it gets (a slow peer gets fewer)


@dataclass
class Row:
    """One target's figures on one workload."""

    workload: str
    target: str
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    errors: int = 0
    error_sample: str = ""
    seconds: float = 0.0  # timed wall time
    cpu: float | None = None  # proxy CPU seconds over the timed part
    rss: int | None = None  # proxy peak RSS, bytes
    extra: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # per answer, for `extra`

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def cpu_per_1000(self) -> float | None:
        if self.cpu is None or not self.requests:
            return None
        return self.cpu / self.requests * 1000

    def as_dict(self) -> dict[str, object]:
        return {
            "workload": self.workload, "target": self.target, "requests": self.requests,
            "errors": self.errors, "error_sample": self.error_sample,
            "p50_ms": self.p(50) * 1000, "p90_ms": self.p(90) * 1000,
            "p99_ms": self.p(99) * 1000, "rps": self.rps,
            "proxy_cpu_s_per_1000": self.cpu_per_1000,
            "proxy_peak_rss_mb": None if self.rss is None else self.rss / 2**20,
            **self.extra,
        }


Slice = Callable[[Target, Row, int], Awaitable[None]]


async def side_by_side(workload: str, targets: list[Target], total: int, rounds: int,
                       one_slice: Slice) -> dict[str, Row]:
    """Run `one_slice(target, row, count)` for every target, `rounds` times in rotating
    order, charging each target's processes for the CPU its slices took."""
    rows = {t.name: Row(workload, t.name) for t in targets}
    for t in targets:
        rows[t.name].cpu = 0.0 if t.procs else None
    for rnd in range(rounds):
        shift = rnd % len(targets)
        for t in targets[shift:] + targets[:shift]:
            count = max(1, round(total * t.scale / rounds))
            before = cpu_seconds(t.procs)
            t0 = time.perf_counter()
            await one_slice(t, rows[t.name], count)
            rows[t.name].seconds += time.perf_counter() - t0
            if t.procs:
                rows[t.name].cpu = (rows[t.name].cpu or 0.0) + cpu_seconds(t.procs) - before
    for t in targets:
        if t.procs:
            rows[t.name].rss = peak_rss(t.procs)
    return rows


def chat_body(model: str, **more: object) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 1, **more}).encode()


def plain_slice(clients: int, body_of: Callable[[Target], bytes],
                path: str = "chat/completions") -> Slice:
    """`count` plain requests over `clients` keep-alive connections (lean client)."""

    async def run(t: Target, row: Row, count: int) -> None:
        errors: list[str] = []
        per = max(1, count // clients)
        await drive(f"{t.url}/v1/{path}", body_of(t), clients, per, row.latencies, errors,
                    t.headers)
        row.errors += len(errors)
        if errors and not row.error_sample:
            row.error_sample = errors[0][:200]

    return run


async def warm(targets: list[Target], clients: int, body_of: Callable[[Target], bytes],
               path: str = "chat/completions") -> None:
    """Open the connections and load whatever a first request loads."""
    for t in targets:
        await drive(f"{t.url}/v1/{path}", body_of(t), clients, max(2, 64 // clients),
                    [], [], t.headers)


def stream_slice(tokens: int) -> Slice:
    """Streamed chat of `tokens` tokens, one at a time: time to first chunk, the gaps
    between reads, the SSE events per answer and tokens/s delivered."""

    async def run(t: Target, row: Row, count: int) -> None:
        body = {"model": t.model, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": tokens, "ignore_eos": True, "stream": True,
                "temperature": 0, "seed": 1}  # the same tokens, so the same chunks, each time
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(count):
                try:
                    await one_stream(session, t, body, row)
                except (aiohttp.ClientError, RuntimeError) as exc:
                    row.errors += 1
                    row.error_sample = row.error_sample or repr(exc)[:200]

    return run


async def one_stream(session: aiohttp.ClientSession, t: Target, body: dict[str, object],
                     row: Row) -> None:
    t0 = time.perf_counter()
    arrivals: list[float] = []
    async with session.post(f"{t.url}/v1/chat/completions", json=body,
                            headers=t.headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:100]}")
        received = bytearray()
        async for data in resp.content.iter_any():
            arrivals.append(time.perf_counter())
            received += data
        events = received.count(b"data:")
    end = time.perf_counter()
    row.latencies.append(end - t0)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    for key, value in (("ttfb_ms", (arrivals[0] - t0) * 1000 if arrivals else 0.0),
                       ("gap_ms", sum(gaps) / len(gaps) * 1000 if gaps else 0.0),
                       ("events", float(events)), ("reads", float(len(arrivals))),
                       ("tokens_per_s", events / (end - t0))):
        row.samples.setdefault(key, []).append(value)


def finish_extra(row: Row) -> None:
    """The median over the answers of each per-answer figure `one_stream` kept (a median: on
    a shared machine one slow answer would move a mean far)."""
    row.extra = {k: statistics.median(v) for k, v in row.samples.items() if v}


async def first_byte(session: aiohttp.ClientSession, url: str, model: str,
                     headers: dict[str, str] | None = None) -> float:
    """Seconds from sending a small chat request to its response head."""
    t0 = time.perf_counter()
    async with session.post(f"{url}/v1/chat/completions", data=chat_body(model),
                            headers={"Content-Type": "application/json", **(headers or {})}
                            ) as resp:
        elapsed = time.perf_counter() - t0
        text = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {text[:200]!r}")
    return elapsed


async def alternate(url: str, models: tuple[str, str], swaps: int, procs: list[psutil.Process],
                    row: Row) -> None:
    """Requests alternating between two models (each one a swap): request to first byte."""
    async with aiohttp.ClientSession() as session:
        await first_byte(session, url, models[0])  # load the first model
        before = cpu_seconds(procs)
        t0 = time.perf_counter()
        for i in range(swaps):
            try:
                row.latencies.append(await first_byte(session, url, models[(i + 1) % 2]))
            except (aiohttp.ClientError, RuntimeError) as exc:
                row.errors += 1
                row.error_sample = row.error_sample or repr(exc)[:200]
        row.seconds = time.perf_counter() - t0
        if procs:
            row.cpu = cpu_seconds(procs) - before
            row.rss = peak_rss(procs)
