"""Load: many requests at high concurrency across three models, through a real `llama-swap`,
under `fifo` (with swaps) and `serial`.

What the figure answers: does every request get a definite answer, and does the proxy give
back what the run took?  A definite answer is a 200 whose body is complete (a plain chat
completion from the model that was asked for, or a stream read to its final
`data: [DONE]`), or a deliberate refusal: 429 (over a model's concurrencyLimit, fifo only)
or 503, each with an error body.  Anything else -- another status, a refused or reset
connection, a stream cut short, a body from the wrong model, a client timeout -- is an
indefinite answer, listed by kind; any of them makes the script exit non-zero.

How it is measured, and why this way:

- Real processes and real HTTP only: one `llama-swap` subprocess per scheduler (the bench
  harness), in front of three fake upstream servers (`swap-fake-upstream`, each request
  taking a few milliseconds of simulated token time).  Nothing is mocked, so what is
  counted is what a client on 127.0.0.1 would see.
- The three models share one exclusive group (swap on): only one can run at a time, so
  traffic spread over them forces swaps under both schedulers.  Under `fifo` each model
  has a small concurrencyLimit, so when a swap finishes and grants everything that
  waited for it, the excess is refused with 429: the deliberate-refusal path is exercised
  too.
- The client is asyncio + aiohttp with `--concurrency` workers (64), each sending its
  next request as soon as the previous one is answered; the model and plain/streamed
  choice are drawn from a seeded generator per worker.
- Leaks are looked for in the proxy process (psutil): open file descriptors and RSS after
  a warm-up (more requests than the proxy's in-memory activity ring holds, so bounded
  buffers are full before the baseline), right after the run, and after a short settle.
  Every sample is taken with the client's connections closed, so the counts compare like
  with like.  After the run the live child processes must equal the models `/running`
  reports loaded, `/metrics` must show nothing in flight, and after the proxy is stopped
  none of the children it had may be left.
- Swaps are counted from the proxy's upstream log (one "started pid" line per model
  start), which the harness captures from its stdout.

`--soak SECONDS` runs for that long instead of a fixed count: the same checks, and a line
of figures every 10 s (printed in the fixed-count mode too), for long runs on your own box.

Run: .venv/bin/python bench/load.py [--requests N] [--concurrency N]
     [--scheduler fifo|serial|both] [--soak SECONDS] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
from _runtime_harness import (  # type: ignore[import-not-found]
    Running,
    fake_model,
    is_store_writer,
    llama_swap,
    percentile,
    plan_of,
)

MODELS = ("a", "b", "c")
# fifo only (serial admits one request at a time): low enough that the burst of grants at the
# end of a swap goes over it now and then
LIMITS = {"a": 24, "b": 32, "c": 48}
TOKENS = 4
TOKEN_DELAY = "0.001"  # seconds per token in the fake upstream: a request takes ~4 ms of "work"
STREAM_SHARE = 0.3  # share of requests sent with "stream": true
REQUEST_TIMEOUT = 120.0  # client side; a request that takes longer counts as failed
WARMUP_PER_MODEL = 400  # 1200 in all: more than the activity ring keeps (metricsMaxInMemory 1000)
SETTLE = 2.0
REPORT_EVERY = 10.0
FD_TOLERANCE = 4  # upstream pool aside, a few descriptors may come and go (e.g. a pipe)
MODEL_START = re.compile(r"\[llama-swap\] \[([^\]]+)\] started pid (\d+)")
DELIBERATE = (429, 503)
EXPECTED_TEXT = "".join(f"tok{i} " for i in range(TOKENS))


@dataclass
class Tally:
    """Every answer, classified."""

    sent: int = 0
    ok_plain: int = 0
    ok_stream: int = 0
    deliberate: Counter[int] = field(default_factory=Counter)
    deliberate_sample: dict[int, str] = field(default_factory=dict)
    no_retry_after: int = 0  # 429s without a Retry-After header (noted, not a failure)
    failed: Counter[str] = field(default_factory=Counter)
    failed_sample: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # every answer, failures included
    ok_latencies: list[float] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return self.ok_plain + self.ok_stream + sum(self.deliberate.values()) + sum(
            self.failed.values())

    def fail(self, kind: str, detail: str) -> None:
        self.failed[kind] += 1
        self.failed_sample.setdefault(kind, detail[:300])


@dataclass
class Sample:
    """The proxy process at one moment."""

    fds: int
    pooled: int  # of which: TCP connections to the upstreams (the proxy's keep-alive pool)
    rss: int
    children: int

    @property
    def own(self) -> int:
        """The descriptors a leak would show in: every fd but the upstream keep-alive pool,
        whose size depends on how many requests the last loaded model had at once."""
        return self.fds - self.pooled


@dataclass
class Report:
    scheduler: str
    tally: Tally
    seconds: float
    swaps: int
    warmup_swaps: int
    before: Sample
    after: Sample
    settled: Sample
    early: Sample | None  # at the first line of figures (REPORT_EVERY s into the run)
    loaded: int
    inflight: int | None
    proxy_warnings: list[str]
    left_behind: list[int] = field(default_factory=list)
    started: int = 0  # model processes the proxy started, warm-up included
    alive_started: int = 0  # of which alive after the run (must equal `loaded`)
    exit_code: int | None = None  # the proxy's, after SIGTERM (None: it did not exit in 30 s)

    @property
    def problems(self) -> list[str]:
        out = []
        if self.tally.failed:
            out.append(f"{sum(self.tally.failed.values())} indefinite answer(s)")
        if self.tally.answered != self.tally.sent:
            out.append(f"{self.tally.sent - self.tally.answered} request(s) never classified")
        if self.settled.children != self.loaded:
            out.append(f"{self.settled.children} live child process(es) for {self.loaded} "
                       "loaded model(s)")
        if self.inflight:
            out.append(f"{self.inflight} request(s) still in flight after the settle")
        if self.alive_started != self.loaded:
            out.append(f"{self.alive_started} of the {self.started} model processes started "
                       f"are alive for {self.loaded} loaded model(s)")
        if self.exit_code != 0:
            out.append(f"the proxy's exit after SIGTERM: {self.exit_code}")
        if self.left_behind:
            out.append(f"process(es) left behind after the proxy stopped: {self.left_behind}")
        if self.settled.own - self.before.own > FD_TOLERANCE:
            out.append(f"file descriptors (upstream pool aside) grew by "
                       f"{self.settled.own - self.before.own}")
        return out


# -- the client ------------------------------------------------------------------------------

def body_of(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": TOKENS, "stream": stream}


def check_plain(data: bytes, model: str) -> str | None:
    """None when `data` is the complete answer of `model`; else what is wrong with it."""
    try:
        doc = json.loads(data)
        content = doc["choices"][0]["message"]["content"]
        served_by = doc["fake"]["model"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "body is not a complete chat completion"
    if served_by != model:
        return f"answered by model {served_by!r}, asked {model!r}"
    if content != EXPECTED_TEXT:
        return f"content {content!r}"
    return None


def check_stream(data: bytes, model: str) -> str | None:
    """None when `data` is a complete event stream of `model`; else what is wrong with it."""
    events = [e for e in data.split(b"\n\n") if e.strip()]
    if not events or events[-1].strip() != b"data: [DONE]":
        return f"stream does not end with data: [DONE] ({len(data)} bytes)"
    try:
        first = json.loads(events[0].removeprefix(b"data: "))
        served_by = first["fake"]["model"]
    except (ValueError, KeyError, TypeError):
        return "first event is not a chunk of the fake upstream"
    if served_by != model:
        return f"answered by model {served_by!r}, asked {model!r}"
    tokens = sum(b'"content": "tok' in e for e in events)
    if tokens != TOKENS or b'"finish_reason": "stop"' not in events[-2]:
        return f"stream has {tokens} of {TOKENS} tokens or no finish chunk"
    return None


async def one_request(session: aiohttp.ClientSession, url: str, model: str, stream: bool,
                      tally: Tally) -> None:
    tally.sent += 1
    t0 = time.perf_counter()
    try:
        async with session.post(url, json=body_of(model, stream)) as resp:
            data = await resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "")
            retry_after = resp.headers.get("Retry-After")
    except TimeoutError:
        tally.fail("client timeout", f"no complete answer within {REQUEST_TIMEOUT:.0f} s")
        return
    except aiohttp.ClientPayloadError as exc:
        tally.fail("body cut short", repr(exc))
        return
    except aiohttp.ClientError as exc:
        tally.fail(f"connection: {type(exc).__name__}", repr(exc))
        return
    finally:
        tally.latencies.append(time.perf_counter() - t0)
    if status == 200:
        if stream:
            wrong = check_stream(data, model) if "event-stream" in ctype else (
                f"streamed request answered with Content-Type {ctype!r}")
        else:
            wrong = check_plain(data, model)
        if wrong is not None:
            tally.fail("incomplete or wrong 200 (stream)" if stream else
                       "incomplete or wrong 200", wrong)
            return
        if stream:
            tally.ok_stream += 1
        else:
            tally.ok_plain += 1
        tally.ok_latencies.append(tally.latencies[-1])
    elif status in DELIBERATE and data.strip():
        tally.deliberate[status] += 1
        if status == 429 and not retry_after:
            tally.no_retry_after += 1
        tally.deliberate_sample.setdefault(status, data.decode("utf-8", "replace")[:200])
    else:
        tally.fail(f"HTTP {status}", data.decode("utf-8", "replace")[:200])


async def worker(session: aiohttp.ClientSession, url: str, rng: random.Random,
                 more: Callable[[], bool], tally: Tally,
                 models: tuple[str, ...] = MODELS) -> None:
    while more():
        await one_request(session, url, rng.choice(models), rng.random() < STREAM_SHARE, tally)


def new_session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


# -- the proxy, observed ---------------------------------------------------------------------

def sample(pid: int, upstreams: frozenset[int]) -> Sample:
    """`upstreams`: the models' ports."""
    proc = psutil.Process(pid)
    pooled = sum(1 for c in proc.net_connections("tcp") if c.raddr and c.raddr.port in upstreams)
    return Sample(proc.num_fds(), pooled, proc.memory_info().rss, live_children(proc))


