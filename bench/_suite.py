"""The sections of `python -m bench all`: what is started, and which workloads run on it.

1. `front`: one upstream of each kind -- the fake upstream (for the highest request
   rates), a real llama-server with a tiny generated model (chat and streams), and one
   started with `--embeddings` -- reached directly, through llama-swap (fast path and
   `--no-fast-path`), through nginx and through LiteLLM's proxy.  Each llama-swap runs
   its own copies of the upstreams (it starts them); direct, nginx and LiteLLM share the
   fast-path instance's, so all proxies see the same kind of upstream.
2. `swaps`: requests alternating between two tiny llama-server models under llama-swap's
   `serial`, under `fifo` with a swap group, and through llama.cpp's router mode
   (`--models-max 1`); next to them, the upstream's own cold start plus one inference.
3. `reload`: a steady client while a 1,000-model config is hot reloaded (bench/reload.py).
4. `compile`: 1,000 models in 100 fragments (bench/compile_speed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import aiohttp
import compile_speed  # type: ignore[import-not-found]
import psutil
import reload as reload_bench  # type: ignore[import-not-found]
from _measure import (  # type: ignore[import-not-found]
    Row,
    Target,
    chat_body,
    finish_extra,
    first_byte,
    plain_slice,
    side_by_side,
    stream_slice,
    warm,
)
from _nginx_peer import nginx  # type: ignore[import-not-found]
from _peers import (  # type: ignore[import-not-found]
    MASTER_KEY,
    cpu_seconds,
    litellm,
    llama_router,
    llama_server_args,
    peak_rss,
    spawned,
    tiny_model,
    wait_http,
)
from _runtime_harness import (  # type: ignore[import-not-found]
    fake_model,
    free_port,
    llama_swap,
    plan_of,
    proxy_processes,
)

from llama_swap.compiler.plan import Group, Model, Plan, Routing, Settings


@dataclass
class Config:
    quick: bool
    chat_concurrency: tuple[int, ...]
    chat_requests: int
    real_requests: int
    streams: int
    big_requests: int
    embed_requests: int
    swaps: int
    rounds: int
    reload_models: int
    reload_fragments: int
    reloads: int
    compile_runs: int
    litellm_share: float = 0.1  # of the request count: it serves ~50 req/s on these machines
    baseline: str | None = None  # another build's llama-swap, for a change's before/after

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(True, (1, 32), 600, 60, 6, 6, 2, 6, 2, 200, 20, 4, 1)
        return cls(False, (1, 8, 32, 128), 3000, 300, 20, 30, 6, 20, 5, 1000, 100, 12, 3)


@dataclass
class Peers:
    """What is available to compare with, and why something is not."""

    binary: Path | None  # llama-server
    nginx: str | None
    litellm: Path | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Results:
    chat: dict[int, list[Row]] = field(default_factory=dict)
    real: dict[int, list[Row]] = field(default_factory=dict)
    stream: list[Row] = field(default_factory=list)
    big: list[Row] = field(default_factory=list)
    embed: list[Row] = field(default_factory=list)
    swaps: list[Row] = field(default_factory=list)
    cold: Row | None = None
    reload: list[Row] = field(default_factory=list)
    compile: list[Row] = field(default_factory=list)


def say(text: str) -> None:
    print(text, flush=True)


def llama_model(mid: str, binary: Path, gguf: Path, *extra: str) -> Model:
    port = free_port()
    return Model(id=mid, cmd=tuple(llama_server_args(binary, gguf, port, "--alias", mid, *extra)),
                 cmdStop=None, proxy=f"http://127.0.0.1:{port}", checkEndpoint="/health",
                 ttl=0, concurrencyLimit=1000)


def plan_with(models: list[Model], scheduler: str, group: Group) -> Plan:
    return Plan(settings=Settings(healthCheckTimeout=60, logLevel="warn", logToStdout="proxy"),
                routing=Routing(scheduler=scheduler, groups=MappingProxyType({group.name: group})),
                models=MappingProxyType({m.id: m for m in models}))


def front_models(binary: Path | None, ggufs: dict[str, Path]) -> list[Model]:
    models = [fake_model("fake")]
    if binary is not None and ggufs:
        # every proxy keeps idle keep-alive connections to these shared servers, and
        # llama-server serves one connection per HTTP thread: enough threads that the
        # other proxies' idle pools never starve the one being measured
        http = ("--threads-http", "64")
        models += [llama_model("tiny", binary, ggufs["tiny"], *http),
                   llama_model("stream", binary, ggufs["small"], *http),
                   llama_model("embed", binary, ggufs["tiny"], *http, "--embeddings",
                               "--pooling", "mean")]
    return models


async def load_all(url: str, models: list[Model]) -> None:
    async with aiohttp.ClientSession() as s:
        for m in models:
            if m.id == "embed":
                async with s.post(f"{url}/v1/embeddings", json={"model": m.id, "input": "x"}) as r:
                    await r.read()
            else:
                await first_byte(s, url, m.id)


def print_rows(rows: dict[str, Row]) -> None:
    direct = rows.get("direct")
    for r in rows.values():
        ratio = ""
        if direct is not None and r is not direct and r.latencies and direct.latencies:
            ratio = (f"  p50 {(r.p(50) - direct.p(50)) * 1000:+.3f} ms,"
                     f" {r.rps / direct.rps * 100:.0f}% of direct req/s")
        cpu = f"  cpu {r.cpu_per_1000:.3f} s/1k" if r.cpu_per_1000 is not None else ""
        say(f"    {r.target:28s} p50 {r.p(50) * 1000:8.3f} ms  p99 {r.p(99) * 1000:8.3f} ms"
            f"  {r.rps:8.0f} req/s  errors {r.errors}{cpu}{ratio}")


async def front(cfg: Config, peers: Peers, res: Results, work: Path) -> None:
    ggufs = {size: tiny_model(work / f"{size}.gguf", 1, size) for size in ("tiny", "small")
             } if peers.binary else {}
    fast_models = front_models(peers.binary, ggufs)
    plain_models = front_models(peers.binary, ggufs)
    everyone = Group("all", tuple(m.id for m in fast_models), swap=False, exclusive=False)
    with contextlib.ExitStack() as stack:
        fast = stack.enter_context(llama_swap(plan_with(fast_models, "fifo", everyone)))
        plain = stack.enter_context(
            llama_swap(plan_with(plain_models, "fifo", everyone), "--no-fast-path"))
        await load_all(fast.url, fast_models)
        await load_all(plain.url, plain_models)
        fast_procs, plain_procs = proxy_processes(fast.proc.pid), proxy_processes(plain.proc.pid)
        upstream = {m.id: m.proxy for m in fast_models}
        nginx_urls: dict[str, tuple[str, list[psutil.Process]]] = {}
        if peers.nginx:
            for mid, base in upstream.items():
                url, pid = stack.enter_context(nginx(base.removeprefix("http://")))
                master = psutil.Process(pid)
                nginx_urls[mid] = (url, [master, *master.children()])
        lite = None
        if peers.litellm:
            say("  starting LiteLLM's proxy")
            lite = stack.enter_context(litellm(peers.litellm, upstream, work))
        lite_procs = lite.processes() if lite else []

        def targets(mid: str, litellm_share: float) -> list[Target]:
            ts = [Target("direct", upstream[mid], mid),
                  Target("llama-swap", fast.url, mid, fast_procs),
                  Target("llama-swap --no-fast-path", plain.url, mid, plain_procs)]
            if mid in nginx_urls:
                ts.append(Target("nginx", nginx_urls[mid][0], mid, nginx_urls[mid][1]))
            if lite is not None:
                ts.append(Target("LiteLLM", lite.url, mid, lite_procs,
                                 {"Authorization": f"Bearer {MASTER_KEY}"}, litellm_share))
            return ts

        def small(t: Target) -> bytes:
            return chat_body(t.model)

        say("  small non-streaming chat, fake upstream (lean client)")
        chat_targets = targets("fake", cfg.litellm_share)
        for clients in cfg.chat_concurrency:
            await warm(chat_targets, clients, small)
            rows = await side_by_side(f"chat, {clients} concurrent", chat_targets,
                                      cfg.chat_requests, cfg.rounds, plain_slice(clients, small))
            say(f"   {clients} concurrent")
            print_rows(rows)
            res.chat[clients] = list(rows.values())

        say("  1 MB prompt, fake upstream")
        big_text = "x" * (1 << 20)

        def big(t: Target) -> bytes:
            return json.dumps({"model": t.model, "max_tokens": 1,
                               "messages": [{"role": "user", "content": big_text}]}).encode()

        rows = await side_by_side("1 MB prompt", targets("fake", 0.5), cfg.big_requests,
                                  cfg.rounds, plain_slice(1, big))
        print_rows(rows)
        res.big = list(rows.values())

        if peers.binary is None:
            return
        say("  small chat, real llama-server (tiny model, max_tokens 1)")
        real_targets = targets("tiny", 0.3)
        for clients in (1, 8) if not cfg.quick else (1,):
            await warm(real_targets, clients, small)
            rows = await side_by_side(f"chat llama-server, {clients} concurrent", real_targets,
                                      cfg.real_requests, cfg.rounds, plain_slice(clients, small))
            say(f"   {clients} concurrent")
            print_rows(rows)
            res.real[clients] = list(rows.values())

        say("  streaming 256 tokens, real llama-server (small model: tokens ms apart)")
        rows = await side_by_side("stream 256 tokens", targets("stream", 1.0), cfg.streams,
                                  cfg.rounds, stream_slice(256))
        for r in rows.values():
            finish_extra(r)
        print_rows(rows)
        res.stream = list(rows.values())

        say("  embeddings of 1,000 inputs, real llama-server --embeddings")
        inputs = [f"input number {i}" for i in range(1000)]

        def embed(t: Target) -> bytes:
            return json.dumps({"model": t.model, "input": inputs}).encode()

        rows = await side_by_side("embeddings, 1,000 inputs", targets("embed", 1.0),
                                  cfg.embed_requests, cfg.rounds,
                                  plain_slice(1, embed, "embeddings"))
        print_rows(rows)
        res.embed = list(rows.values())


async def cold_start(binary: Path, gguf: Path, runs: int) -> Row:
    """The upstream alone: spawn llama-server, poll /health every 2 ms, send one request;
    spawn to first byte (and, in `start_ms`, spawn to /health 200)."""
    row = Row("swap", "llama-server alone: cold start + 1 inference")
    starts = []
    async with aiohttp.ClientSession() as s:
        for _ in range(runs):
            port = free_port()
            t0 = time.perf_counter()
            with spawned(llama_server_args(binary, gguf, port, "--alias", "alpha")) as proc:
                url = f"http://127.0.0.1:{port}"
                await asyncio.to_thread(wait_http, f"{url}/health", proc, 60, None, 0.002)
                starts.append(time.perf_counter() - t0)
                await first_byte(s, url, "alpha")
                row.latencies.append(time.perf_counter() - t0)
    starts.sort()
    row.extra["start_ms"] = starts[len(starts) // 2] * 1000
    return row


async def swaps(cfg: Config, peers: Peers, res: Results, work: Path) -> None:
    if peers.binary is None:
        return
    models_dir = work / "models"
    models_dir.mkdir()
    alpha, beta = tiny_model(models_dir / "alpha.gguf", 1), tiny_model(models_dir / "beta.gguf", 2)

    def pair() -> list[Model]:
        assert peers.binary is not None
        return [llama_model("alpha", peers.binary, alpha), llama_model("beta", peers.binary, beta)]

    with contextlib.ExitStack() as stack:
        serial = stack.enter_context(llama_swap(plan_of(pair(), "serial", "warn")))
        fifo = stack.enter_context(llama_swap(
            plan_with(pair(), "fifo", Group("pair", ("alpha", "beta")))))
        router = stack.enter_context(llama_router(peers.binary, models_dir))
        targets = []
        if cfg.baseline is not None:
            base = stack.enter_context(
                llama_swap(plan_of(pair(), "serial", "warn"), exe=cfg.baseline))
            targets.append(Target("baseline build (serial)", base.url, "alpha",
                                  proxy_processes(base.proc.pid)))
        targets += [
            Target("llama-swap (serial)", serial.url, "alpha", proxy_processes(serial.proc.pid)),
            Target("llama-swap (fifo, swap group)", fifo.url, "alpha",
                   proxy_processes(fifo.proc.pid)),
            Target("llama.cpp router (--models-max 1)", router.url, "alpha",
                   [psutil.Process(p) for p in router.pids]),
        ]

        async def alternating(t: Target, row: Row, count: int) -> None:
            async with aiohttp.ClientSession() as s:
                await first_byte(s, t.url, "alpha")
                for i in range(count):
                    try:
                        row.latencies.append(
                            await first_byte(s, t.url, ("beta", "alpha")[i % 2]))
                    except (aiohttp.ClientError, RuntimeError) as exc:
                        row.errors += 1
                        row.error_sample = row.error_sample or repr(exc)[:200]

        rows = await side_by_side("swap", targets, cfg.swaps, cfg.rounds, alternating)
    # the router's children come and go with each swap: its peak RSS is the parent's only
    res.cold = await cold_start(peers.binary, alpha, max(3, cfg.swaps // 2))
    print_rows({**rows, "cold": res.cold})
    res.swaps = list(rows.values())


async def hot_reload(cfg: Config, res: Results, work: Path) -> None:
    (work / "reload").mkdir(exist_ok=True)
    conf = reload_bench.Config(work / "reload", cfg.reload_models, cfg.reload_fragments)
    proc, url = reload_bench.start_proxy(conf, None)
    try:
        ps = proxy_processes(proc.pid)
        async with aiohttp.ClientSession() as s:
            assert await reload_bench.chat(s, url, reload_bench.STEADY) == 200
            before = cpu_seconds(ps)
            figures = await reload_bench.steady_during_reloads(s, url, conf, cfg.reloads)
            after = cpu_seconds(ps)
        row = Row(f"hot reload under load ({cfg.reload_models} models, {cfg.reloads} reloads)",
                  "llama-swap", figures["latencies"], figures["failed"],
                  "; ".join(figures["failures"])[:200], figures["seconds"],
                  after - before, peak_rss(ps))
        print_rows({"llama-swap": row})
        res.reload = [row]
    finally:
        reload_bench.stop_process(proc, grace=30)


def compile_section(cfg: Config, res: Results, work: Path) -> None:
    target = work / "compile"
    compile_speed.generate(target, 1000, 100)
    times = compile_speed.time_compile(target, cfg.compile_runs)
    row = Row("compile 1,000 models in 100 fragments", "swap-compile (in-process)", times, 0,
              "", sum(times))
    say(f"    compile: p50 {sorted(times)[len(times) // 2] * 1000:.0f} ms")
    res.compile = [row]


SECTIONS = ("front", "swaps", "reload", "compile")


async def run(cfg: Config, peers: Peers, only: tuple[str, ...]) -> Results:
    res = Results()
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        work = Path(tmp)
        for name in only:
            say(f"[{name}]")
            t0 = time.perf_counter()
            try:
                if name == "front":
                    await front(cfg, peers, res, work)
                elif name == "swaps":
                    await swaps(cfg, peers, res, work)
                elif name == "reload":
                    await hot_reload(cfg, res, work)
                elif name == "compile":
                    await asyncio.to_thread(compile_section, cfg, res, work)
            except Exception as exc:  # keep what the other sections measured
                peers.notes.append(f"section {name} failed: {type(exc).__name__}: {exc}")
                say(f"  FAILED: {exc!r}")
            say(f"  ({time.perf_counter() - t0:.0f} s)")
    return res


def llama_server_version(binary: Path | None) -> str:
    if binary is None:
        return "not built"
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    first = (out.stdout + out.stderr).strip().splitlines()
    build = binary.parent.name.removeprefix("llama-server-")
    return f"{build} ({first[0] if first else '?'})"
