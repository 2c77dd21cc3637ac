"""Hot reload end to end: a real `llama-swap --watch-config` on real YAML files.

The proxy compiles `config.yaml` + `conf.d/*.yaml` in-process; the tests edit those
files the way people do and watch the running server follow (or refuse) the edits.
Models are real `swap-fake-upstream` processes on fixed free ports, reached through
the proxy over HTTP.  Every wait is a poll with a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.e2e.conftest import FAKE, LLAMA_SWAP, Proxy, launch
from tests.e2e.procs import free_port
from tests.e2e.test_fastpath import fast_path_counters

WAIT = 30.0

CONFIG = """\
healthCheckTimeout: 15
logLevel: debug
routing:
  scheduler:
    use: fifo
"""

# a and b may run side by side (the default group would swap them).
SIDE_BY_SIDE = """\
routing:
  router:
    use: group
    settings:
      groups:
        side-by-side:
          swap: false
          exclusive: false
          members: [a, b]
"""


def model_yaml(mid: str, port: int, *extra: str) -> str:
    args = " ".join((FAKE, "--port", str(port), "--model", mid, *extra))
    return f"models:\n  {mid}:\n    cmd: {args}\n    proxy: http://127.0.0.1:{port}\n"


class Site:
    """The config files of one test and the proxy serving them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.yaml"
        self.dir = root / "conf.d"
        self.dir.mkdir()
        self.config.write_text(CONFIG)
        self.ports: dict[str, int] = {}

    def fragment(self, name: str) -> Path:
        return self.dir / name

    def write_model(self, name: str, mid: str, *extra: str) -> Path:
        port = self.ports.setdefault(mid, free_port())
        path = self.fragment(name)
        tmp = path.with_name(f".{path.name}.tmp")  # save the way editors do: temp + rename
        tmp.write_text(model_yaml(mid, port, *extra))
        os.replace(tmp, path)
        return path


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


@pytest.fixture
def live_proxy(site: Site, tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(*extra: str) -> Proxy:
        argv = [LLAMA_SWAP, "--config", str(site.config), "--config-dir", str(site.dir),
                "--listen", "127.0.0.1:0", *extra]
        return launch(argv, tmp_path / "unused.jsonl", started, timeout=30)

    yield start
    for p in started:
        p.stop()


async def chat(session: aiohttp.ClientSession, url: str, model: str) -> tuple[int, dict[str, Any]]:
    async with session.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ) as resp:
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = {}
        return resp.status, body


