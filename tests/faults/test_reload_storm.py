"""A storm of reloads while clients are served: nothing fails, nothing is lost.

50 config changes in about 10 s, each followed by one of the three triggers (the file
watcher alone, SIGHUP, `POST /api/config/reload`), against a real `llama-swap
--watch-config` whose models are real `swap-fake-upstream` processes.  The changes
rotate through the three kinds a reload handles differently: a model's command (its
process restarts), its aliases (applied live), a model added or removed.  Meanwhile two
clients send requests one after another, to a model no change touches and to the one
that keeps restarting.

Required: every request answered 200; the untouched model keeps its process; and once
the storm is over the running plan is the one the last written files compile to (its
digest equals a fresh compile's -- the models use fixed ports, so no port stickiness
can make them differ).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llama_swap.compiler.pipeline import compile_paths
from llama_swap.runtime.core.plan_diff import plan_digest
from tests.e2e.conftest import FAKE, LLAMA_SWAP, Proxy, launch
from tests.e2e.procs import free_port

CHANGES = 50
STORM_SECONDS = 10.0
WAIT = 60.0

CONFIG = """\
healthCheckTimeout: 15
logLevel: info
routing:
  scheduler:
    use: fifo
  router:
    use: group
    settings:
      groups:
        side-by-side:
          swap: false
          exclusive: false
          members: [a, b]
"""


def model_yaml(mid: str, port: int, *args: str, aliases: tuple[str, ...] = ()) -> str:
    cmd = " ".join((FAKE, "--port", str(port), "--model", mid, *args))
    text = f"models:\n  {mid}:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:{port}\n"
    if aliases:
        text += f"    aliases: [{', '.join(aliases)}]\n"
    return text


class StormSite:
    """config.yaml + conf.d, written the ways people and tools write them."""

    def __init__(self, root: Path) -> None:
        self.config = root / "config.yaml"
        self.dir = root / "conf.d"
        self.dir.mkdir()
        self.config.write_text(CONFIG)
        self.port_a, self.port_b = free_port(), free_port()
        self.extra_ports: dict[str, int] = {}
        self.b_tokens = 1
        self.b_aliases: tuple[str, ...] = ()
        self.write("10-a.yaml", model_yaml("a", self.port_a), atomic=True)
        self.write_b(atomic=True)

    def write(self, name: str, text: str, *, atomic: bool) -> None:
        path = self.dir / name
        if atomic:  # temp file renamed over the fragment, as editors and ConfigMaps do
            tmp = self.dir / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, path)
        else:  # truncate and write in place
            path.write_text(text)

    def write_b(self, *, atomic: bool) -> None:
        text = model_yaml("b", self.port_b, "--tokens", str(self.b_tokens), aliases=self.b_aliases)
        self.write("20-b.yaml", text, atomic=atomic)

    def change(self, i: int) -> None:
        """The i-th config change of the storm (always a real change)."""
        kind = i % 3
        if kind == 0:  # b's command: its process must restart
            self.b_tokens = 1 + (self.b_tokens % 4)
            self.write_b(atomic=i % 2 == 0)
        elif kind == 1:  # b's aliases: applied to the running process
            self.b_aliases = (f"b-{i}",)
            self.write_b(atomic=i % 2 == 0)
        else:  # a model added, or the one added before removed
            name = f"30-extra-{i % 2}.yaml"
            path = self.dir / name
            if path.exists():
                path.unlink()
            else:
                mid = f"extra{i}"
                port = self.extra_ports.setdefault(mid, free_port())
                self.write(name, model_yaml(mid, port), atomic=True)

    def expected_digest(self) -> str:
        """The digest of the plan the files on disk compile to now."""
        return plan_digest(compile_paths(str(self.config), str(self.dir)).plan)


@pytest.fixture
def storm_site(tmp_path: Path) -> StormSite:
    return StormSite(tmp_path)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[[StormSite], Proxy]]:
    running: list[Proxy] = []

    def start(site: StormSite) -> Proxy:
        argv = [LLAMA_SWAP, "--config", str(site.config), "--config-dir", str(site.dir),
                "--listen", "127.0.0.1:0", "--watch-config"]
        return launch(argv, tmp_path / "unused.jsonl", running, timeout=30)

    yield start
    for p in running:
        p.stop()


async def chat(session: aiohttp.ClientSession, url: str, model: str) -> tuple[int, dict[str, Any]]:
    async with session.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    ) as resp:
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = {"text": await resp.text()}
        return resp.status, body


async def steady_client(
    session: aiohttp.ClientSession, url: str, model: str, stop: asyncio.Event,
    answers: list[tuple[str, int, dict[str, Any]]],
) -> None:
    """Requests to `model`, one after the other, until `stop` (and one more after it)."""
    while True:
        stopping = stop.is_set()
        code, body = await chat(session, url, model)
        answers.append((model, code, body))
        if stopping:
            return


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")


async def test_fifty_mixed_reloads_in_ten_seconds_fail_no_request_and_lose_no_change(
    storm_site: StormSite, started: Callable[[StormSite], Proxy]
) -> None:
    site = storm_site
    proxy = started(site)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        code, first_a = await chat(s, proxy.url, "a")
        assert code == 200
        pid_a = first_a["fake"]["pid"]
        assert (await chat(s, proxy.url, "b"))[0] == 200

        stop = asyncio.Event()
        answers: list[tuple[str, int, dict[str, Any]]] = []
        clients = [asyncio.ensure_future(steady_client(s, proxy.url, m, stop, answers))
                   for m in ("a", "b")]
        posts: list[asyncio.Future[tuple[int, dict[str, Any]]]] = []

        async def post_reload() -> tuple[int, dict[str, Any]]:
            async with s.post(f"{proxy.url}/api/config/reload") as resp:
                return resp.status, await resp.json()

        t0 = time.monotonic()
        for i in range(CHANGES):
            site.change(i)
            trigger = i % 3
            if trigger == 1:
                proxy.proc.send_signal(signal.SIGHUP)
            elif trigger == 2:
                posts.append(asyncio.ensure_future(post_reload()))
            # (trigger 0: the watcher alone)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * STORM_SECONDS / CHANGES - time.monotonic()))
        storm = time.monotonic() - t0
        stop.set()
        await asyncio.gather(*clients)
        posted = await asyncio.gather(*posts)

        expected = site.expected_digest()

        async def settled() -> dict[str, Any] | None:
            async with s.get(f"{proxy.url}/api/config/status") as resp:
                st = await resp.json()
            return st if st["digest"] == expected and not st["reloading"] else None

        st = await eventually(settled, "the running plan to be the last written config")

        failed = [(m, code, body) for m, code, body in answers if code != 200]
        assert not failed, failed[:5]
        served = {m: sum(1 for x, _, _ in answers if x == m) for m in ("a", "b")}
        assert served["a"] >= 20 and served["b"] >= 5, served  # the clients ran all along
        assert all(code in (200, 422) for code, _ in posted), posted
        assert {body["fake"]["pid"] for m, _, body in answers if m == "a"} == {pid_a}
        assert storm < STORM_SECONDS * 2, f"the storm took {storm:.1f} s"

        code, last_b = await chat(s, proxy.url, site.b_aliases[0])
        assert code == 200
        assert last_b["choices"][0]["message"]["content"].split() == [
            f"tok{k}" for k in range(site.b_tokens)
        ]
        applied = st["reloads"]["applied"]
        assert applied >= 10, st["reloads"]  # coalesced, but far from one reload for all
