"""Read timeouts and the connection limit, on both front doors, with real sockets.

The proxy runs with ~1 s timeouts (`--head-timeout 1 --body-idle-timeout 1
--keepalive-timeout 2`); the sweeper checks every quarter of the shortest timeout,
so a connection is closed between its timeout and 1.25x plus scheduling noise.  Every
wait below is bounded; the checks of one server run side by side.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.hardening import SplitProxy, closed_by_peer, connect, http_get, split_proxy
from tests.e2e.surface_fixtures import surface_plan

__all__ = ["split_proxy"]

FLAGS = ("--head-timeout", "1", "--body-idle-timeout", "1", "--keepalive-timeout", "2")
MODES = {"fast-path": (), "aiohttp-only": ("--no-fast-path",)}
LATE = 2.5  # a 1 s timeout must have fired by then (sweeps every 0.25 s, a loaded machine)


def read_response(sock: socket.socket) -> bytes:
    """One response to a GET /health (small, with Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"OK"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def slowloris(p: SplitProxy, after_a_request: bool) -> float | None:
    """A partial head, then a byte every 0.3 s; seconds until the proxy closed it."""
    with connect(p) as sock:
        if after_a_request:  # the connection has been served (and handed to aiohttp) first
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(sock)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        sock.settimeout(0.3)
        while time.monotonic() - started < 6:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except OSError:
                return time.monotonic() - started
            try:
                sock.sendall(b"a")
            except OSError:
                return time.monotonic() - started
        return None


def stalled_body(p: SplitProxy, chunked: bool) -> float | None:
    """A complete head, the start of a body, then nothing.  A chunked body is never the
    fast path's: it reaches aiohttp (behind its guard) on both servers."""
    framing = "Transfer-Encoding: chunked\r\n\r\n40\r\n" if chunked else "Content-Length: 100\r\n\r\n"
    with connect(p) as sock:
        sock.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Type: application/json\r\n{framing}{{\"model\": ").encode())
        return closed_by_peer(sock, 6)


def silent(p: SplitProxy) -> float | None:
    """Connects and sends nothing."""
    with connect(p) as sock:
        return closed_by_peer(sock, 6)


def idle_keepalive(p: SplitProxy) -> tuple[bool, float | None]:
    """One request, then idle: (still open after the head timeout, when it was closed)."""
    with connect(p) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(sock)
        open_after_head_timeout = closed_by_peer(sock, 1.4) is None
        closed = closed_by_peer(sock, 5)
        return open_after_head_timeout, None if closed is None else closed + 1.4


@pytest.mark.parametrize("mode", list(MODES))
def test_read_timeouts(split_proxy: Callable[..., SplitProxy], mode: str) -> None:
    p = split_proxy(surface_plan([], logToStdout="none"), *FLAGS, *MODES[mode])
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(slowloris, p, False)
        later = pool.submit(slowloris, p, True)
        body_sized = pool.submit(stalled_body, p, False)
        body_chunked = pool.submit(stalled_body, p, True)
        quiet = pool.submit(silent, p)
        idle = pool.submit(idle_keepalive, p)
        for name, fut in (("slowloris", first), ("slowloris after a request", later),
                          ("stalled body", body_sized),
                          ("stalled chunked body", body_chunked), ("silent", quiet)):
            closed = fut.result()
            assert closed is not None and 0.9 <= closed <= LATE, (name, closed)
        open_at_1s, closed = idle.result()
        assert open_at_1s and closed is not None and 1.9 <= closed <= 2 + LATE, closed
    assert http_get(p, "/health")[0] == 200  # the server itself is fine


@pytest.mark.parametrize("mode", list(MODES))
def test_connections_over_the_limit_do_not_lock_out_a_normal_client(
    split_proxy: Callable[..., SplitProxy], mode: str
) -> None:
    p = split_proxy(surface_plan([], logToStdout="none"), "--max-connections", "20",
                    "--head-timeout", "30", *MODES[mode])
    with connect(p) as established:  # served once, then idle: kept while heads are waiting
        established.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(established)
        flood = [connect(p) for _ in range(60)]
        for i, sock in enumerate(flood):
            sock.sendall(b"GET /health HTTP/1.1\r\nX-Slow-%d: " % i)
        try:
            started = time.monotonic()
            assert http_get(p, "/health", timeout=5)[0] == 200
            assert time.monotonic() - started < 2
            time.sleep(0.3)
            still_open = sum(closed_by_peer(sock, 0.01) is None for sock in flood)
            assert still_open <= 20, still_open
            established.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(established).startswith(b"HTTP/1.1 200")
        finally:
            for sock in flood:
                sock.close()
