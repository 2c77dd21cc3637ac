"""Hot-reload figures: printed, never asserted.

1. Reload latency: time from a fragment write to the new plan serving requests, on a
   1,000-model config in 100 fragments, with the file watcher's debounce included
   (target < 400 ms).  Each round rewrites one fragment, giving the always-running
   model a new alias, and polls a request for that alias until it succeeds: that
   request can only be routed by the new plan, and no model start is timed.
   Also shown: when `/api/config/status` first reports the new digest.
2. Steadiness: a client sends requests back to back to an unchanged model while the
   config is reloaded 20 times (models added, changed, removed in other fragments);
   every failed request is counted (target 0).

Run: `.venv/bin/python bench/reload.py [--models 1000] [--fragments 100] [--rounds 10]
[--reloads 20] [--poll S]` (needs `llama-swap` and `swap-fake-upstream` on the venv).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from _runtime_harness import free_port, stop_process  # type: ignore[import-not-found]

BIN = Path(sys.executable).parent
FAKE = str(BIN / "swap-fake-upstream")
LLAMA_SWAP = str(BIN / "llama-swap")
STEADY = "steady"


class Config:
    """100 fragments of 10 models each; fragment 0 holds the always-running model."""

    def __init__(self, root: Path, models: int, fragments: int) -> None:
        self.root = root
        self.dir = root / "conf.d"
        self.dir.mkdir()
        self.config = root / "config.yaml"
        self.config.write_text("healthCheckTimeout: 30\nlogLevel: info\n")
        self.per = max(1, models // fragments)
        self.fragments = fragments
        self.steady_port = free_port()
        self.extra: dict[int, list[str]] = {i: [] for i in range(fragments)}
        self.steady_aliases: list[str] = []
        for i in range(fragments):
            self.write(i)

    def model_block(self, mid: str, port: int, ttl: int = 0, aliases: list[str] | None = None) -> str:
        lines = [
            f"  {mid}:",
            f"    cmd: {FAKE} --port {port} --model {mid}",
            f"    proxy: http://127.0.0.1:{port}",
        ]
        if ttl:
            lines.append(f"    ttl: {ttl}")
        if aliases:
            lines.append(f"    aliases: [{', '.join(aliases)}]")
        return "\n".join(lines)

    def text(self, i: int, ttl: int = 0) -> str:
        blocks = ["models:"]
        for j in range(self.per):
            n = i * self.per + j
            if n == 0:
                blocks.append(self.model_block(STEADY, self.steady_port, aliases=self.steady_aliases))
            else:
                blocks.append(self.model_block(f"m{n:04d}", 20000 + n, ttl=ttl if j == 1 else 0))
        blocks.extend(self.extra[i])
        return "\n".join(blocks) + "\n"

    def path(self, i: int) -> Path:
        return self.dir / f"{i:03d}-models.yaml"

    def write(self, i: int, ttl: int = 0) -> None:
        """Save the way editors do: write a temp file, rename it over the fragment."""
        tmp = self.dir / f".{i:03d}.tmp"
        tmp.write_text(self.text(i, ttl))
        os.replace(tmp, self.path(i))


TIMING = re.compile(r"compiled in (\d+) ms, applied in (\d+) ms")
OUTPUT: list[str] = []


def start_proxy(cfg: Config, poll: float | None) -> tuple[subprocess.Popen[bytes], str]:
    args = [LLAMA_SWAP, "--config", str(cfg.config), "--config-dir", str(cfg.dir),
            "--listen", "127.0.0.1:0", "--watch-config"]
    if poll:
        args += ["--watch-poll", str(poll)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            OUTPUT.append(line)
            if not found and "listening on" in line and line.startswith("llama-swap:"):
                found.append(line.split("listening on", 1)[1].split()[0])
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(120) or not found:
        proc.kill()
        raise SystemExit("llama-swap did not start")
    return proc, found[0]


async def chat(s: aiohttp.ClientSession, url: str, model: str) -> int:
    async with s.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
    ) as resp:
        await resp.read()
        return resp.status


async def digest(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(f"{url}/api/config/status") as resp:
        return str((await resp.json())["digest"])


async def latency_rounds(s: aiohttp.ClientSession, url: str, cfg: Config, rounds: int) -> None:
    served: list[float] = []
    for k in range(rounds):
        alias = f"gen-{k}"
        cfg.steady_aliases = [alias]
        t0 = time.perf_counter()
        cfg.write(0)
        while await chat(s, url, alias) != 200:
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"round {k}: the new plan was not served within 30 s")
            await asyncio.sleep(0.01)  # gentle: the client shares the proxy's CPU
        served.append(time.perf_counter() - t0)
        await asyncio.sleep(0.3)  # let the watcher settle before the next round
    ms = [x * 1000 for x in served]
    print(f"reload latency, write -> new plan serving ({len(ms)} rounds, debounce included):")
    print(f"  p50 {statistics.median(ms):7.1f} ms   max {max(ms):7.1f} ms   min {min(ms):7.1f} ms"
          f"   (target < 400 ms)")
    timings = [tuple(map(int, m.groups())) for line in OUTPUT if (m := TIMING.search(line))]
    if timings:
        comp = [c for c, _ in timings]
        appl = [a for _, a in timings]
        print(f"  of which (proxy log): compile+digest p50 {statistics.median(comp)} ms,"
              f" apply on the run loop p50 {statistics.median(appl)} ms; the rest is the"
              " 200 ms debounce, event delivery and the client's 10 ms polling")


async def steady_during_reloads(
    s: aiohttp.ClientSession, url: str, cfg: Config, reloads: int
) -> dict[str, Any]:
    """Returns the figures it prints (the side-by-side suite, bench/__main__.py, reports
    them): ok/failed counts, the ok requests' latencies (s), the first failures, the time."""
    stop = asyncio.Event()
    counts = {"ok": 0, "failed": 0}
    failures: list[str] = []
    latencies: list[float] = []

    async def client() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                code = await chat(s, url, STEADY)
            except aiohttp.ClientError as exc:
                code, detail = 0, repr(exc)
            else:
                detail = f"HTTP {code}"
            if code == 200:
                counts["ok"] += 1
                latencies.append(time.perf_counter() - t0)
            else:
                counts["failed"] += 1
                failures.append(detail)

    task = asyncio.ensure_future(client())
    t0 = time.perf_counter()
    for k in range(reloads):
        before = await digest(s, url)
        kind = k % 3
        # adds go to fragment 1 + k, and the removal two reloads later to the same one
        i = 1 + (k - 2 if kind == 2 else k) % (cfg.fragments - 1)
        if kind == 0:  # add a model to a fragment
            port = 30000 + k
            cfg.extra[i].append(cfg.model_block(f"added-{k}", port))
            cfg.write(i)
        elif kind == 1:  # change a model (ttl: applied live)
            cfg.write(i, ttl=60 + k)
        else:  # remove the model added two reloads ago
            cfg.extra[i] = []
            cfg.write(i)
        deadline = time.perf_counter() + 30
        while await digest(s, url) == before:
            if time.perf_counter() > deadline:
                raise SystemExit(f"reload {k} was not applied within 30 s")
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stop.set()
    await task
    print(f"steady client during {reloads} reloads ({elapsed:.1f} s):")
    print(f"  requests ok {counts['ok']}, failed {counts['failed']}   (target 0 failed)")
    for detail in failures[:5]:
        print(f"    {detail}")
    return {**counts, "latencies": latencies, "failures": failures[:5], "seconds": elapsed}


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="reload-bench-") as tmp:
        cfg = Config(Path(tmp), args.models, args.fragments)
        t0 = time.perf_counter()
        proc, url = start_proxy(cfg, args.poll)
        print(f"{cfg.per * cfg.fragments} models in {cfg.fragments} fragments; "
              f"proxy up in {time.perf_counter() - t0:.2f} s"
              + (f"; polling every {args.poll:g} s" if args.poll else "; inotify"))
        try:
            async with aiohttp.ClientSession() as s:
                assert await chat(s, url, STEADY) == 200  # start the always-running model
                await latency_rounds(s, url, cfg, args.rounds)
                await steady_during_reloads(s, url, cfg, args.reloads)
        finally:
            stop_process(proc, grace=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--fragments", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--reloads", type=int, default=20)
    p.add_argument("--poll", type=float, default=None, help="use --watch-poll S")
    args: Any = p.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
