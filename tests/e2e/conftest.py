"""End-to-end fixtures: a real `llama-swap` subprocess serving a plan whose models are
real `swap-fake-upstream` child processes, reached over real HTTP on 127.0.0.1.

- `plan_file(...)` writes a plan JSON (built with compiler.plan dataclasses, so these
  tests do not depend on the YAML compiler); every fake records the requests it
  served (`--record`) into one file per test.
- `proxy(...)` starts `llama-swap --plan`, waits for its "listening on" line and
  returns a `Proxy`; the finalizer stops it and kills anything left behind.
- `ResidencySampler` samples the proxy's process tree (psutil) in a thread, to
  prove that no two model processes were ever alive together.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psutil
import pytest

from llama_swap.compiler.plan import (
    Group,
    Matrix,
    MatrixSet,
    Model,
    Plan,
    Routing,
    Settings,
    plan_to_json,
)
from tests.e2e.procs import (
    free_port,
    is_store_writer,
    kill_pids,
    live_descendants,
    stop_process,
)

BIN = Path(sys.executable).parent
FAKE = str(BIN / "swap-fake-upstream")
LLAMA_SWAP = str(BIN / "llama-swap")


def fake_model(
    mid: str,
    record: Path,
    *args: str,
    ttl: int = 0,
    concurrency: int = 10,
    aliases: tuple[str, ...] = (),
    cmd: tuple[str, ...] | None = None,
) -> Model:
    """A model served by the fake upstream on a fresh port (extra fake flags in `args`)."""
    port = free_port()
    argv = cmd or (FAKE, "--port", str(port), "--model", mid, "--record", str(record), *args)
    argv = tuple(a.replace("${PORT}", str(port)) for a in argv)
    return Model(
        id=mid,
        cmd=argv,
        cmdStop=None,
        proxy=f"http://127.0.0.1:{port}",
        checkEndpoint="/health",
        ttl=ttl,
        concurrencyLimit=concurrency,
        aliases=aliases,
    )


def make_plan(
    models: list[Model],
    *,
    scheduler: str = "serial",
    groups: dict[str, Group] | None = None,
    matrix: Matrix | None = None,
    health_timeout: int = 15,
) -> Plan:
    routing = Routing(
        scheduler=scheduler,
        router="matrix" if matrix else "group",
        groups=MappingProxyType(
            groups or {"(default)": Group("(default)", tuple(m.id for m in models))}
        ),
        matrix=matrix,
    )
    aliases = {a: m.id for m in models for a in m.aliases}
    return Plan(
        settings=Settings(healthCheckTimeout=health_timeout, logLevel="debug"),
        routing=routing,
        models=MappingProxyType({m.id: m for m in sorted(models, key=lambda m: m.id)}),
        aliases=MappingProxyType(aliases),
    )


def matrix_of(sets: dict[str, list[list[str]]]) -> Matrix:
    return Matrix(
        vars=MappingProxyType({}),
        evictCosts=MappingProxyType({}),
        sets=tuple(
            MatrixSet(name, " | ".join(" & ".join(c) for c in combos), tuple(map(tuple, combos)))
            for name, combos in sets.items()
        ),
    )


@dataclass
class Proxy:
    """A running `llama-swap` subprocess."""

    proc: subprocess.Popen[bytes]
    url: str
    record: Path
    output: list[str] = field(default_factory=list)
    seen_children: dict[int, str] = field(default_factory=dict)

    def children(self) -> list[psutil.Process]:
        """Live (non-zombie) descendants of the proxy but its store writer: the model
        processes (all of them remembered for the teardown)."""
        alive = live_descendants(self.proc.pid)
        for kid, cmdline in alive:
            self.seen_children.setdefault(kid.pid, " ".join(cmdline))
        return [kid for kid, cmdline in alive if not is_store_writer(cmdline)]

    def records(self) -> list[dict[str, Any]]:
        """What the fakes served, ordered by start time."""
        if not self.record.exists():
            return []
        rows = [json.loads(line) for line in self.record.read_text().splitlines() if line]
        return sorted(rows, key=lambda r: r["start"])

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log_text(self) -> str:
        return "".join(self.output)

    def stop(self) -> None:
        """Teardown: stop the proxy, then kill every child it ever had (seen by `children`)."""
        try:
            self.children()  # remember the children's pids before stopping
            stop_process(self.proc)
        finally:
            kill_pids(self.seen_children)


def _pump(stream: Any, sink: list[str], ready: threading.Event, found: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        sink.append(line)
        if not ready.is_set() and "listening on" in line and line.startswith("llama-swap:"):
            found.append(line.split("listening on", 1)[1].split()[0])
            ready.set()
    ready.set()


@pytest.fixture
def record_file(tmp_path: Path) -> Path:
    return tmp_path / "served.jsonl"


def launch(argv: list[str], record: Path, started: list[Proxy], timeout: float = 20.0) -> Proxy:
    """Run `llama-swap` with `argv` (output captured), add it to `started` (whose owner stops
    it), and wait up to `timeout` s for its "listening on" line."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    ready = threading.Event()
    found: list[str] = []
    threading.Thread(target=_pump, args=(proc.stdout, output, ready, found), daemon=True).start()
    p = Proxy(proc, "", record, output)
    started.append(p)
    if not ready.wait(timeout) or not found:
        raise AssertionError("llama-swap did not start:\n" + "".join(output))
    p.url = found[0]
    return p


@pytest.fixture
def proxy(tmp_path: Path, record_file: Path) -> Iterator[Callable[..., Proxy]]:
    """Factory: `proxy(plan)` starts llama-swap on that plan and waits until it listens."""
    started: list[Proxy] = []

    def start(plan: Plan, *extra: str) -> Proxy:
        path = tmp_path / f"plan{len(started)}.json"
        path.write_text(plan_to_json(plan))
        argv = [LLAMA_SWAP, "--plan", str(path), "--listen", "127.0.0.1:0", *extra]
        return launch(argv, record_file, started)

    yield start
    for p in started:
        p.stop()


class ResidencySampler:
    """Samples the proxy's live model children every few ms; remembers the largest set
    of distinct models seen alive at once."""

    def __init__(self, proxy: Proxy, interval: float = 0.003) -> None:
        self.proxy = proxy
        self.interval = interval
        self.max_models: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _models_alive(self) -> set[str]:
        names: set[str] = set()
        for kid in self.proxy.children():
            try:
                cmd = kid.cmdline()
            except psutil.NoSuchProcess:
                continue
            if "--model" in cmd:
                names.add(cmd[cmd.index("--model") + 1])
        return names

    def _run(self) -> None:
        while not self._stop.is_set():
            alive = self._models_alive()
            self.samples += 1
            if len(alive) > len(self.max_models):
                self.max_models = alive
            time.sleep(self.interval)

    def __enter__(self) -> ResidencySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def overlapping(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of served requests whose [start, end] intervals overlap (any models)."""
    out = []
    rows = sorted(records, key=lambda r: r["start"])
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if b["start"] < a["end"]:
                out.append((a, b))
    return out