async def status(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/api/config/status") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll `check` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + WAIT
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")


async def test_edit_break_and_fix_fragments_while_serving(site: Site, live_proxy: Any) -> None:
    site.write_model("10-a.yaml", "a")
    proxy = live_proxy("--watch-config")
    async with aiohttp.ClientSession() as s:
        assert (await chat(s, proxy.url, "a"))[0] == 200
        first = await status(s, proxy.url)
        assert first["lastError"] is None
        assert first["watching"]["dirs"] == [str(site.dir)]

        # A new fragment -> its model is served.
        assert (await chat(s, proxy.url, "c"))[0] == 404
        c_file = site.write_model("20-c.yaml", "c")

        async def c_served() -> bool:
            return (await chat(s, proxy.url, "c"))[0] == 200

        await eventually(c_served, "model c to be served")
        st = await status(s, proxy.url)
        assert st["digest"] != first["digest"]
        assert str(c_file) in [src["path"] for src in st["sources"]]

        # A broken fragment -> the old plan keeps serving; the status names file and line.
        c_file.write_text("models:\n  c:\n    cmd: [unclosed\n    proxy: nowhere\n")

        async def error_reported() -> dict[str, Any] | None:
            return (await status(s, proxy.url))["lastError"]

        error = await eventually(error_reported, "the broken fragment to be reported")
        assert error["message"].startswith(f"{c_file}:"), error["message"]
        lines = [d["line"] for d in error["diagnostics"] if d["file"] == str(c_file)]
        assert lines and all(line >= 1 for line in lines)
        assert (await status(s, proxy.url))["digest"] == st["digest"]
        assert (await chat(s, proxy.url, "a"))[0] == 200
        assert (await chat(s, proxy.url, "c"))[0] == 200

        # Fixing it applies the new plan (here: c renamed to c2) and clears the error.
        c_file.unlink()
        site.write_model("20-c2.yaml", "c2")

        async def c2_served() -> bool:
            return (await chat(s, proxy.url, "c2"))[0] == 200

        await eventually(c2_served, "model c2 to be served")
        st = await status(s, proxy.url)
        assert st["lastError"] is None
        assert (await chat(s, proxy.url, "c"))[0] == 404
        assert "config reload failed" in proxy.log_text()


async def read_stream(resp: aiohttp.ClientResponse) -> tuple[int | None, int, bool]:
    """(fake pid from the first chunk, content chunks, saw [DONE])."""
    pid: int | None = None
    tokens = 0
    done = False
    async for raw in resp.content:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        if pid is None and "fake" in chunk:
            pid = chunk["fake"]["pid"]
        if chunk["choices"] and chunk["choices"][0].get("delta", {}).get("content"):
            tokens += 1
    return pid, tokens, done


async def test_changed_model_restarts_while_unchanged_one_keeps_process_and_stream(
    site: Site, live_proxy: Any
) -> None:
    site.write_model("10-a.yaml", "a", "--token-delay", "0.025")
    site.write_model("20-b.yaml", "b")
    site.fragment("30-routing.yaml").write_text(SIDE_BY_SIDE)
    proxy = live_proxy("--watch-config")
    async with aiohttp.ClientSession() as s:
        status_a, body_a = await chat(s, proxy.url, "a")
        status_b, body_b = await chat(s, proxy.url, "b")
        assert (status_a, status_b) == (200, 200)
        pid_a, pid_b = body_a["fake"]["pid"], body_b["fake"]["pid"]
        digest = (await status(s, proxy.url))["digest"]

        # A long stream on a (400 tokens, ~10 s) is in progress during the reload.
        resp = await s.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "a", "stream": True, "max_tokens": 400,
                  "messages": [{"role": "user", "content": "go"}]},
        )
        assert resp.status == 200
        stream = asyncio.ensure_future(read_stream(resp))

        site.write_model("20-b.yaml", "b", "--tokens", "3")  # argv change: b must restart

        async def b_restarted() -> bool:
            code, body = await chat(s, proxy.url, "b")
            return code == 200 and body["fake"]["pid"] != pid_b

        await eventually(b_restarted, "b to be served by a new process")
        st = await status(s, proxy.url)
        assert st["digest"] != digest
        assert st["lastReload"]["diff"]["changedRestart"] == ["b"]
        assert st["lastReload"]["diff"]["kept"] == ["a"]
        assert not stream.done(), "the stream ended before the reload: the test proves nothing"

        code, body = await chat(s, proxy.url, "a")
        assert code == 200 and body["fake"]["pid"] == pid_a
        stream_pid, tokens, done = await asyncio.wait_for(stream, WAIT)
        resp.release()
        assert (stream_pid, tokens, done) == (pid_a, 400, True)
        assert psutil.pid_exists(pid_a)
        assert not psutil.pid_exists(pid_b) or psutil.Process(pid_b).status() == "zombie"


async def test_post_reload_and_sighup_work_without_watching(site: Site, live_proxy: Any) -> None:
    site.write_model("10-a.yaml", "a")
    proxy = live_proxy()
    async with aiohttp.ClientSession() as s:
        assert (await status(s, proxy.url))["watching"] is None
        c_file = site.write_model("20-c.yaml", "c")
        c_file.write_text(c_file.read_text() + "hooks:\n  on_startup:\n    preload: [c]\n")
        async with s.post(f"{proxy.url}/api/config/reload") as resp:
            assert resp.status == 200
            outcome = await resp.json()
        assert outcome["changed"] is True and outcome["diff"]["added"] == ["c"]

        async def c_preloaded() -> bool:  # the new preload list runs after the reload
            async with s.get(f"{proxy.url}/running") as resp:
                running = (await resp.json())["running"]
            return any(r["model"] == "c" and r["state"] == "ready" for r in running)

        await eventually(c_preloaded, "c to be preloaded")
        assert (await chat(s, proxy.url, "c"))[0] == 200

        site.write_model("30-d.yaml", "d")
        proxy.proc.send_signal(signal.SIGHUP)

        async def d_served() -> bool:
            return (await chat(s, proxy.url, "d"))[0] == 200

        await eventually(d_served, "model d after SIGHUP")

        site.fragment("30-d.yaml").write_text("models: [not, a, mapping\n")
        async with s.post(f"{proxy.url}/api/config/reload") as resp:
            assert resp.status == 422
            refused = await resp.json()
        assert refused["ok"] is False
        assert str(site.fragment("30-d.yaml")) in refused["error"]["message"]
        assert (await chat(s, proxy.url, "d"))[0] == 200  # still the old plan


def free_port_run(n: int) -> int:
    """A port p with p .. p+n-1 all free right now (for a `startPort`)."""
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        try:
            for p in range(base, base + n):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise AssertionError("no run of free ports found")


def port_model_yaml(mid: str) -> str:
    return (f"models:\n  {mid}:\n    cmd: {FAKE} --port ${{PORT}} --model {mid}\n"
            f"    proxy: http://127.0.0.1:${{PORT}}\n")


