"""Helpers for the hardening tests (test_aiohttp_logging, test_timeouts, test_security):
a `llama-swap` subprocess whose stdout and stderr are kept apart (the proxy log and
the terminal are asserted separately), and raw-socket clients that misbehave on purpose.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llama_swap.compiler.plan import Plan, plan_to_json
from tests.e2e.conftest import LLAMA_SWAP
from tests.e2e.procs import kill_pids, live_descendants, stop_process


@dataclass
class SplitProxy:
    """A running `llama-swap` whose stdout and stderr are captured separately."""

    proc: subprocess.Popen[bytes]
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def stderr_text(self) -> str:
        return "".join(self.stderr)

    def stop(self) -> None:
        kids = [kid.pid for kid, _ in live_descendants(self.proc.pid)]
        try:
            stop_process(self.proc)
        finally:
            kill_pids(kids)


def _pump(stream: object, sink: list[str], ready: threading.Event | None) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sink.append(raw.decode("utf-8", "replace"))
        if ready is not None and "listening on" in sink[-1]:
            ready.set()
    if ready is not None:
        ready.set()


@pytest.fixture
def split_proxy(tmp_path: Path) -> Iterator[Callable[..., SplitProxy]]:
    """Factory: `split_proxy(plan, *flags)` starts llama-swap on 127.0.0.1 (unless a
    `--listen` is among the flags) and waits for its "listening on" line."""
    started: list[SplitProxy] = []

    def start(plan: Plan, *extra: str) -> SplitProxy:
        path = tmp_path / f"plan{len(started)}.json"
        path.write_text(plan_to_json(plan))
        listen = () if "--listen" in extra else ("--listen", "127.0.0.1:0")
        proc = subprocess.Popen([LLAMA_SWAP, "--plan", str(path), *listen, *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p = SplitProxy(proc)
        started.append(p)
        ready = threading.Event()
        threading.Thread(target=_pump, args=(proc.stdout, p.stdout, None), daemon=True).start()
        threading.Thread(target=_pump, args=(proc.stderr, p.stderr, ready), daemon=True).start()
        if not ready.wait(20):
            raise AssertionError("llama-swap did not start:\n" + p.stderr_text())
        line = next(x for x in p.stderr if "listening on" in x)
        p.url = line.split("listening on", 1)[1].split()[0]
        hostport = p.url.split("://", 1)[1]
        host, _, port = hostport.rpartition(":")
        p.host, p.port = host.strip("[]"), int(port)
        return p

    yield start
    for p in started:
        p.stop()


def connect(p: SplitProxy, timeout: float = 5.0) -> socket.socket:
    """A plain TCP connection to the proxy."""
    host = "127.0.0.1" if p.host in ("0.0.0.0", "") else p.host
    return socket.create_connection((host, p.port), timeout=timeout)


def closed_by_peer(sock: socket.socket, within: float) -> float | None:
    """Seconds until the peer closed `sock` (EOF or reset), reading and discarding any
    answer; None when it was still open after `within` seconds."""
    started = time.monotonic()
    deadline = started + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:  # reset
            return time.monotonic() - started
        if not data:
            return time.monotonic() - started


def http_get(p: SplitProxy, path: str, headers: dict[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, bytes]:
    """One GET on a fresh connection (`Connection: close`): status and body."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {p.host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with connect(p, timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def proxy_log_text(p: SplitProxy, headers: dict[str, str] | None = None,
                   quiet: float = 0.5) -> str:
    """The proxy log's history, read from `/logs/stream/proxy` (which also works with
    logToStdout none, where `/logs` shows nothing) until it has been quiet for `quiet` s."""
    lines = ["GET /logs/stream/proxy HTTP/1.1", f"Host: {p.host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = b""
    with connect(p) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.settimeout(quiet)
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode("utf-8", "replace")
