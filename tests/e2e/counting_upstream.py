"""A raw-socket HTTP/1.1 upstream that counts the requests it read, for the retry rules.

- Every request read in full is appended to the file named on the command line (one
  line: method, path, the request's `X-Test` header), before it is answered, so a test
  can count how often the upstream saw (and could have run) a request.
- `X-Test: die`: the request is read in full, then the connection is closed without a
  byte of answer -- what a proxy sees when a model is killed mid-request.
- `X-Test: stream...`: a chunked event stream announcing keep-alive and no close; then,
  without reading another byte, the connection is closed LINGER seconds later -- what
  real llama-server does after every streamed answer (it closes a moment after the
  answer's last byte).  A request written in that moment is never read.
- anything else: 200 JSON with keep-alive; a connection then left idle for IDLE_CLOSE
  seconds is closed by the upstream (a keep-alive timeout), as llama-server closes its
  connections.
- `GET /health`: 200 (not counted).

Run: python counting_upstream.py PORT COUNT_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

try:  # imported from the tests (for IDLE_CLOSE), or run as a script from this folder
    from tests.e2e.scripted_upstream import read_request as read_raw
except ImportError:
    from scripted_upstream import read_request as read_raw  # type: ignore[no-redef]

IDLE_CLOSE = 1.0
LINGER = 0.3  # long enough that a proxy's next request always lands in it


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """A request read in full (the scripted upstream's reader), header names lower-cased."""
    req = await read_raw(reader)
    if req is None:
        return None
    method, path, headers, _ = req
    return method, path, {k.lower(): v for k, v in headers.items()}


def answer(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )


def event_stream() -> bytes:
    events = [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n\r\n%b0\r\n\r\n" % chunks
    )


def handler(count_file: Path) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_CLOSE):
                        req = await read_request(reader)
                except TimeoutError:
                    return  # idle too long: close, as a keep-alive timeout does
                if req is None:
                    return
                method, path, headers = req
                if path == "/health":
                    writer.write(answer(b'{"status":"ok"}'))
                    await writer.drain()
                    continue
                with count_file.open("a") as f:
                    f.write(f"{method} {path} {headers.get('x-test', '')}\n")
                if headers.get("x-test") == "die":
                    return  # read in full, then gone without answering
                if headers.get("x-test", "").startswith("stream"):
                    writer.write(event_stream())
                    await writer.drain()
                    await asyncio.sleep(LINGER)
                    return  # closed, whatever was sent meanwhile unread
                writer.write(answer(b'{"ok":true}'))
                await writer.drain()
        finally:
            writer.close()

    return handle


async def main(port: int, count_file: Path) -> None:
    server = await asyncio.start_server(handler(count_file), "127.0.0.1", port)  # type: ignore[arg-type]
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
