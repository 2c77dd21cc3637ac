#!/usr/bin/env python3
"""Proxy overhead against a real llama-server: latency straight to the upstream vs through
`llama-swap`, for plain and streamed chat, with 1, 4 and 32 concurrent clients (`--clients`).

Why: the fake upstream answers in microseconds and keeps connections alive; the real server
takes a few ms per request and closes the connection after every stream, which is what a
user's proxy really sees. Figures are printed, never asserted.

Needs the binary (`python scripts/build_llama_server.py`). Usage::

    python bench/real_llama.py [--requests 200] [--size tiny|small] [--max-tokens 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
from _peers import load_script  # type: ignore[import-not-found]
from _runtime_harness import free_port, stop_process  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[1]
LLAMA_SWAP = str(Path(sys.executable).parent / "llama-swap")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.02)
    raise SystemExit(f"{url} not healthy in {timeout} s")


RETRIES = {"count": 0}


async def one(
    session: aiohttp.ClientSession,
    fresh: aiohttp.ClientSession,
    url: str,
    stream: bool,
    max_tokens: int,
) -> float:
    """One request; latency in ms. Straight to llama-server, a keep-alive connection reused
    after a stream is dead, so (like the proxy) the client retries once on a fresh
    connection; retries are counted."""
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    started = time.perf_counter()
    for attempt, client in ((1, session), (2, fresh)):
        try:
            async with client.post(f"{url}/v1/chat/completions", json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{resp.status}: {await resp.text()}")
                await resp.read()
            break
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if attempt == 2:
                raise
            RETRIES["count"] += 1
    return (time.perf_counter() - started) * 1000


async def run(
    url: str, n: int, clients: int, stream: bool, max_tokens: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    per_client = n // clients

    async with (
        aiohttp.ClientSession() as session,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
    ):

        async def client() -> None:
            for _ in range(per_client):
                latencies.append(await one(session, fresh, url, stream, max_tokens))

        for _ in range(5):  # warm up connections and the model
            await one(session, fresh, url, stream, max_tokens)
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, len(latencies) / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(
    direct: str, proxied: str, n: int, max_tokens: int, client_counts: tuple[int, ...]
) -> None:
    header = f"{'mode':<9}{'clients':>8}  {'path':<7}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
    print(header + f"{'client retries':>16}")
    for stream in (False, True):
        for clients in client_counts:
            rows = {}
            for label, url in (("direct", direct), ("proxy", proxied)):
                RETRIES["count"] = 0
                lat, rate = await run(url, n, clients, stream, max_tokens)
                rows[label] = (statistics.median(lat), pct(lat, 0.99), rate)
                mode = "stream" if stream else "plain"
                p50, p99, rps = rows[label]
                row = f"{mode:<9}{clients:>8}  {label:<7}{p50:>9.2f}{p99:>9.2f}{rps:>9.0f}"
                print(row + f"{RETRIES['count']:>16}")
            added = rows["proxy"][0] - rows["direct"][0]
            share = rows["proxy"][2] / rows["direct"][2] * 100
            print(f"{'':<17}added p50 {added:+.2f} ms, throughput {share:.0f}% of direct")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument(
        "--clients", default="1,4,32", help="comma-separated concurrent client counts"
    )
    parser.add_argument(
        "--scheduler",
        choices=("serial", "fifo"),
        default="fifo",
        help="serial admits one request at a time, so concurrent rows measure queueing",
    )
    args = parser.parse_args()

    binary = load_script("build_llama_server").find_cached_binary()
    if binary is None:
        print("llama-server not built: run python scripts/build_llama_server.py", file=sys.stderr)
        return 1
    make = load_script("make_tiny_gguf")
    with tempfile.TemporaryDirectory(prefix="bench-real-llama-") as tmp:
        gguf = make.write_tiny_gguf(Path(tmp) / "bench.gguf", spec=make.SPECS[args.size])
        upstream_port, proxy_port = free_port(), free_port()
        config = Path(tmp) / "config.yaml"
        config.write_text(
            "healthCheckTimeout: 60\nlogLevel: warn\n"
            f"routing:\n  scheduler:\n    use: {args.scheduler}\n"
            "models:\n  bench:\n"
            f"    cmd: {binary} -m {gguf} --host 127.0.0.1 --port {upstream_port}"
            " --alias bench -c 2048 -np 4 -t 2\n"
            f"    proxy: http://127.0.0.1:{upstream_port}\n"
            "    concurrencyLimit: 64\n"
        )
        proc = subprocess.Popen(
            [LLAMA_SWAP, "--config", str(config), "--listen", f"127.0.0.1:{proxy_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            proxied = f"http://127.0.0.1:{proxy_port}"
            wait_healthy(f"{proxied}/health", proc)
            # The first request through the proxy starts the upstream; then both paths are hot.
            asyncio.run(run(proxied, 1, 1, False, args.max_tokens))
            print(
                f"llama-server {binary}\nmodel {args.size}, {args.requests} requests per row, "
                f"max_tokens {args.max_tokens}, scheduler {args.scheduler}"
            )
            asyncio.run(
                bench(
                    f"http://127.0.0.1:{upstream_port}",
                    proxied,
                    args.requests,
                    args.max_tokens,
                    tuple(int(c) for c in args.clients.split(",")),
                )
            )
        finally:
            stop_process(proc, grace=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
