"""Where the proxy spends its CPU under load: py-spy samples a running `llama-swap`
while the lean client drives small chat requests (or alternating swaps) through it.

Why py-spy: it samples the process from outside, so what is measured is the proxy as
it runs (uvloop, the fast path), not a build with profiling hooks.  The report lists
the functions with the most samples, inclusive ("in it or below") and own ("on top
of the stack"), grouped by the project's modules; docs/performance.md quotes them.

Run: .venv/bin/python bench/profile_proxy.py [--clients 32] [--seconds 8] [--rate 500]
     [--workload chat|swap] [--top 25] [--raw FILE] [--native]   (py-spy: the `bench` extra)

A compiled install (see runtime/native.py) shows its compiled modules only with --native;
`LLAMA_SWAP_PURE_PYTHON=1` in the environment profiles their Python source instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from _lean_client import drive  # type: ignore[import-not-found]
from _measure import first_byte  # type: ignore[import-not-found]
from _peers import llama_server_binary, tiny_model  # type: ignore[import-not-found]
from _runtime_harness import (  # type: ignore[import-not-found]
    fake_model,
    llama_swap,
    plan_of,
    proxy_processes,
)
from _suite import llama_model  # type: ignore[import-not-found]

from llama_swap.compiler.plan import Model

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}'


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install -e '.[bench]'")
    return found


def summarise(raw: Path, top: int) -> None:
    """Collapsed stacks ("frame;frame;... count") -> the top frames, inclusive and own."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{total} samples")
    for title, table in (("inclusive", inclusive), ("own", own)):
        print(f"\ntop {top} by {title} samples")
        for frame, n in table.most_common(top):
            print(f"  {n / total * 100:5.1f}%  {frame}")


async def chat_load(url: str, clients: int, seconds: float) -> int:
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        out: list[float] = []
        await drive(f"{url}/v1/chat/completions", BODY, clients, 200, out)
        done += len(out)
    return done


async def swap_load(url: str, seconds: float) -> int:
    done = 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        while time.perf_counter() - t0 < seconds:
            for model in ("a", "b"):
                await first_byte(s, url, model)
                done += 1
    return done


def swap_models(work: Path) -> list[Model]:
    """Two tiny llama-server models when the binary is built (what a swap costs with a
    real server's start-up output and health behaviour), else two fake upstreams."""
    binary = llama_server_binary()
    if binary is None:
        return [fake_model("a"), fake_model("b")]
    return [llama_model(mid, binary, tiny_model(work / f"{mid}.gguf", seed))
            for mid, seed in (("a", 1), ("b", 2))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--workload", choices=("chat", "swap"), default="chat")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--raw", type=Path, help="keep the collapsed stacks here")
    p.add_argument("--no-fast-path", action="store_true")
    p.add_argument("--writer", action="store_true",
                   help="sample the activity store's writer process instead of the proxy")
    p.add_argument("--native", action="store_true",
                   help="sample C frames too (uvloop, and the modules compiled with mypyc, "
                        "which py-spy otherwise cannot see into)")
    args = p.parse_args()
    scheduler = "fifo" if args.workload == "chat" else "serial"
    extra = ("--no-fast-path",) if args.no_fast_path else ()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        models = [fake_model("m")] if args.workload == "chat" else swap_models(tmp)
        ls = stack.enter_context(llama_swap(plan_of(models, scheduler, "warn"), *extra))
        raw = args.raw or tmp / "stacks.txt"
        warm = chat_load(ls.url, 4, 0.5) if args.workload == "chat" else swap_load(ls.url, 0.5)
        asyncio.run(warm)
        target = proxy_processes(ls.proc.pid)[-1].pid if args.writer else ls.proc.pid
        spy = subprocess.Popen(
            [py_spy(), "record", "--pid", str(target), "--rate", str(args.rate),
             "--format", "raw", "--output", str(raw), "--duration", str(int(args.seconds) + 1),
             # py-spy reads C stacks only while the process is paused
             *(["--native"] if args.native else ["--nonblocking"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        load = (chat_load(ls.url, args.clients, args.seconds) if args.workload == "chat"
                else swap_load(ls.url, args.seconds))
        n = asyncio.run(load)
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0 or not raw.exists():
            raise SystemExit(f"py-spy failed: {err.decode()[-500:]}")
        print(f"{args.workload}: {n} requests in {args.seconds:g} s through llama-swap"
              f"{' --no-fast-path' if args.no_fast_path else ''}")
        summarise(raw, args.top)


if __name__ == "__main__":
    main()