def live_children(proc: psutil.Process) -> int:
    count = 0
    for kid in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            count += kid.status() != psutil.STATUS_ZOMBIE and not is_store_writer(kid)
    return count


def upstream_ports(plan: Any) -> frozenset[int]:
    return frozenset(int(m.proxy.rsplit(":", 1)[1]) for m in plan.models.values())


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        return await resp.json()


async def inflight_now(url: str) -> int | None:
    """`llamaswap_inflight_requests` from /metrics (None if the proxy does not publish it)."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("llamaswap_inflight_requests "):
            return int(float(line.split()[1]))
    return None


def model_starts(lines: list[str]) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for line in lines if (m := MODEL_START.search(line))]


def load_plan(scheduler: str) -> Any:
    models = [dataclasses.replace(fake_model(mid, "--token-delay", TOKEN_DELAY),
                                  concurrencyLimit=LIMITS[mid]) for mid in MODELS]
    # the three share plan_of's "(default)" group: swap and exclusive on, one model at a time;
    # warnings only, so the log is the upstream lines we count plus anything that went wrong
    return plan_of(models, scheduler=scheduler, log_level="warn", log_to_stdout="both")


# -- one scheduler's run ---------------------------------------------------------------------

def figures_line(elapsed: float, tally: Tally, last: tuple[int, int], pid: int,
                 ports: frozenset[int]) -> str:
    done, lat_at = tally.answered, last[1]
    window = tally.latencies[lat_at:]
    rate = (done - last[0]) / REPORT_EVERY
    try:
        s = sample(pid, ports)
        proc = f"fds {s.fds:3d} ({s.own} upstream pool aside)  rss {s.rss / 2**20:6.1f} MB  children {s.children}"
    except psutil.NoSuchProcess:
        proc = "proxy gone"
    return (f"    {elapsed:6.0f} s  {done:7d} answered  {rate:6.0f}/s  "
            f"200 {tally.ok_plain + tally.ok_stream}  429 {tally.deliberate[429]}  "
            f"503 {tally.deliberate[503]}  failed {sum(tally.failed.values())}  "
            f"p99 {percentile(window, 99) * 1000:7.1f} ms  {proc}")


async def progress(t0: float, tally: Tally, pid: int, ports: frozenset[int],
                   early: list[Sample]) -> None:
    """A line of figures every REPORT_EVERY s; the proxy as it is at the first one goes into
    `early` (growth from there on tells a leak from the first use of the mixed traffic)."""
    last = (0, 0)
    while True:
        await asyncio.sleep(REPORT_EVERY)
        if not early:
            with contextlib.suppress(psutil.NoSuchProcess):
                early.append(sample(pid, ports))
        print(figures_line(time.perf_counter() - t0, tally, last, pid, ports), flush=True)
        last = (tally.answered, len(tally.latencies))


async def warm_up(url: str, concurrency: int, seed: str) -> None:
    """Each model in turn (few swaps even under serial), plain and streamed, until the proxy's
    bounded buffers are full.  Failures here are printed, not counted: the run is what counts."""
    tally = Tally()
    for mid in MODELS:
        left = [WARMUP_PER_MODEL]

        def more(left: list[int] = left) -> bool:
            left[0] -= 1
            return left[0] >= 0

        async with new_session(concurrency) as session:
            await asyncio.gather(*(
                worker(session, f"{url}/v1/chat/completions", random.Random(f"{seed}:w:{i}"),
                       more, tally, (mid,))
                for i in range(concurrency)))
    if tally.failed:
        print(f"  warm-up: {dict(tally.failed)} (the run below is what counts)")


async def measure(ls: Running, ports: frozenset[int], scheduler: str, requests: int,
                  concurrency: int, soak: float | None, seed: int) -> Report:
    pid = ls.proc.pid
    await warm_up(ls.url, concurrency, f"{seed}:{scheduler}")
    await asyncio.sleep(SETTLE)
    mark = len(ls.output)
    warmup_swaps = len(model_starts(ls.output))
    before = sample(pid, ports)
    tally = Tally()
    t0 = time.perf_counter()
    if soak is None:
        budget = [requests]

        def more() -> bool:
            budget[0] -= 1
            return budget[0] >= 0
    else:
        deadline = t0 + soak

        def more() -> bool:
            return time.perf_counter() < deadline

    early: list[Sample] = []
    ticker = asyncio.ensure_future(progress(t0, tally, pid, ports, early))
    try:
        async with new_session(concurrency) as session:
            await asyncio.gather(*(
                worker(session, f"{ls.url}/v1/chat/completions",
                       random.Random(f"{seed}:{scheduler}:{i}"), more, tally)
                for i in range(concurrency)))
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    seconds = time.perf_counter() - t0
    after = sample(pid, ports)
    await asyncio.sleep(SETTLE)
    settled = sample(pid, ports)
    running = await get_json(f"{ls.url}/running")
    loaded = sum(r.get("state") == "ready" for r in running.get("running", []))
    inflight = await inflight_now(ls.url)
    starts = model_starts(ls.output[mark:])
    warnings = [line.rstrip() for line in ls.output
                if line.startswith(("[WARN", "[ERROR", "[error"))]
    return Report(scheduler, tally, seconds, len(starts), warmup_swaps, before, after, settled,
                  early[0] if early else None, loaded, inflight, warnings)


def run_scheduler(scheduler: str, requests: int, concurrency: int, soak: float | None,
                  seed: int, runner: Callable[[Coroutine[Any, Any, Report]], Report]) -> Report:
    what = f"{soak:g} s soak" if soak is not None else f"{requests} requests"
    print(f"\nload: {scheduler}, {what}, {concurrency} concurrent, models {' '.join(MODELS)} "
          f"(one exclusive group), {STREAM_SHARE:.0%} streamed, seed {seed}", flush=True)
    plan = load_plan(scheduler)
    ports = upstream_ports(plan)
    with llama_swap(plan, capture=True) as ls:
        report = runner(measure(ls, ports, scheduler, requests, concurrency, soak, seed))
        started = [p for _, p in model_starts(ls.output)]
        report.started = len(started)
        report.alive_started = len(alive(started, ports))
        # stop the proxy ourselves (the harness would SIGKILL what it left): a model process
        # it started that is alive once it has exited is one its own shutdown left behind
        ls.proc.send_signal(signal.SIGTERM)
        try:
            report.exit_code = ls.proc.wait(30)
        except subprocess.TimeoutExpired:
            report.exit_code = None
        report.left_behind = alive(started, ports)
        for pid in report.left_behind:  # reparented, so the harness would not find them
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                psutil.Process(pid).kill()
    print_report(report)
    return report


# -- the report ------------------------------------------------------------------------------

def alive(pids: list[int], ports: frozenset[int]) -> list[int]:
    """The pids in `pids` that are still one of this run's model processes.  A pid alone is
    not enough: a run under serial starts thousands of processes, and where pid_max is 32768
    the numbers come round again and may belong to anything by the end (seen here: a kernel
    worker).  A live fake upstream on one of this run's ports can only be ours."""
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc = psutil.Process(pid)
            argv = proc.cmdline()
            if proc.status() == psutil.STATUS_ZOMBIE or not any(
                    a.endswith("swap-fake-upstream") for a in argv[:2]):
                continue
            at = argv.index("--port") if "--port" in argv else -1
            if 0 <= at < len(argv) - 1 and argv[at + 1].isdigit() and int(argv[at + 1]) in ports:
                out.append(pid)
    return sorted(set(out))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB"


