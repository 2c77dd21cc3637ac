"""Peer forwarding: URL joining, apiKey injection, streaming, 502 on failure."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from llama_swap.compiler.plan import Peer, Timeouts
from llama_swap.runtime.http.aio.peers import PeerPool, join_url
from llama_swap.runtime.http.request.body import BytesBody
from tests.e2e.procs import free_port


@pytest.mark.parametrize(
    ("base", "path", "query", "url"),
    [
        ("https://openrouter.ai/api", "/v1/chat/completions", "", "https://openrouter.ai/api/v1/chat/completions"),
        ("https://h/api/", "/v1/x", "", "https://h/api/v1/x"),
        ("http://h:8080", "/v1/x", "a=1", "http://h:8080/v1/x?a=1"),
        ("http://h/?k=v", "/p", "a=1", "http://h/p?k=v&a=1"),
        ("http://h/base", "p", "", "http://h/base/p"),
    ],
)
def test_join_url(base: str, path: str, query: str, url: str) -> None:
    assert join_url(base, path, query) == url


async def test_forwarding(serve) -> None:
    async def remote(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(3):
                await resp.write(f"data: {i}\n\n".encode())
                await asyncio.sleep(0.01)
            await resp.write_eof()
            return resp
        return web.json_response({
            "path": request.path_qs,
            "auth": request.headers.get("Authorization"),
            "xkey": request.headers.get("x-api-key"),
            "host": request.headers.get("Host"),
            "body": (await request.read()).decode(),
        })

    remote_app = web.Application()
    remote_app.router.add_route("*", "/{tail:.*}", remote)
    remote_client = await serve(remote_app)
    base = f"http://127.0.0.1:{remote_client.port}/api"
    keyed = Peer(id="keyed", proxy=base, apiKey="sk-peer", models=("m",))
    open_peer = Peer(id="open", proxy=base, models=("m",))
    dead = Peer(id="dead", proxy=f"http://127.0.0.1:{free_port()}", models=("m",),
                timeouts=Timeouts(connect=2, responseHeader=5))
    peers = {"keyed": keyed, "open": open_peer, "dead": dead}
    pool = PeerPool()

    async def handler(request: web.Request) -> web.StreamResponse:
        peer = peers[request.match_info["peer"]]
        body = BytesBody(await request.read())
        return await pool.forward(request, peer, "/v1/" + request.match_info["rest"], body)

    app = web.Application()
    app.router.add_route("*", "/{peer}/{rest:.*}", handler)
    app.on_cleanup.append(lambda _: pool.close())
    client = await serve(app)

    r = await client.post("/keyed/chat/completions?q=1", data=b'{"model":"m"}',
                          headers={"Authorization": "Bearer client-key", "x-api-key": "client-key"})
    got = await r.json()
    assert got["path"] == "/api/v1/chat/completions?q=1"
    assert got["auth"] == "Bearer sk-peer" and got["xkey"] == "sk-peer"
    assert got["host"] == f"127.0.0.1:{remote_client.port}" and got["body"] == '{"model":"m"}'

    got = await (await client.post("/open/x", headers={"Authorization": "Bearer client-key"})).json()
    assert got["auth"] == "Bearer client-key"

    r = await client.get("/open/stream")
    assert r.headers["X-Accel-Buffering"] == "no"
    assert await r.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"

    r = await client.post("/dead/x", data=b"{}")
    assert r.status == 502 and r.content_type == "application/json"
    error = (await r.json())["error"]
    assert error["message"].startswith("peer proxy error: ") and error["code"] == "bad_gateway"
    r = await client.post("/dead/x", data=b"{}", headers={"Accept": "text/plain"})
    assert r.status == 502 and (await r.text()).startswith("llama-swap: peer proxy error: ")


async def test_each_peer_has_its_own_response_header_timeout(serve) -> None:
    """A peer that accepts but never answers is cut off by its own responseHeader timeout
    (502); another peer on the same slow server without the timeout still gets its answer."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    remote_app = web.Application()
    remote_app.router.add_route("*", "/{tail:.*}", slow)
    remote = await serve(remote_app)
    base = f"http://127.0.0.1:{remote.port}"
    peers = {
        "impatient": Peer(id="impatient", proxy=base, models=("m",), timeouts=Timeouts(responseHeader=1)),
        "patient": Peer(id="patient", proxy=base, models=("m",)),
    }
    pool = PeerPool()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await pool.forward(request, peers[request.match_info["peer"]], "/x", None)

    app = web.Application()
    app.router.add_get("/{peer}", handler)
    app.on_cleanup.append(lambda _: pool.close())
    client = await serve(app)

    patient = asyncio.ensure_future(client.get("/patient"))
    r = await client.get("/impatient")
    assert r.status == 502
    assert (await r.json())["error"]["message"].startswith(
        "peer proxy error: [impatient] no response headers")
    assert not patient.done()
    release.set()
    r = await patient
    assert (r.status, await r.text()) == (200, "late")
