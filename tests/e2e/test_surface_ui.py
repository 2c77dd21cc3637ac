"""The built-in UI end to end: a real `llama-swap` subprocess with real fake-upstream models.

The pages are fetched over HTTP and read for what they show (model names, states,
in-flight counts, activity rows, the last reload error with its file and line);
the Load/Unload endpoints the buttons post to really start and stop processes,
as `/running` confirms.  Waits are polls with a generous deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from llama_swap.compiler.plan import Peer
from tests.e2e.conftest import FAKE, LLAMA_SWAP, Proxy, fake_model, launch
from tests.e2e.procs import free_port
from tests.e2e.surface_fixtures import fetch, surface_plan, with_model

WAIT = 30.0
KEY = "sk-ui-e2e"


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def page(s: aiohttp.ClientSession, url: str, **kw: Any) -> str:
    status, _, raw = await fetch(s, "GET", url, **kw)
    assert status == 200, (url, status, raw[:300])
    return raw.decode()


def row_state(html: str, model: str) -> str:
    found = re.search(rf'<tr data-model="{re.escape(model)}" data-state="(\w+)">', html)
    assert found, f"no row for {model}"
    return found.group(1)


def row_inflight(html: str, model: str) -> int:
    row = html.split(f'<tr data-model="{model}"', 1)[1].split("</tr>", 1)[0]
    found = re.search(r'<td class="num inflight">(\d+)</td>', row)
    assert found
    return int(found.group(1))


async def running(s: aiohttp.ClientSession, url: str, **kw: Any) -> dict[str, str]:
    _, _, raw = await fetch(s, "GET", url + "/running", **kw)
    return {r["model"]: r["state"] for r in json.loads(raw)["running"]}


async def test_models_page_and_the_load_unload_buttons(proxy: Any, record_file: Path) -> None:
    a = with_model(fake_model("org/a", record_file, aliases=("first",)), name="Model A",
                   description="the <a> model")
    b = fake_model("b", record_file)
    broken = fake_model("broken", record_file, "--fail", "exit-on-start")
    peer = Peer(id="far", proxy="http://127.0.0.1:1", models=("far-model",))
    p = proxy(surface_plan([a, b, broken], peers=(peer,)))
    async with aiohttp.ClientSession() as s:
        html = await page(s, p.url + "/ui/")
        assert [row_state(html, m) for m in ("broken", "b", "org/a")] == ["stopped"] * 3
        assert "Model A" in html and "the &lt;a&gt; model" in html and ">first<" in html
        assert '<tr data-peer-model="far/far-model"><td class="id">far/far-model</td><td>far</td>' in html

        status, _, body = await fetch(s, "POST", p.url + "/api/models/load/first")  # an alias
        assert (status, body) == (200, b"OK")
        assert await running(s, p.url) == {"org/a": "ready"}
        html = await page(s, p.url + "/ui/models?partial=1")
        assert row_state(html, "org/a") == "ready" and row_state(html, "b") == "stopped"
        assert "1 of 3 loaded" in html

        status, _, _ = await fetch(s, "POST", p.url + "/api/models/load/b")  # serial: a swap
        assert status == 200 and await running(s, p.url) == {"b": "ready"}
        assert row_state(await page(s, p.url + "/ui/"), "org/a") == "stopped"

        status, _, body = await fetch(s, "POST", p.url + "/api/models/load/broken")
        assert status == 502 and b"broken" in body
        status, _, body = await fetch(s, "POST", p.url + "/api/models/load/far-model")
        assert (status, json.loads(body)["error"]["message"]) == (404, "model not found")

        status, _, body = await fetch(s, "POST", p.url + "/api/models/unload/b")
        assert (status, body) == (200, b"OK") and await running(s, p.url) == {}
        await fetch(s, "POST", p.url + "/api/models/load/org/a")
        assert await running(s, p.url) == {"org/a": "ready"}
        status, _, _ = await fetch(s, "POST", p.url + "/api/models/unload")  # "Unload all"
        assert status == 200 and await running(s, p.url) == {}
        assert row_state(await page(s, p.url + "/ui/"), "org/a") == "stopped"


async def test_models_page_counts_requests_in_flight(proxy: Any, record_file: Path) -> None:
    slow = fake_model("slow", record_file, "--response-delay", "3")
    p = proxy(surface_plan([slow]))
    async with aiohttp.ClientSession() as s:
        request = asyncio.ensure_future(
            fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "slow"}))

        async def one_in_flight() -> bool:
            html = await page(s, p.url + "/ui/models?partial=1")
            return row_inflight(html, "slow") == 1 and row_state(html, "slow") == "ready"

        await eventually(one_in_flight, "the slow request to show as in flight")
        assert (await request)[0] == 200
        assert row_inflight(await page(s, p.url + "/ui/"), "slow") == 0


async def test_activity_and_logs_pages(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)]))
    async with aiohttp.ClientSession() as s:
        status, _, _ = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "m"})
        assert status == 200

        async def recorded() -> bool:
            return '<td class="model">m</td><td>/v1/chat/completions</td>' in await page(
                s, p.url + "/ui/activity")

        await eventually(recorded, "the request in the activity page")
        html = await page(s, p.url + "/ui/activity")
        assert '<td class="num status">200</td>' in html and "1 request recorded" in html

        html = await page(s, p.url + "/ui/logs?source=m")
        assert '<option value="m" selected>' in html and '<option value="proxy">' in html
        # the stream the log view reads
        async with s.get(p.url + "/logs/stream/m") as resp:
            assert resp.status == 200
            first = await asyncio.wait_for(resp.content.readany(), WAIT)
        assert first  # the model's own output history


async def test_static_rules_and_auth(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)], apiKeys=(KEY,)))
    basic = {"Authorization": "Basic " + base64.b64encode(f"me:{KEY}".encode()).decode()}
    async with aiohttp.ClientSession() as s:
        for path in ("/ui/", "/ui/logs", "/ui/no/such/page"):
            status, headers, _ = await fetch(s, "GET", p.url + path)
            assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
        status, _, raw = await fetch(s, "GET", p.url + "/ui/app.js")  # static files are open
        assert status == 200 and raw.startswith(b"// llama-swap UI")
        status, headers, raw = await fetch(s, "GET", p.url + "/favicon.ico")
        assert status == 200 and headers["Content-Type"] == "image/x-icon" and raw[:4] == b"\0\0\1\0"

        status, headers, _ = await fetch(s, "GET", p.url + "/ui", headers=basic)
        assert (status, headers["Location"]) == (301, "/ui/")
        html = await page(s, p.url + "/ui/", headers=basic)
        assert row_state(html, "m") == "stopped"
        assert (await page(s, p.url + "/ui/app.js", headers=basic)).startswith("// llama-swap UI")
        status, _, body = await fetch(s, "GET", p.url + "/ui/assets/gone.js", headers=basic)
        assert (status, body) == (404, b"404 page not found\n")
        html = await page(s, p.url + "/ui/models/m/detail", headers=basic)  # SPA-style fallback
        assert row_state(html, "m") == "stopped"

        status, _, _ = await fetch(s, "POST", p.url + "/api/models/load/m")
        assert status == 401 and await running(s, p.url, headers=basic) == {}
        status, _, _ = await fetch(s, "POST", p.url + "/api/models/load/m", headers=basic)
        assert status == 200 and await running(s, p.url, headers=basic) == {"m": "ready"}


async def test_config_page_shows_the_last_reload_error_with_file_and_line(
    tmp_path: Path, record_file: Path
) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    good = (f"healthCheckTimeout: 15\nmodels:\n  m:\n"
            f"    cmd: {FAKE} --port {port} --model m\n    proxy: http://127.0.0.1:{port}\n")
    config.write_text(good)
    started: list[Proxy] = []
    try:
        p = launch([LLAMA_SWAP, "--config", str(config), "--listen", "127.0.0.1:0"],
                   record_file, started)
        async with aiohttp.ClientSession() as s:
            html = await page(s, p.url + "/ui/config")
            assert str(config) in html and "No reload error." in html
            config.write_text(good + "  other:\n    proxy: http://127.0.0.1:1\n")  # no cmd, line 6
            status, _, _ = await fetch(s, "POST", p.url + "/api/config/reload")
            assert status == 422
            html = await page(s, p.url + "/ui/config")
            assert "Last reload error" in html
            assert f'<code class="where">{config}:6' in html, html
            assert "models.other" in html
    finally:
        for proc in started:
            proc.stop()
