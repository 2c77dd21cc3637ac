"""The fast path (runtime/fastpath) under conditions the first tests did not reach.

Each test here pins a bug found in review, against real processes over real sockets:

- back-pressure: a slow client must not leave a pooled upstream connection with its
  reading paused (the next request on it would hang forever);
- request bodies the JSON parser cannot take (too deeply nested) are answered as the
  aiohttp path answers them, not by dropping the connection;
- request heads aiohttp refuses (control characters, an overflowing Content-Length,
  non-ASCII query bytes) get aiohttp's answer, not a forwarded request;
- a client that leaves mid-stream releases its upstream connection at once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.http.fast.relay import Relay
from llama_swap.runtime.http.fast.upstream import UpstreamPool
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_fastpath import (
    assert_same_answers,
    normalized,
    one,
    plan_with_everything,
    raw_request,
    side_by_side,
)

BIG = 4 << 20  # bytes of the large answer: far more than the socket buffers hold

# A raw upstream: POST /v1/audio/speech answers BIG bytes with a Content-Length in one write;
# the SHAPES paths answer in unusual shapes (no Content-Type, 204, chunked, close-delimited);
# any other request answers a small JSON body (so GET /health is 200).
UPSTREAM = r'''
import asyncio, json, sys

BIG = int(sys.argv[2])
served = {"n": 0}
SHAPES = {  # answers of unusual shapes, by path
    "/v1/images/generations": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nimage",
    "/infill": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "/v1/completions": b"HTTP/1.1 204 No Content\r\nX-Empty: yes\r\n\r\n",
    "/completion": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
    "/v1/rerank": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    "/v1/reranking": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\nConnection: close\r\n\r\n{\"cut\": "),
}

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if length:
                await reader.readexactly(length)
            served["n"] += 1
            if path in SHAPES:
                writer.write(SHAPES[path])
                await writer.drain()
                if b"Connection: close" in SHAPES[path]:
                    break
                continue
            if path == "/v1/audio/speech":
                body = b"x" * BIG
                ctype = b"application/octet-stream"
            else:
                body = json.dumps({"ok": True, "served": served["n"]}).encode()
                ctype = b"application/json"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype
                + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
'''


def raw_upstream_plan(tmp_path: Path, record: Path) -> Plan:
    script = tmp_path / "raw_upstream.py"
    script.write_text(UPSTREAM)
    model = fake_model("raw", record, cmd=(sys.executable, str(script), "${PORT}", str(BIG)))
    return make_plan([model], scheduler="fifo")


def post(path: str, body: Any, *headers: str, connection: str = "keep-alive") -> bytes:
    data = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json",
             f"Content-Length: {len(data)}", f"Connection: {connection}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def slow_reader_download(url: str) -> int:
    """Fetch the big answer on a connection with a tiny receive buffer, read slowly, so the
    proxy's write buffer to this client stays full and back-pressure engages throughout
    (the last upstream read included).  Returns the body bytes received."""
    host, port = host_port(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=8192)
    try:
        writer.write(post("/v1/audio/speech", {"model": "raw"}))
        await asyncio.sleep(0.3)  # let every buffer fill up
        got = 0
        async with asyncio.timeout(60):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            while got < BIG:
                chunk = await reader.read(4096)
                assert chunk, "connection closed early"
                got += len(chunk)
                await asyncio.sleep(0)  # slower than the proxy and the upstream
        return got
    finally:
        writer.close()


async def test_a_slow_client_does_not_leave_a_paused_upstream_connection_in_the_pool(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    p = proxy(raw_upstream_plan(tmp_path, record_file))
    for _ in range(6):  # the last upstream read must meet a full client buffer: repeat
        assert await slow_reader_download(p.url) == BIG
        # the next request reuses the pooled upstream connection: it must be read from
        resp = await asyncio.wait_for(one(p.url, post("/v1/chat/completions", {"model": "raw"},
                                                      connection="close")), 20)
        assert resp.status == 200
        assert json.loads(resp.body)["ok"] is True



class BackedUpClient:
    """The client side of a Relay as asyncio drives it: a transport whose `write` calls
    the protocol's `pause_writing` synchronously once more than `high` bytes are
    buffered (nobody reads them), as asyncio's and uvloop's transports do."""

    def __init__(self, high: int) -> None:
        self.high = high
        self.buffered = 0
        self.paused = False
        self.relay: Relay | None = None

    def write(self, data: bytes) -> None:
        self.buffered += len(data)
        if not self.paused and self.buffered > self.high and self.relay is not None:
            self.paused = True
            self.relay.pause()  # ClientConnection.pause_writing does exactly this

    def close(self) -> None:
        pass


async def test_a_connection_goes_back_to_the_pool_reading_even_if_the_last_write_paused() -> None:
    body = b"y" * 300_000

    handlers: list[asyncio.Task[Any]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool("127.0.0.1", port, connect_timeout=5, idle_timeout=60)
    loop = asyncio.get_running_loop()
    try:
        # the client's buffer passes its high-water mark only with the response's last bytes
        client = BackedUpClient(high=len(body) - 1)
        relay = Relay(client, None, False, loop.create_future())  # type: ignore[arg-type]
        client.relay = relay
        conn = await pool.connect()
        relay.conn = conn
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", relay)
        assert await asyncio.wait_for(relay.done, 10) is True
        assert client.paused
        reused = pool.take()
        assert reused is conn
        assert conn.transport is not None and conn.transport.is_reading()
    finally:
        pool.close()
        await asyncio.wait(handlers, timeout=5)  # they end when their connection closes
        server.close()
        await server.wait_closed()


NESTED = b'{"model": "a", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
GOOD_HEAD = raw_request("/v1/chat/completions", {"model": "a", "messages": []})
ODD_CASES = (
    # a body json.loads cannot take (RecursionError): aiohttp's answer is a 500
    ("deeply nested JSON", raw_request("/v1/chat/completions", raw_body=NESTED)),
    # heads aiohttp's parser refuses with a 400: never forwarded
    ("control character in a header value", GOOD_HEAD.replace(b"Host: ", b"X-Odd: a\x01b\r\nHost: ")),
    ("DEL in a header value", GOOD_HEAD.replace(b"Host: ", b"X-Odd: a\x7fb\r\nHost: ")),
    ("non-ASCII query", GOOD_HEAD.replace(b"completions HTTP", b"completions?q=\xff HTTP")),
    ("control character in the query", GOOD_HEAD.replace(b"completions HTTP", b"completions?q=\x01 HTTP")),
    ("Content-Length overflow", GOOD_HEAD.replace(b"Content-Length: ", b"Content-Length: 9" + b"0" * 30)),
    ("Content-Length past int()'s digit limit",
     GOOD_HEAD.replace(b"Content-Length: ", b"Content-Length: 9" + b"0" * 5000)),
    ("too many headers", GOOD_HEAD.replace(b"Host: ", b"".join(b"X-%d: 1\r\n" % i for i in range(1001)) + b"Host: ")),
    ("request target too long", GOOD_HEAD.replace(b"completions HTTP", b"completions?" + b"q" * 70_000 + b" HTTP")),
)


async def test_odd_requests_get_the_aiohttp_paths_answer(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    fast, slow = side_by_side(proxy, plan_with_everything, record_file, tmp_path)
    answers = await assert_same_answers(fast, slow, ODD_CASES)
    # aiohttp refuses every one of them
    assert all(a["status"] in (400, 500) for a in answers), answers
    assert not [r for r in fast.records() if r.get("path") != "/health"]  # nothing forwarded


async def test_answers_of_every_shape_are_relayed_as_the_aiohttp_path_relays_them(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    fast, slow = side_by_side(
        proxy, lambda record: raw_upstream_plan(tmp_path, record), record_file, tmp_path
    )
    for path in ("/v1/images/generations", "/infill", "/v1/completions", "/completion",
                 "/v1/rerank"):
        data = post(path, {"model": "raw"}, connection="close")
        got_slow = normalized(await one(slow.url, data))
        got_fast = normalized(await one(fast.url, data))
        assert got_fast == got_slow, path


async def test_a_small_answer_cut_off_mid_body_is_a_502_on_both_paths(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    """An answer with a small Content-Length is written whole once complete (as aiohttp's
    path does), so an upstream dying inside it gives a clean 502, not a truncated 200."""
    fast, slow = side_by_side(
        proxy, lambda record: raw_upstream_plan(tmp_path, record), record_file, tmp_path
    )
    data = post("/v1/reranking", {"model": "raw"}, connection="close")
    for url in (fast.url, slow.url):
        resp = await one(url, data)
        assert resp.status == 502, url
        error = json.loads(resp.body)["error"]["message"]
        assert error.startswith("[raw] upstream error: "), error
    # the connection that follows works
    again = await one(fast.url, post("/v1/images/generations", {"model": "raw"}, connection="close"))
    assert again.status == 200 and again.body == b"image"


async def test_many_exchanges_with_random_disconnects_leave_nothing_behind(
    proxy: Any, record_file: Path
) -> None:
    """Plain, streamed and abandoned streamed requests, 20 at a time: afterwards nothing is
    in flight, the router is idle, and the proxy holds no more sockets than its pool of
    idle upstream connections (at most one per concurrent request) and the listeners."""
    import psutil

    plan = make_plan([fake_model("m", record_file, "--tokens", "20", "--token-delay", "0.002")],
                     scheduler="fifo")
    p = proxy(plan)
    host, port = host_port(p.url)
    chat = post("/v1/chat/completions", {"model": "m", "messages": []}, connection="close")
    stream = post("/v1/chat/completions", {"model": "m", "stream": True}, connection="close")
    await one(p.url, chat)  # load the model
    proc = psutil.Process(p.proc.pid)
    baseline = proc.num_fds()

    async def exchange(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(stream if i % 3 else chat)
            if i % 3 == 2:  # leave after the first bytes of the stream
                await reader.read(100)
                writer.transport.abort()
                return
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    for batch in range(10):
        await asyncio.gather(*(exchange(batch * 20 + i) for i in range(20)))

    async def settled() -> str | None:
        text = (await one(p.url, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        body = text.body.decode()
        return body if "llamaswap_inflight_requests 0.0" in body else None

    async with asyncio.timeout(20):
        while await settled() is None:
            await asyncio.sleep(0.05)
    status = await one(p.url, b"GET /running HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert json.loads(status.body)["running"][0]["state"] == "ready"
    assert proc.num_fds() <= baseline + 20 + 2, (baseline, proc.num_fds())
    # and the model still answers
    assert (await one(p.url, chat)).status == 200
