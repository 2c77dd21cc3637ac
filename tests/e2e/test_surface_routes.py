"""Every route of the HTTP surface through the real proxy, against the fake upstream's echo.

Each row says what the client sends and what must reach the upstream (path, query,
method, body); the `fake` block of the upstream's answer shows what arrived.
"""

from __future__ import annotations

import asyncio
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

from llama_swap.compiler.plan import Capabilities, Filters, Peer, freeze
from llama_swap.runtime.core.inference_routes import JSON_ROUTES, VERSIONLESS_ROUTES, forward_path
from tests.e2e import surface_fixtures
from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import fetch, surface_plan, with_model

peer_server = surface_fixtures.peer_server

MULTIPART_ROUTES = ("/v1/audio/transcriptions", "/v1/images/edits")
GET_ROUTES = ("/v1/audio/voices", "/sdapi/v1/loras", "/props")


async def test_every_model_dispatched_route_reaches_the_upstream(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("m", record_file, aliases=("m-alias",))]))
    failures: list[str] = []
    async with aiohttp.ClientSession() as s:
        for path in (*JSON_ROUTES, *VERSIONLESS_ROUTES):
            expected = forward_path(path)
            status, _, raw = await fetch(s, "POST", p.url + path, json={"model": "m-alias", "x": 1})
            fake = json.loads(raw).get("fake", {}) if status == 200 else {}
            if (status, fake.get("path"), fake.get("body")) != (200, expected, {"model": "m-alias", "x": 1}):
                failures.append(f"POST {path}: {status} {raw[:200]!r}")
        for path in MULTIPART_ROUTES:
            form = aiohttp.FormData()
            form.add_field("model", "m")
            form.add_field("file", b"\x00\x01" * 5000, filename="f.bin")
            status, _, raw = await fetch(s, "POST", p.url + path, data=form)
            fake = json.loads(raw).get("fake", {}) if status == 200 else {}
            parts = [(part["name"], part["bytes"]) for part in fake.get("parts", [])]
            if (status, fake.get("path"), parts) != (200, path, [("model", 1), ("file", 10000)]):
                failures.append(f"POST {path} (multipart): {status} {raw[:300]!r}")
        for path in GET_ROUTES:
            status, _, raw = await fetch(s, "GET", p.url + path + "?model=m&x=y")
            fake = json.loads(raw).get("fake", {}) if status == 200 else {}
            if (status, fake.get("path"), fake.get("query"), fake.get("method")) != (200, path, "model=m&x=y", "GET"):
                failures.append(f"GET {path}: {status} {raw[:200]!r}")
    assert failures == []


async def test_model_errors(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)]))
    async with aiohttp.ClientSession() as s:
        status, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"messages": []})
        assert (status, json.loads(raw)) == (404, {"src": "llama-swap", "error": {
            "message": "no model id could be identified", "type": "invalid_request_error",
            "param": None, "code": "not_found"}})
        status, headers, raw = await fetch(s, "POST", p.url + "/v1/embeddings", json={"model": "ghost"},
                                           headers={"Accept": "text/plain"})
        assert status == 404 and raw.startswith(b"llama-swap: ") and b"ghost" in raw
        status, _, raw = await fetch(s, "GET", p.url + "/v1/audio/voices")
        assert status == 404
        status, _, _ = await fetch(s, "GET", p.url + "/no/such/route")
        assert status == 404
        status, _, _ = await fetch(s, "GET", p.url + "/v1/chat/completions")
        assert status == 405


async def test_filters_reach_the_upstream_and_untouched_bodies_pass_byte_for_byte(
    proxy: Any, record_file: Path
) -> None:
    m = with_model(
        fake_model("m", record_file),
        useModelName="served-name",
        filters=Filters(stripParams=("secret",), setParams=freeze({"opts.temp": 0.5}),
                        setParamsByID=freeze({"m-hot": {"opts.temp": 1.5}})),
    )
    plain = fake_model("plain", record_file)
    p = proxy(surface_plan([m, plain]))
    async with aiohttp.ClientSession() as s:
        _, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions",
                                json={"model": "m", "secret": 1, "messages": []})
        assert json.loads(raw)["fake"]["body"] == {"model": "served-name", "messages": [], "opts": {"temp": 0.5}}
        _, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "m-hot"})
        assert json.loads(raw)["fake"]["body"] == {"model": "served-name", "opts": {"temp": 1.5}}
        odd = b'{ "model" :  "plain",\n\t"messages": [ ] ,"n":1.50 }'
        _, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions", data=odd,
                                headers={"Content-Type": "application/json"})
        assert json.loads(raw)["fake"]["bytes"] == len(odd)
        form = aiohttp.FormData()
        form.add_field("model", "m")
        form.add_field("file", b"abc", filename="a.wav")
        _, _, raw = await fetch(s, "POST", p.url + "/v1/audio/transcriptions", data=form)
        parts = json.loads(raw)["fake"]["parts"]
        assert parts[0]["value"] == "served-name" and parts[1]["name"] == "file"


