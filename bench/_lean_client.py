"""A lean HTTP/1.1 load generator for the benchmarks: N keep-alive connections, each
sending the next request as soon as the previous response is complete.

Why not aiohttp's client: it spends about as much CPU per request as the fake
upstream does to answer (~0.08 ms), so on a 2-core machine the measuring client
competes with the proxy and the upstream for the cores and the throughput
ratio mostly measures the client.  This one is an `asyncio.Protocol` that
writes prepared bytes and reads Content-Length framed responses (~0.02 ms per
request), the role `wrk` or `oha` play elsewhere.  Latency is measured from
the write to the end of the response.

By default any answer but a 200 fails the run; given an `errors` list, a non-200
answer (or a connection the server dropped) is recorded there instead and the
run goes on, which is how the side-by-side suite (`python -m bench all`) counts
a peer's errors.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit


class _Conn(asyncio.Protocol):
    def __init__(self, request: bytes, count: int, done: asyncio.Future[None], out: list[float],
                 errors: list[str] | None = None):
        self.request = request
        self.errors = errors
        self.left = count
        self.done = done
        self.out = out
        self.buf = bytearray()
        self.t0 = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.t0 = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            ok = head.startswith(b"http/1.1 200")
            if not ok and self.errors is None:
                self._fail(RuntimeError(head.split(b"\r\n")[0].decode()))
                return
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail(RuntimeError("response without Content-Length"))
                return
            length = int(head[at + 17 :].split(b"\r\n", 1)[0])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            del self.buf[:total]
            now = time.perf_counter()
            if ok:
                self.out.append(now - self.t0)
            else:
                assert self.errors is not None
                self.errors.append(head.split(b"\r\n")[0].decode())
            self.left -= 1
            if self.left <= 0:
                assert self.transport is not None
                self.transport.close()
                if not self.done.done():
                    self.done.set_result(None)
                return
            self._send()

    def _fail(self, exc: Exception) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.done.done():
            return
        if self.errors is not None:
            self.errors.append(str(exc))
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self.errors is not None:  # counted; this connection's remaining requests are lost
            self.errors.append(f"connection lost: {exc!r}")
            self.done.set_result(None)
        else:
            self.done.set_exception(exc or ConnectionError("closed early"))


def post_bytes(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    u = urlsplit(url)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def drive(
    url: str, body: bytes, clients: int, per_client: int, out: list[float],
    errors: list[str] | None = None, headers: dict[str, str] | None = None,
) -> None:
    """`clients` connections, `per_client` sequential requests each; latencies of the 200s
    into `out`, other answers into `errors` when given (else they fail the run)."""
    u = urlsplit(url)
    loop = asyncio.get_running_loop()
    request = post_bytes(url, body, headers)
    futures = []
    for _ in range(clients):
        done: asyncio.Future[None] = loop.create_future()
        futures.append(done)
        await loop.create_connection(
            lambda done=done: _Conn(request, per_client, done, out, errors), u.hostname, u.port
        )
    await asyncio.gather(*futures)