async def test_a_model_added_before_a_running_one_does_not_move_its_port(
    site: Site, live_proxy: Any
) -> None:
    site.config.write_text(CONFIG + f"startPort: {free_port_run(3)}\n")
    site.fragment("20-m.yaml").write_text(port_model_yaml("m"))
    proxy = live_proxy("--watch-config")
    async with aiohttp.ClientSession() as s:
        code, body = await chat(s, proxy.url, "m")
        assert code == 200
        pid_m, port_m = body["fake"]["pid"], body["fake"]["port"]

        # "a" sorts before "m": in Go's allocation it would take m's port and m would move.
        site.fragment("10-a.yaml").write_text(port_model_yaml("a"))

        async def a_added() -> dict[str, Any] | None:
            last = (await status(s, proxy.url))["lastReload"]
            return last if last and last["changed"] else None

        last = await eventually(a_added, "the reload adding a")
        assert last["diff"]["added"] == ["a"]
        assert last["diff"]["kept"] == ["m"] and last["diff"]["changedRestart"] == []

        code, body = await chat(s, proxy.url, "m")
        assert code == 200 and (body["fake"]["pid"], body["fake"]["port"]) == (pid_m, port_m)
        code, body = await chat(s, proxy.url, "a")
        assert code == 200 and body["fake"]["port"] != port_m


async def test_a_hot_reload_that_moves_a_model_to_another_port_is_followed(
    site: Site, live_proxy: Any
) -> None:
    """The fast path remembers a pool per plan entry; a reload that gives the model a new
    address must send the next request there, not to the old pool."""
    site.write_model("10-a.yaml", "a")
    proxy = live_proxy("--watch-config")
    async with aiohttp.ClientSession() as s:
        code, body = await chat(s, proxy.url, "a")
        assert code == 200
        old_port = body["fake"]["port"]
        site.ports["a"] = free_port()
        site.write_model("10-a.yaml", "a")

        async def moved() -> bool:
            code, body = await chat(s, proxy.url, "a")
            return code == 200 and body["fake"]["port"] == site.ports["a"]

        await eventually(moved, "a to answer from its new port")
    assert site.ports["a"] != old_port
    served = await fast_path_counters(proxy.url)
    assert served["requests"] >= 2


# A real `llama-swap` in which a fragment is renamed into --config-dir after the startup
# compile has read the dir and before the watcher arms its watches -- the window a
# Kubernetes ConfigMap update or a deploy script can hit right after startup.  The
# rename is done by a wrapper around the watcher's `start()` (everything else is the
# real CLI), so the edit lands in that window every time, not by chance.
RENAME_BEFORE_ARMING = """\
import os, sys
from llama_swap.runtime.cli import main
from llama_swap.runtime.engine.watcher import ConfigWatcher

real_start = ConfigWatcher.start

def start(self):
    os.replace(os.environ["STAGED_FRAGMENT"], os.environ["TARGET_FRAGMENT"])
    real_start(self)

ConfigWatcher.start = start
sys.exit(main(sys.argv[1:]))
"""


