"""Security through the real proxy: every route that reveals or changes anything needs
the API key (the route list comes from the app itself, so a new route is covered the
day it is added), the UI prompts a browser for it, keys never show up in logs,
captures or `/running`, and listening beyond loopback without keys is warned about."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.auth import inherited_env, redact, secrets_of
from llama_swap.runtime.http.aio.app import build_app, create_services
from tests.e2e.conftest import FAKE, fake_model
from tests.e2e.hardening import SplitProxy, connect, http_get, proxy_log_text, split_proxy
from tests.e2e.surface_fixtures import surface_plan

__all__ = ["split_proxy"]

KEY = "sk-route-table-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
# What stays open without a key: nothing here reveals or changes state.
OPEN = {
    ("GET", "/health"), ("GET", "/wol-health"),
    ("GET", "/"), ("GET", "/upstream"), ("GET", "/ui"),  # redirects
    ("GET", "/favicon.ico"),
}
ASSETS = ("/ui/app.js", "/ui/style.css", "/ui/favicon.svg", "/ui/missing.js")
SAMPLES = {"model": "m", "tail": "models", "id": "1"}


def registered_routes(plan: Plan) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the app registers; `*` routes as GET and
    POST, placeholders filled with sample values."""
    app = build_app(create_services(plan))
    out: list[tuple[str, str]] = []
    for route in app.router.routes():
        path = re.sub(r"\{(\w+)[^}]*\}", lambda m: SAMPLES[m.group(1)], route.resource.canonical)
        for method in (("GET", "POST") if route.method == "*" else (route.method,)):
            out.append((method, path))
    return sorted(set(out))


def status_of(p: SplitProxy, method: str, path: str,
              headers: dict[str, str]) -> tuple[int, bytes]:
    """Status and raw head of one request on its own connection; only the head is read
    (some routes stream forever, and HEAD on a stream route sends a body anyway)."""
    body = b'{"model": "nope"}' if method == "POST" else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close",
             "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with connect(p) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    return int(head.split(b" ", 2)[1]), head


@pytest.mark.parametrize("mode", [(), ("--no-fast-path",)], ids=["fast-path", "aiohttp-only"])
def test_every_route_needs_the_key_except_the_open_ones(
    split_proxy: Callable[..., SplitProxy], record_file: Path, mode: tuple[str, ...]
) -> None:
    plan = surface_plan([fake_model("m", record_file)], apiKeys=(KEY,), logToStdout="none")
    routes = registered_routes(plan)
    assert len(routes) > 60 and ("GET", "/upstream/models") in routes
    p = split_proxy(plan, *mode)
    ws = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()}
    for method, path in routes:
        without, head = status_of(p, method, path, {})
        with_key, _ = status_of(p, method, path, AUTH)
        if (method if method != "HEAD" else "GET", path) in OPEN:
            assert without != 401, (method, path)
        else:
            assert without == 401, (method, path, without)
            assert b'\r\nWWW-Authenticate: Basic realm="llama-swap"' in head, (method, path)
        assert with_key != 401, (method, path)
    for path in ASSETS:  # the UI's static files load before the prompt is answered
        assert status_of(p, "GET", path, {})[0] in (200, 404), path
    assert status_of(p, "GET", "/upstream/m/ws", ws)[0] == 401
    assert status_of(p, "GET", "/upstream/m/ws", {**ws, **AUTH})[0] != 401
    assert status_of(p, "OPTIONS", "/running", {})[0] == 204


def test_a_browser_is_prompted_for_the_ui(
    split_proxy: Callable[..., SplitProxy], record_file: Path
) -> None:
    p = split_proxy(surface_plan([fake_model("m", record_file)], apiKeys=(KEY,)))
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for page in ("/ui/", "/ui/logs", "/ui/config", "/ui/activity"):
        status, _ = http_get(p, page, browser)
        assert status == 401, page
    raw = status_of(p, "GET", "/ui/", browser)[1]
    assert b"\r\nWWW-Authenticate: Basic realm=\"llama-swap\"\r\n" in raw
    basic = "Basic " + base64.b64encode(f"me:{KEY}".encode()).decode()
    status, body = http_get(p, "/ui/", {**browser, "Authorization": basic})
    assert status == 200 and b"<html" in body.lower()
    for asset in ("/ui/app.js", "/ui/style.css", "/favicon.ico"):
        assert http_get(p, asset, browser)[0] == 200, asset