async def test_models_list_and_cors(proxy: Any, record_file: Path, peer_server: Any) -> None:
    peer_url = peer_server()
    m = with_model(fake_model("m", record_file, aliases=("m2",)), name="Model M",
                   capabilities=Capabilities(in_=("text",), out=("text",), tools=True))
    hidden = with_model(fake_model("hidden", record_file), unlisted=True)
    p = proxy(surface_plan([m, hidden], peers=(Peer(id="far", proxy=peer_url, models=("remote-1",)),),
                           includeAliasesInList=True))
    async with aiohttp.ClientSession() as s:
        status, headers, raw = await fetch(s, "GET", p.url + "/v1/models", headers={"Origin": "http://ui"})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://ui"
        data = json.loads(raw)["data"]
        assert [r["id"] for r in data] == ["far/remote-1", "m", "m2"]  # peers by full name
        assert data[1]["name"] == "Model M" and data[1]["capabilities"] == {"function_calling": True}
        assert data[0]["meta"] == {"llamaswap": {"type": "peer", "peerID": "far"}}
        status, headers, _ = await fetch(s, "OPTIONS", p.url + "/v1/chat/completions",
                                         headers={"Access-Control-Request-Headers": "authorization, x-b"})
        assert status == 204 and headers["Access-Control-Allow-Headers"] == "authorization, x-b"


async def test_upstream_passthrough(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("org/m", record_file, aliases=("short",)), fake_model("b", record_file)]))
    async with aiohttp.ClientSession() as s:
        status, headers, _ = await fetch(s, "GET", p.url + "/upstream/org/m?x=1")
        assert (status, headers["Location"]) == (301, "/upstream/org/m/?x=1")
        status, headers, _ = await fetch(s, "POST", p.url + "/upstream/short")
        assert (status, headers["Location"]) == (308, "/upstream/short/")
        status, _, raw = await fetch(s, "GET", p.url + "/upstream/org/m/app.js")
        assert status == 409 and json.loads(raw)["error"]["message"] == (
            "model org/m is not loaded; path matches upstream.ignorePaths")
        status, _, raw = await fetch(s, "POST", p.url + "/upstream/short/props?q=2", data=b"raw-bytes")
        fake = json.loads(raw)["fake"]
        assert (status, fake["model"], fake["path"], fake["query"], fake["bytes"]) == (
            200, "org/m", "/props", "q=2", 9)
        status, _, raw = await fetch(s, "GET", p.url + "/upstream/org/m/app.js")
        assert status == 200 and json.loads(raw)["fake"]["path"] == "/app.js"
        status, _, raw = await fetch(s, "GET", p.url + "/upstream/nope/x")
        assert (status, json.loads(raw)["error"]["message"]) == (404, "model not found")
        status, headers, _ = await fetch(s, "GET", p.url + "/upstream")
        assert (status, headers["Location"]) == (302, "/ui/models")


async def test_admin_routes(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("a", record_file), fake_model("b", record_file)]))
    async with aiohttp.ClientSession() as s:
        assert (await fetch(s, "GET", p.url + "/health"))[::2] == (200, b"OK")
        assert (await fetch(s, "GET", p.url + "/wol-health"))[::2] == (200, b"OK")
        status, headers, _ = await fetch(s, "GET", p.url + "/")
        assert (status, headers["Location"]) == (302, "/ui")
        status, _, raw = await fetch(s, "GET", p.url + "/api/version")
        info = json.loads(raw)
        assert status == 200 and set(info) == {"version", "commit", "build_date"}
        assert info["version"] == metadata.version("llama-swap-py") and info["commit"]
        await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "a"})
        status, _, raw = await fetch(s, "GET", p.url + "/running")
        assert [r["model"] for r in json.loads(raw)["running"]] == ["a"]
        assert (await fetch(s, "GET", p.url + "/unload"))[::2] == (200, b"OK")
        status, _, raw = await fetch(s, "GET", p.url + "/running")
        assert json.loads(raw) == {"running": [], "profile": None}
        status, _, raw = await fetch(s, "GET", p.url + "/logs")
        assert status == 200 and b'"GET /running HTTP/1.1" 200' in raw
        status, headers, _ = await fetch(s, "GET", p.url + "/logs", headers={"Accept": "text/html"})
        assert (status, headers["Location"]) == (302, "/ui/")