def print_report(r: Report) -> None:
    t = r.tally
    ok = t.ok_plain + t.ok_stream
    print(f"  {t.answered} answered of {t.sent} sent in {r.seconds:.1f} s "
          f"({t.answered / r.seconds:.0f} req/s)")
    print(f"  200 {ok} (plain {t.ok_plain}, streamed {t.ok_stream} read to data: [DONE])  "
          f"429 {t.deliberate[429]}  503 {t.deliberate[503]}  "
          f"indefinite {sum(t.failed.values())}")
    for status, text in sorted(t.deliberate_sample.items()):
        print(f"    {status} body, e.g.: {text.strip()}")
    if t.deliberate[429]:
        print(f"    429s without Retry-After: {t.no_retry_after}")
    for kind, count in t.failed.most_common():
        print(f"    FAILED {kind}: {count}, e.g.: {t.failed_sample[kind]}")
    print(f"  latency, every answer: p50 {ms(percentile(t.latencies, 50))}  "
          f"p99 {ms(percentile(t.latencies, 99))}  max {ms(max(t.latencies, default=0.0))}")
    print(f"  latency, 200s only:    p50 {ms(percentile(t.ok_latencies, 50))}  "
          f"p99 {ms(percentile(t.ok_latencies, 99))}  max {ms(max(t.ok_latencies, default=0.0))}")
    print(f"  swaps (model starts) during the run: {r.swaps}  (warm-up: {r.warmup_swaps})")
    b, a, s = r.before, r.after, r.settled
    print(f"  proxy fds: before {b.fds}, right after {a.fds}, after {SETTLE:g} s {s.fds}"
          f"  -> growth {s.fds - b.fds:+d}")
    print(f"    upstream keep-alive pool aside: before {b.own}, right after {a.own}, after "
          f"{SETTLE:g} s {s.own}  -> growth {s.own - b.own:+d}  (pool: {b.pooled}, {a.pooled}, "
          f"{s.pooled} connections)")
    print(f"  proxy RSS: before {mb(b.rss)}, right after {mb(a.rss)}, after {SETTLE:g} s "
          f"{mb(s.rss)}  -> growth {(s.rss - b.rss) / 2**20:+.1f} MB")
    if r.early is not None:
        print(f"    since {REPORT_EVERY:g} s into the run ({mb(r.early.rss)}, "
              f"{r.early.own} fds upstream pool aside): RSS {(s.rss - r.early.rss) / 2**20:+.1f} MB"
              f" over {r.seconds - REPORT_EVERY:.0f} s")
    print(f"  child processes after the run: {s.children} alive, {r.loaded} model(s) loaded "
          f"(/running); in flight (/metrics): {r.inflight}")
    print(f"  model processes started (warm-up included): {r.started}, alive after the run: "
          f"{r.alive_started}")
    print(f"  proxy stopped with SIGTERM: exit code {r.exit_code}; " + (
        f"LEFT BEHIND {r.left_behind}" if r.left_behind else "none of its model processes left"))
    for line in r.proxy_warnings[:10]:
        print(f"    proxy log: {line}")
    problems = r.problems
    print("  verdict: " + ("OK" if not problems else "PROBLEM: " + "; ".join(problems)),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--scheduler", choices=("fifo", "serial", "both"), default="both")
    parser.add_argument("--soak", type=float, metavar="SECONDS",
                        help="run for SECONDS instead of a fixed number of requests")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    try:  # the client on uvloop when installed, as the proxy runs: it takes less of the CPU
        import uvloop

        runner: Callable[[Coroutine[Any, Any, Report]], Report] = uvloop.run
    except ImportError:
        runner = asyncio.run
    schedulers = ("fifo", "serial") if args.scheduler == "both" else (args.scheduler,)
    reports = [run_scheduler(s, args.requests, args.concurrency, args.soak, args.seed, runner)
               for s in schedulers]
    bad = [r.scheduler for r in reports if r.problems]
    print("\nload: " + ("every request got a definite answer, nothing leaked" if not bad
                        else f"PROBLEMS under {', '.join(bad)}"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
