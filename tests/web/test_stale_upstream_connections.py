"""A pooled upstream connection the upstream closed while idle is never reused, even when
the event loop has not read the upstream's EOF yet.

Real llama-server closes its connection right after every streamed answer; a client that
sends its next request at once can otherwise get a pooled connection whose close is still
in flight, and since a POST is never sent twice, that request would fail with a 502.
The upstream here is a plain threaded server, so it closes its side while the event loop
under test is blocked: the kernel has the EOF, the loop has not seen it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from multidict import CIMultiDict

from llama_swap.compiler.plan import Model
from llama_swap.runtime.http.aio.proxy import UpstreamPool as AioUpstreamPool
from llama_swap.runtime.http.fast.upstream import UpstreamPool as FastUpstreamPool
from llama_swap.runtime.http.socket_probe import peer_closed

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" \
         b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


class ClosingUpstream:
    """Answers each request with a chunked event stream, then closes the connection
    (as llama-server does after a streamed answer); counts the requests it read."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1
                conn.sendall(ANSWER)
            self.closed.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def upstream() -> Iterator[ClosingUpstream]:
    server = ClosingUpstream()
    yield server
    server.close()


def wait_for_close_without_the_loop(server: ClosingUpstream) -> None:
    """Block (the event loop does not run) until the upstream closed its side, and give
    the kernel a moment to deliver the FIN."""
    assert server.closed.wait(5)
    time.sleep(0.05)


async def test_peer_closed_sees_an_eof_the_loop_has_not_read(upstream: ClosingUpstream) -> None:
    pool = FastUpstreamPool("127.0.0.1", upstream.port, connect_timeout=5, idle_timeout=90)
    conn = await pool.connect()
    assert not peer_closed(conn.transport)  # open and quiet
    assert conn.transport is not None
    conn.transport.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    # the answer and the EOF arrive while the loop is blocked: neither is read yet
    wait_for_close_without_the_loop(upstream)
    assert peer_closed(conn.transport)
    pool.close()


async def test_the_fast_pool_drops_a_connection_whose_eof_is_not_read_yet(
    upstream: ClosingUpstream,
) -> None:
    pool = FastUpstreamPool("127.0.0.1", upstream.port, connect_timeout=5, idle_timeout=90)
    conn = await pool.connect()
    pool.put(conn)
    assert pool.take() is conn  # a live idle connection is reused
    assert conn.transport is not None
    conn.transport.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    pool.put(conn)  # back in the pool as if its answer had completed
    wait_for_close_without_the_loop(upstream)
    assert pool.take() is None
    pool.close()


async def test_the_aiohttp_pool_sends_the_next_post_on_a_fresh_connection(
    upstream: ClosingUpstream,
) -> None:
    model = Model(id="m", cmd=("x",), cmdStop=None, proxy=f"http://127.0.0.1:{upstream.port}",
                  checkEndpoint="/health", ttl=0)
    pool = AioUpstreamPool()
    try:
        first = await pool.send(model, "POST", "/v1/chat/completions", CIMultiDict(), b"{}")
        assert first.status == 200 and (await first.read()).endswith(b"[DONE]\n\n")
        first.release()  # back in aiohttp's pool (it announced no close)
        wait_for_close_without_the_loop(upstream)
        second = await pool.send(model, "POST", "/v1/chat/completions", CIMultiDict(), b"{}")
        assert second.status == 200
        await second.read()
        second.release()
        assert upstream.requests == 2  # each POST reached the upstream exactly once
    finally:
        await pool.close()


LENGTH_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" \
               b"Keep-Alive: timeout=5, max=100\r\n\r\n"
CHUNKED_BODY = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


class KeepingUpstream:
    """Keeps every connection open and answers each request by its path: `/length` with a
    Content-Length body, `/chunked-whole` with a chunked answer sent with its head in one
    write, `/chunked-later` with its head first and the body a moment later.  Counts the
    connections it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                path = head.split(b" ")[1]
                if path == b"/length":
                    conn.sendall(LENGTH_ANSWER)
                elif path == b"/chunked-whole":
                    conn.sendall(CHUNKED_HEAD + CHUNKED_BODY)
                else:
                    conn.sendall(CHUNKED_HEAD)
                    time.sleep(0.05)  # the head is read before the body exists
                    conn.sendall(CHUNKED_BODY)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def keeping() -> Iterator[KeepingUpstream]:
    server = KeepingUpstream()
    yield server
    server.close()


async def exchange(pool: AioUpstreamPool, model: Model, path: str) -> None:
    """A GET answered and read to its end, its connection handed back as the proxy does."""
    resp = await pool.send(model, "GET", path, CIMultiDict(), None)
    assert resp.status == 200
    await resp.read()
    resp.release()


@pytest.mark.parametrize("path", ["/chunked-whole", "/chunked-later"])
async def test_the_aiohttp_pool_never_reuses_a_connection_that_carried_a_chunked_answer(
    keeping: KeepingUpstream, path: str
) -> None:
    # llama-server closes such a connection a moment after the answer, announcing nothing;
    # here the upstream keeps it open, so only the proxy's own rule keeps it out of the pool
    model = Model(id="m", cmd=("x",), cmdStop=None, proxy=f"http://127.0.0.1:{keeping.port}",
                  checkEndpoint="/health", ttl=0)
    pool = AioUpstreamPool()
    try:
        await exchange(pool, model, path)
        await exchange(pool, model, "/length")
        assert keeping.connections == 2
    finally:
        await pool.close()


async def test_the_aiohttp_pool_reuses_a_connection_after_an_answer_with_a_length(
    keeping: KeepingUpstream,
) -> None:
    model = Model(id="m", cmd=("x",), cmdStop=None, proxy=f"http://127.0.0.1:{keeping.port}",
                  checkEndpoint="/health", ttl=0)
    pool = AioUpstreamPool()
    try:
        for _ in range(3):
            await exchange(pool, model, "/length")
        await exchange(pool, model, "/chunked-later")  # still the same connection
        assert keeping.connections == 1
    finally:
        await pool.close()