async def test_peers(proxy: Any, record_file: Path, peer_server: Any) -> None:
    base = peer_server("remote-model")
    peers = (
        Peer(id="keyed", proxy=base + "/base", apiKey="sk-peer", models=("remote-1",),
             filters=Filters(setParams=freeze({"added": True}))),
        Peer(id="shadowed", proxy=base, models=("local", "remote-2")),
    )
    p = proxy(surface_plan([fake_model("local", record_file)], peers=peers))
    async with aiohttp.ClientSession() as s:
        status, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions?k=v",
                                     json={"model": "remote-1"}, headers={"Authorization": "Bearer client"})
        fake = json.loads(raw)["fake"]
        assert status == 200 and fake["path"] == "/base/v1/chat/completions" and fake["query"] == "k=v"
        assert fake["headers"]["Authorization"] == "Bearer sk-peer" and fake["headers"]["x-api-key"] == "sk-peer"
        assert fake["body"] == {"model": "remote-1", "added": True}
        status, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "local"})
        assert json.loads(raw)["fake"]["model"] == "local"  # a local model wins over a peer's
        async with s.post(p.url + "/v1/chat/completions",
                          json={"model": "remote-2", "stream": True}) as resp:
            assert resp.headers["X-Accel-Buffering"] == "no"
            text = (await resp.read()).decode()
        assert text.rstrip().endswith("data: [DONE]")


async def test_dead_peer_is_502(proxy: Any, record_file: Path) -> None:
    from tests.e2e.procs import free_port

    peers = (Peer(id="dead", proxy=f"http://127.0.0.1:{free_port()}", models=("gone",)),)
    p = proxy(surface_plan([fake_model("m", record_file)], peers=peers))
    async with aiohttp.ClientSession() as s:
        status, _, raw = await fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "gone"})
    assert status == 502 and json.loads(raw)["error"]["message"].startswith("peer proxy error: ")


async def test_loading_state_then_the_real_stream(proxy: Any, record_file: Path) -> None:
    m = with_model(fake_model("slow", record_file, "--start-delay", "1.0"), sendLoadingState=True)
    p = proxy(surface_plan([m]))
    reasoning, content = "", ""
    async with aiohttp.ClientSession() as s:
        async with s.post(p.url + "/v1/chat/completions",
                          json={"model": "slow", "stream": True, "messages": []}) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if not line.startswith(b"data: {"):
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"]
                reasoning += delta.get("reasoning_content") or ""
                content += delta.get("content") or ""
    assert reasoning.startswith("━━━━━\nllama-swap loading model: slow\n") and "Done! (" in reasoning
    assert content.startswith("tok0")
    await asyncio.sleep(0)


async def test_preload_loads_models_at_start(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("a", record_file), fake_model("b", record_file)], preload=("b",)))
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            _, _, raw = await fetch(s, "GET", p.url + "/running")
            running = json.loads(raw)["running"]
            if running and running[0]["state"] == "ready":
                break
            await asyncio.sleep(0.05)
    assert [(r["model"], r["state"]) for r in running] == [("b", "ready")]
    assert "preloading model: b" in p.log_text()


async def test_upstream_websockets_pass_through(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([surface_fixtures.ws_model("ws-model")]))
    async with aiohttp.ClientSession() as s, s.ws_connect(p.url + "/upstream/ws-model/ws?room=1") as ws:
        await ws.send_str("hello")
        assert await asyncio.wait_for(ws.receive_str(), 15) == "echo:hello:room=1"
        await ws.send_bytes(b"abc")
        assert await asyncio.wait_for(ws.receive_bytes(), 15) == b"cba"