async def test_keys_are_redacted_in_running_captures_and_logs(
    split_proxy: Callable[..., SplitProxy], record_file: Path
) -> None:
    # the model's command line quotes the key (a wrapper passing it to its server)
    model = fake_model("m", record_file, cmd=(
        "sh", "-c", f"exec {FAKE} --port ${{PORT}} --model m --record {record_file} # {KEY}"))
    plan = surface_plan([model], apiKeys=(KEY,), captureBuffer=5, logLevel="debug",
                        logToStdout="both")
    p = split_proxy(plan)
    sensitive = {"Authorization": f"Bearer {KEY}", "X-Api-Key": KEY, "Cookie": f"k={KEY}",
                 "Proxy-Authorization": f"Basic {KEY}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(p.url + "/v1/chat/completions", json={"model": "m"},
                          headers=sensitive) as resp:
            assert resp.status == 200
        async with s.get(p.url + "/running", headers=AUTH) as resp:
            running = await resp.text()
        async with s.get(p.url + "/api/metrics", headers=AUTH) as resp:
            entries = await resp.json()
        async with s.get(p.url + f"/api/captures/{entries[0]['id']}", headers=AUTH) as resp:
            capture = await resp.json()
    assert "[REDACTED]" in running and KEY not in running
    assert {capture["req_headers"][h] for h in sensitive} == {"[REDACTED]"}
    logs = proxy_log_text(p, AUTH)
    assert "/v1/chat/completions" in logs and KEY not in logs
    assert KEY not in p.stderr_text()


async def test_the_upstream_log_does_not_quote_a_key_from_a_command_line(
    split_proxy: Callable[..., SplitProxy], record_file: Path
) -> None:
    model = fake_model("m", record_file, cmd=(
        "sh", "-c", f"exec {FAKE} --port ${{PORT}} --model m --record {record_file} # {KEY}"))
    p = split_proxy(surface_plan([model], apiKeys=(KEY,), logToStdout="both"))
    async with aiohttp.ClientSession() as s:
        async with s.post(p.url + "/v1/chat/completions", json={"model": "m"},
                          headers=AUTH) as resp:
            assert resp.status == 200
    assert KEY not in "".join(p.stdout)


def test_listening_beyond_loopback_without_keys_warns(
    split_proxy: Callable[..., SplitProxy],
) -> None:
    exposed = split_proxy(surface_plan([], logToStdout="none"), "--listen", "0.0.0.0:0")
    warning = "without apiKeys: anyone who can reach the port"
    deadline = time.monotonic() + 5  # printed just after the "listening on" line
    while warning not in exposed.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert warning in exposed.stderr_text()
    assert re.search(r"\[WARN\] listening on 0\.0\.0\.0 without apiKeys", proxy_log_text(exposed))
    keyed = split_proxy(surface_plan([], apiKeys=(KEY,), logToStdout="none"),
                        "--listen", "0.0.0.0:0")
    local = split_proxy(surface_plan([], logToStdout="none"))
    assert warning not in keyed.stderr_text() + local.stderr_text()


# --- keys and child processes -------------------------------------------------------------


def test_secrets_are_known_and_redacted() -> None:
    plan = surface_plan([], apiKeys=("sk-a", "sk-a-longer"))
    assert secrets_of(plan) == ("sk-a", "sk-a-longer")
    assert redact("x sk-a-longer y sk-a", secrets_of(plan)) == "x [REDACTED] y [REDACTED]"
    env = {"PATH": "/bin", "LLAMA_KEY": "sk-a", "OTHER": "v"}
    assert inherited_env(env, secrets_of(plan)) == {"PATH": "/bin", "OTHER": "v"}


async def test_model_processes_do_not_inherit_the_keys(
    tmp_path: Path, record_file: Path
) -> None:
    """A config that reads its key from the environment (`${env.LLAMA_SWAP_KEY}`) must not
    hand that variable to every model server."""
    dump = tmp_path / "env.json"
    script = ("import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w')); "
              f"os.execv({FAKE!r}, [{FAKE!r}] + sys.argv[2:])")
    model = fake_model("m", record_file)
    model = dataclasses.replace(
        model, cmd=("python3", "-c", script, str(dump), *model.cmd[1:]))  # same port
    plan = surface_plan([model], apiKeys=(KEY,), logToStdout="none")
    from llama_swap.compiler.plan import plan_to_json
    from tests.e2e.conftest import LLAMA_SWAP
    from tests.e2e.hardening import _pump

    path = tmp_path / "plan.json"
    path.write_text(plan_to_json(plan))
    proc = subprocess.Popen([LLAMA_SWAP, "--plan", str(path), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "LLAMA_SWAP_KEY": KEY})
    p = SplitProxy(proc)
    import threading

    ready = threading.Event()
    threading.Thread(target=_pump, args=(proc.stderr, p.stderr, ready), daemon=True).start()
    try:
        assert ready.wait(20)
        url = p.stderr_text().split("listening on", 1)[1].split()[0]
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/v1/chat/completions", json={"model": "m"},
                              headers=AUTH) as resp:
                assert resp.status == 200
        inherited: dict[str, Any] = json.loads(dump.read_text())
    finally:
        p.stop()
    assert KEY not in inherited.values()
