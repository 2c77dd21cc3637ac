"""Parity and hostile-input checks of the HTTP surface through the real proxy (review findings).

Each test names what the Go original answers and checks that the real `llama-swap`
subprocess answers the same (or, for inputs the original mishandles, answers sanely).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp

from llama_swap.compiler.plan import Filters, Peer, freeze
from tests.e2e import surface_fixtures
from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import fetch, surface_plan, with_model

peer_server = surface_fixtures.peer_server


async def test_unrouted_paths_and_wrong_methods_answer_like_the_go_mux_even_with_api_keys(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)], apiKeys=("k",)))
    async with aiohttp.ClientSession() as s:
        status, headers, body = await fetch(s, "GET", p.url + "/no/such/route")
        assert (status, body) == (404, b"404 page not found\n")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        status, headers, body = await fetch(s, "PUT", p.url + "/v1/models")
        assert (status, body, headers["Allow"]) == (405, b"Method Not Allowed\n", "GET, HEAD")
        status, headers, _ = await fetch(s, "GET", p.url + "/v1/chat/completions")
        assert (status, headers["Allow"]) == (405, "POST")
        # a path that is not canonical is redirected to its clean form first, query kept
        for raw, clean in (("//v1/models?x=1", "/v1/models?x=1"), ("/v1/../health", "/health"),
                           ("/./no/such/", "/no/such/")):
            reader, writer = await asyncio.open_connection(*p.url.removeprefix("http://").split(":"))
            writer.write(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = (await reader.read()).decode()
            writer.close()
            assert answer.startswith("HTTP/1.1 301") and f"\r\nLocation: {clean}\r\n" in answer, answer
        # a known route still needs the key
        status, _, _ = await fetch(s, "GET", p.url + "/v1/models")
        assert status == 401


async def test_empty_tails_reach_their_handlers(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)]))
    async with aiohttp.ClientSession() as s:
        status, _, body = await fetch(s, "POST", p.url + "/api/models/unload/")
        assert (status, json.loads(body)["error"]["message"]) == (404, "model not found")
        async with s.get(p.url + "/logs/stream/") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"


async def test_unloading_a_peer_model_is_model_not_found_as_in_the_original(
    proxy: Any, record_file: Path, peer_server: Any
) -> None:
    peer = Peer(id="far", proxy=peer_server(), models=("remote",))
    p = proxy(surface_plan([fake_model("m", record_file)], peers=(peer,)))
    async with aiohttp.ClientSession() as s:
        status, _, body = await fetch(s, "POST", p.url + "/api/models/unload/remote",
                                      headers={"Accept": "text/plain"})
        assert (status, body) == (404, b"llama-swap: model not found")  # local ids/aliases only


async def test_error_bodies_are_compact_json_and_survive_unencodable_names(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)]))
    async with aiohttp.ClientSession() as s:
        status, _, body = await fetch(s, "POST", p.url + "/v1/chat/completions", json={})
        assert (status, body) == (404, (
            b'{"src":"llama-swap","error":{"message":"no model id could be identified",'
            b'"type":"invalid_request_error","param":null,"code":"not_found"}}'
        ))
        # a lone surrogate escape is valid JSON text but not encodable as UTF-8
        raw = b'{"model":"x\\ud800"}'
        for accept in ("", "text/plain", "text/html"):
            status, _, body = await fetch(s, "POST", p.url + "/v1/chat/completions", data=raw,
                                          headers={"Content-Type": "application/json", "Accept": accept})
            assert status == 404 and b"no local server found for requested model" in body, (accept, body)
        # invalid UTF-8 inside the JSON: the name is unknown, as in the original (not "no model")
        status, _, body = await fetch(s, "POST", p.url + "/v1/chat/completions", data=b'{"model":"m\xff"}',
                                      headers={"Content-Type": "application/json"})
        assert status == 404 and b"no local server found for requested model" in body


async def test_filters_re_encode_bodies_holding_lone_surrogates(
    proxy: Any, record_file: Path, peer_server: Any
) -> None:
    m = with_model(fake_model("m", record_file), filters=Filters(setParams=freeze({"t": 1})))
    peer = Peer(id="far", proxy=peer_server(), models=("remote",), filters=Filters(setParams=freeze({"t": 2})))
    p = proxy(surface_plan([m], peers=(peer,)))
    async with aiohttp.ClientSession() as s:
        for name, t in (("m", 1), ("remote", 2)):
            raw = b'{"model":"%s","text":"a\\ud800b"}' % name.encode()
            status, _, body = await fetch(s, "POST", p.url + "/v1/chat/completions", data=raw,
                                          headers={"Content-Type": "application/json"})
            assert status == 200, body
            assert json.loads(body)["fake"]["body"] == {"model": name, "text": "a\ud800b", "t": t}


async def test_a_broken_multipart_form_has_no_model_as_in_the_original(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)]))
    async with aiohttp.ClientSession() as s:
        for ctype, data in (
            ("multipart/form-data", b"garbage"),  # no boundary
            ("multipart/form-data; boundary=XYZ", b"--ABC\r\n\r\nm\r\n--ABC--\r\n"),  # wrong boundary
        ):
            status, _, body = await fetch(s, "POST", p.url + "/v1/audio/transcriptions", data=data,
                                          headers={"Content-Type": ctype})
            assert (status, json.loads(body)["error"]["message"]) == (404, "no model id could be identified")


async def test_model_status_lists_peer_models_with_every_field(
    proxy: Any, record_file: Path, peer_server: Any
) -> None:
    peer = Peer(id="far", proxy=peer_server(), models=("remote",))
    p = proxy(surface_plan([fake_model("m", record_file)], peers=(peer,)))
    async with aiohttp.ClientSession() as s, s.get(p.url + "/api/events") as resp:
        statuses: list[Any] = []
        buf = b""
        while not statuses:
            buf += await asyncio.wait_for(resp.content.readany(), 10)
            for frame in buf.split(b"\n\n")[:-1]:
                msg = json.loads(frame.split(b"data:", 1)[1])
                if msg["type"] == "modelStatus":
                    statuses = json.loads(msg["data"])
    assert statuses[-1] == {"id": "far/remote", "name": "", "description": "", "state": "",
                            "unlisted": False, "peerID": "far"}


async def test_streams_the_client_leaves_are_logged_with_their_status(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)]))
    async with aiohttp.ClientSession() as s:
        for path in ("/api/events", "/logs/stream"):
            async with s.get(p.url + path) as resp:
                assert resp.status == 200
                await asyncio.wait_for(resp.content.readany(), 10)
    pattern = re.compile(r'"GET (/api/events|/logs/stream) HTTP/1.1" (\d+) (\d+)')
    seen: dict[str, tuple[int, int]] = {}
    for _ in range(100):
        seen = {m[1]: (int(m[2]), int(m[3])) for m in pattern.finditer(p.log_text())}
        if len(seen) == 2:
            break
        await asyncio.sleep(0.05)
    assert {path: status for path, (status, _) in seen.items()} == {"/api/events": 200, "/logs/stream": 200}
    assert all(size > 0 for _, size in seen.values())


async def test_a_client_leaving_mid_upload_cancels_the_upstream_request_and_frees_the_model(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(surface_plan([fake_model("a", record_file), fake_model("b", record_file)]))
    async with aiohttp.ClientSession() as s:
        status, _, _ = await fetch(s, "GET", p.url + "/upstream/a/health")
        assert status == 200
        _, _, running = await fetch(s, "GET", p.url + "/running")
        upstream = json.loads(running)["running"][0]["proxy"]
        boundary = "cut"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\na\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n').encode()
        host, port = p.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
            + f"Content-Length: {len(head) + 50 * 2**20}\r\n\r\n".encode() + head
        )
        for _ in range(4):
            writer.write(b"\0" * 2**20)
            await writer.drain()

        async def upstream_current() -> int:
            _, _, raw = await fetch(s, "GET", upstream + "/fake/stats")
            return int(json.loads(raw)["current"])

        for _ in range(200):  # the upload reaches the upstream while it streams
            if await upstream_current() == 1:
                break
            await asyncio.sleep(0.02)
        assert await upstream_current() == 1
        writer.transport.abort()
        for _ in range(200):
            if await upstream_current() == 0:
                break
            await asyncio.sleep(0.02)
        assert await upstream_current() == 0
        # serial: b can only start once a's abandoned request has let go of it
        status, _, body = await asyncio.wait_for(
            fetch(s, "POST", p.url + "/v1/chat/completions", json={"model": "b"}), 30
        )
        assert status == 200, body
