"""Fixtures for the fault tests: a real `llama-swap` on a plan of real child processes, and a
teardown that proves nothing the test started is left alive.

Every process a fault test starts carries the test's temporary directory in its command
line (the fake upstream's `--record` file, a script written there), so "nothing left
behind" is checked by looking for that directory in every process's command line --
which also finds processes that left the proxy's tree (a `setsid` grandchild is
reparented to init and is no longer anyone's descendant we could walk to).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from llama_swap.compiler.plan import Plan, plan_to_json
from tests.e2e.conftest import FAKE, LLAMA_SWAP, Proxy, launch
from tests.e2e.procs import kill_pids

PY = sys.executable
WAIT = 15.0  # the bound on every "wait until" of these tests


def tagged(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line mentions `marker`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll `check` (every 20 ms) until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


async def until_async(check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT) -> Any:
    """`until` for a coroutine check."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


class Site:
    """One fault test's world: its directory, the proxies it started, its own processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.record = root / "served.jsonl"
        self.proxies: list[Proxy] = []
        self.others: list[subprocess.Popen[bytes]] = []

    def script(self, name: str, code: str) -> Path:
        """Write a Python script into the test directory (so its processes are tagged)."""
        path = self.root / name
        path.write_text(code)
        return path

    def fake(self, mid: str, port: int, *args: str) -> tuple[str, ...]:
        """A fake upstream's argv, tagged with this test's record file."""
        return (FAKE, "--port", str(port), "--model", mid, "--record", str(self.record), *args)

    def proxy(self, plan: Plan, *extra: str, name: str = "plan.json") -> Proxy:
        path = self.root / name
        path.write_text(plan_to_json(plan))
        argv = [LLAMA_SWAP, "--plan", str(path), "--listen", "127.0.0.1:0", *extra]
        return launch(argv, self.record, self.proxies)

    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        """Another program (not llama-swap's): stopped at teardown."""
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.others.append(proc)
        return proc

    def leftovers(self) -> list[psutil.Process]:
        return tagged(str(self.root))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The test's `Site`; at teardown every proxy is stopped (SIGTERM) and no process of the
    test may remain (waited for with a bound, then killed and reported)."""
    s = Site(tmp_path)
    yield s
    for p in s.proxies:
        p.stop()
    for other in s.others:
        other.kill()
        other.wait(5)
    deadline = time.monotonic() + WAIT
    while s.leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = s.leftovers()
    if left:
        described = [(p.pid, " ".join(p.cmdline())) for p in left if p.is_running()]
        kill_pids(p.pid for p in left)
        pytest.fail(f"processes left behind: {described}")


async def inflight(s: Any, url: str) -> int:
    """The proxy's in-flight model requests, as /metrics reports them."""
    async with s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("llamaswap_inflight_requests "):
            return int(float(line.split()[1]))
    raise AssertionError("no llamaswap_inflight_requests in /metrics")


async def running(s: Any, url: str) -> list[str]:
    """The models /running lists (loaded or loading)."""
    async with s.get(f"{url}/running") as resp:
        return [r["model"] for r in (await resp.json())["running"]]


async def stream_chat(s: Any, url: str, model: str, **extra: Any) -> tuple[int, list[str], bool]:
    """A streaming chat request read to its end: (status, the `data:` payloads, whether the
    connection was cut instead of ending the body properly)."""
    payloads: list[str] = []
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with s.post(f"{url}/v1/chat/completions", json={**body, **extra}) as resp:
        try:
            async for line in resp.content:
                text = line.decode().strip()
                if text.startswith("data:"):
                    payloads.append(text[5:].strip())
        except aiohttp.ClientPayloadError:
            return resp.status, payloads, True
        return resp.status, payloads, False
