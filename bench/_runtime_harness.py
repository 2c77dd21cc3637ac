"""Shared plumbing for the runtime benchmarks: plans of fake models, a `llama-swap`
subprocess on a free port, and a cleanup that leaves no process behind.  The process
helpers (`free_port`, `stop_process`) are the end-to-end tests' (tests/e2e/procs.py),
re-exported here for the other bench scripts."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llama_swap.compiler.plan import Group, Model, Plan, Routing, Settings, plan_to_json  # noqa: E402
from llama_swap.runtime.native import PURE_ENV  # noqa: E402
from tests.e2e.procs import free_port, kill_pids, live_descendants, stop_process  # noqa: E402
from tests.e2e.procs import is_store_writer as writer_cmdline  # noqa: E402

BIN = Path(sys.executable).parent
FAKE = str(BIN / "swap-fake-upstream")
LLAMA_SWAP = str(BIN / "llama-swap")


def fake_model(mid: str, *args: str) -> Model:
    port = free_port()
    return Model(
        id=mid,
        cmd=(FAKE, "--port", str(port), "--model", mid, *args),
        cmdStop=None,
        proxy=f"http://127.0.0.1:{port}",
        checkEndpoint="/health",
        ttl=0,
        concurrencyLimit=1000,
    )


def plan_of(
    models: list[Model], scheduler: str = "serial", log_level: str = "info",
    log_to_stdout: str = "proxy",
) -> Plan:
    return Plan(
        settings=Settings(healthCheckTimeout=30, logLevel=log_level, logToStdout=log_to_stdout),
        routing=Routing(
            scheduler=scheduler,
            groups=MappingProxyType(
                {"(default)": Group("(default)", tuple(m.id for m in models))}
            ),
        ),
        models=MappingProxyType({m.id: m for m in models}),
    )


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    output: list[str]  # stdout lines (only with capture=True)


# Plan settings added after the builds a benchmark may compare with (`exe`): left out of
# the plan such a build gets while they hold their defaults, which is what it does anyway.
NEWER_SETTINGS = tuple(
    os.environ.get("LLAMA_SWAP_BENCH_NEWER_SETTINGS", "maxRequestBody").split(",")
) if os.environ.get("LLAMA_SWAP_BENCH_NEWER_SETTINGS", "x") else ()


def older_plan_json(plan: Plan) -> str:
    """`plan` as JSON for an older build, whose plan schema refuses fields it predates."""
    doc = json.loads(plan_to_json(plan))  # settings are top-level fields of a plan
    defaults = json.loads(plan_to_json(Plan(settings=Settings())))
    for key in NEWER_SETTINGS:
        if doc.get(key) == defaults.get(key):
            doc.pop(key, None)
    return json.dumps(doc)


def is_store_writer(proc: psutil.Process) -> bool:
    """The activity store's writer process (a child of every llama-swap)."""
    try:
        return writer_cmdline(proc.cmdline())
    except psutil.Error:
        return False


def proxy_processes(pid: int) -> list[psutil.Process]:
    """llama-swap's own processes: the proxy and its store writer (CPU and memory are
    counted over both)."""
    proxy = psutil.Process(pid)
    return [proxy, *(k for k in proxy.children() if is_store_writer(k))]


def model_processes(pid: int) -> list[psutil.Process]:
    """The model servers llama-swap runs (its descendants but the store writer)."""
    return [k for k in psutil.Process(pid).children(recursive=True) if not is_store_writer(k)]


@contextlib.contextmanager
def llama_swap(
    plan: Plan, *args: str, capture: bool = False, exe: str = LLAMA_SWAP, pure: bool = False
) -> Iterator[Running]:
    """Run `llama-swap --plan [args]` until the block ends; kill its children.  Its stdout (the
    logs, per the plan's logToStdout) is discarded unless `capture`.  `exe`: another
    build's `llama-swap` (e.g. an older checkout's, for before/after figures).  `pure`: run
    the Python source of the modules this install compiled (runtime/native.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"
        if plan.settings.storePath is None:  # each instance its own history, as a user has
            plan = replace(plan, settings=replace(
                plan.settings, storePath=str(Path(tmp) / "activity.sqlite")))
        path.write_text(plan_to_json(plan) if exe == LLAMA_SWAP else older_plan_json(plan))
        proc = subprocess.Popen(
            [exe, "--plan", str(path), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **({PURE_ENV: "1"} if pure else {})},
        )
        url: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert proc.stderr is not None
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode()
                if "listening on" in line and not url:
                    url.append(line.split("listening on", 1)[1].split()[0])
                    ready.set()
            ready.set()

        output: list[str] = []

        def collect() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                output.append(raw.decode("utf-8", "replace"))

        threading.Thread(target=pump, daemon=True).start()
        if capture:
            threading.Thread(target=collect, daemon=True).start()
        try:
            if not ready.wait(30) or not url:
                raise RuntimeError("llama-swap did not start")
            yield Running(proc, url[0], output)
        finally:
            kids = [kid.pid for kid, _ in live_descendants(proc.pid)]
            stop_process(proc)
            kill_pids(kids)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def wait_healthy(url: str, timeout: float = 30.0, interval: float = 0.001) -> float:
    """Poll `url` (GET) until HTTP 200; returns the time it took (raw sockets: cheap)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    path = "/" + url.split("//", 1)[1].split("/", 1)[1] if url.count("/") > 2 else "/"
    t0 = time.perf_counter()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    while time.perf_counter() - t0 < timeout:
        try:
            with socket.create_connection((host, int(port)), timeout=1) as s:
                s.sendall(request)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(url)