async def test_a_fragment_renamed_in_before_the_watches_are_armed_is_applied(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.write_model("10-a.yaml", "a")
    staged = tmp_path / "20-b.yaml"
    staged.write_text(model_yaml("b", free_port()))
    target = site.fragment("20-b.yaml")
    monkeypatch.setenv("STAGED_FRAGMENT", str(staged))
    monkeypatch.setenv("TARGET_FRAGMENT", str(target))
    argv = [sys.executable, "-c", RENAME_BEFORE_ARMING, "--config", str(site.config),
            "--config-dir", str(site.dir), "--listen", "127.0.0.1:0", "--watch-config"]
    started: list[Proxy] = []
    try:
        proxy = launch(argv, tmp_path / "unused.jsonl", started, timeout=30)
        assert target.exists() and not staged.exists()  # the rename did happen, after the compile
        async with aiohttp.ClientSession() as s:

            async def b_served() -> bool:
                return (await chat(s, proxy.url, "b"))[0] == 200

            await eventually(b_served, "model b (renamed in before the watches were armed)")
            st = await status(s, proxy.url)
            assert str(target) in [src["path"] for src in st["sources"]]
            assert st["reloads"]["applied"] == 1
            assert "20-b.yaml" in st["lastReload"]["reason"]
            assert (await chat(s, proxy.url, "a"))[0] == 200
    finally:
        for p in started:
            p.stop()


async def test_an_unchanged_config_is_not_reloaded_when_the_watcher_starts(
    site: Site, live_proxy: Any
) -> None:
    site.write_model("10-a.yaml", "a")
    proxy = live_proxy("--watch-config")  # "listening on" is printed after the watcher armed
    async with aiohttp.ClientSession() as s:
        st = await status(s, proxy.url)
    assert st["reloads"] == {"applied": 0, "unchanged": 0, "failed": 0}
    assert st["reloading"] is False and st["lastReload"] is None


def typo_model_yaml(mid: str, port: int) -> str:
    """A model whose `ttl` is misspelt `tll`: an unknown key, ignored with a warning."""
    return model_yaml(mid, port) + "    tll: 300\n"


async def test_a_reload_with_an_unknown_key_shows_the_warning_in_status_and_log(
    site: Site, live_proxy: Any
) -> None:
    site.write_model("10-a.yaml", "a")
    proxy = live_proxy("--watch-config")
    async with aiohttp.ClientSession() as s:
        typo = site.fragment("20-b.yaml")
        typo.write_text(typo_model_yaml("b", free_port()))

        async def warned() -> list[dict[str, Any]]:
            last = (await status(s, proxy.url))["lastReload"]
            return last["warnings"] if last and last["changed"] else []

        [warning] = await eventually(warned, "the reload adding b, with its warning")
        assert (warning["file"], warning["line"], warning["path"]) == (str(typo), 5, "models.b.tll")
        assert "unknown key 'tll'" in warning["message"]
        st = await status(s, proxy.url)
        assert st["warnings"] == [warning] and st["lastError"] is None
        assert (await chat(s, proxy.url, "b"))[0] == 200  # the plan did apply

    async def logged() -> bool:
        return "[WARN] config reload: the configuration has warnings" in proxy.log_text()

    await eventually(logged, "the warning in the proxy log")
    assert f"{typo}:5:5: warning: models.b.tll: unknown key 'tll'" in proxy.log_text()


async def test_strict_refuses_a_reload_with_an_unknown_key_and_the_old_plan_keeps_serving(
    site: Site, live_proxy: Any
) -> None:
    site.write_model("10-a.yaml", "a")
    proxy = live_proxy("--watch-config", "--strict")
    async with aiohttp.ClientSession() as s:
        digest = (await status(s, proxy.url))["digest"]
        typo = site.fragment("20-b.yaml")
        typo.write_text(typo_model_yaml("b", free_port()))
        async with s.post(f"{proxy.url}/api/config/reload") as resp:
            assert resp.status == 422
            refused = await resp.json()
        assert refused["error"]["message"].startswith(
            f"{typo}:5:5: models.b.tll: unknown key 'tll'"
        )
        st = await status(s, proxy.url)
        assert st["digest"] == digest and st["lastError"] is not None
        assert (await chat(s, proxy.url, "a"))[0] == 200
        assert (await chat(s, proxy.url, "b"))[0] == 404


async def test_strict_refuses_to_start_on_a_config_with_an_unknown_key(site: Site) -> None:
    site.fragment("10-a.yaml").write_text(typo_model_yaml("a", free_port()))
    argv = [LLAMA_SWAP, "--config", str(site.config), "--config-dir", str(site.dir),
            "--listen", "127.0.0.1:0", "--strict"]
    done = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(done.communicate(), WAIT)
    assert done.returncode == 1
    text = out.decode()
    assert f"{site.fragment('10-a.yaml')}:5:5: models.a.tll: unknown key 'tll'" in text
    assert "failed to load config" in text


async def test_a_failed_reload_never_shows_a_key_in_status_or_log(
    site: Site, live_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key read from the environment, then a broken edit on its line: the error names the
    place and the problem, never the key (status, proxy log)."""
    secret = "sk-never-shown-0123456789"
    monkeypatch.setenv("LLAMA_SWAP_TEST_KEY", secret)
    site.write_model("10-a.yaml", "a")
    keys = site.fragment("00-keys.yaml")
    keys.write_text("apiKeys: ['${env.LLAMA_SWAP_TEST_KEY}']\n")
    proxy = live_proxy("--watch-config")
    auth = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession(headers=auth) as s:
        assert (await chat(s, proxy.url, "a"))[0] == 200
        keys.write_text("apiKeys: ['${env.LLAMA_SWAP_TEST_KEY} with a space']\n")

        async def failed() -> dict[str, Any] | None:
            st = await status(s, proxy.url)
            return st if st["lastError"] else None

        st = await eventually(failed, "the failed reload")
        assert (await chat(s, proxy.url, "a"))[0] == 200  # the old plan keeps serving
    assert secret not in json.dumps(st)
    assert secret not in proxy.log_text()
    assert "00-keys.yaml" in json.dumps(st) and "apiKeys" in json.dumps(st)
