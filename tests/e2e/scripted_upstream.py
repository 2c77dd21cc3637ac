"""A tiny raw-socket HTTP/1.1 upstream with behaviour the fake cannot show.

- `POST /v1/chat/completions`: 200 JSON, advertising keep-alive; but the SECOND request
  on any connection is read and then dropped (socket closed, no byte answered).  This
  is what a proxy sees when a model dies mid-request on a pooled connection: the
  upstream may have run it, so it must not be sent again (a 502).
- `POST /v1/completions`: 400 with a JSON error body, a custom header and hop-by-hop
  headers that must not reach the client.
- `POST /v1/embeddings`: 200 JSON echoing the request headers it received.
- `GET /health`: 200.
Each answer carries `"conn": <connection number>, "dropped": <dropped so far>`.

Run: python scripted_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys

dropped = 0
conn_ids = itertools.count(1)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


def response(status: str, payload: dict[str, object], extra: str = "") -> bytes:
    body = json.dumps(payload).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n"
        f"Keep-Alive: timeout=5, max=100\r\n{extra}\r\n"
    ).encode() + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global dropped
    conn = next(conn_ids)
    served = 0
    try:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            method, path, headers, _ = req
            served += 1
            info = {"conn": conn, "dropped": dropped}
            if path == "/health":
                writer.write(response("200 OK", {"status": "ok"}))
            elif path == "/v1/chat/completions":
                if served == 2:
                    dropped += 1
                    return  # close without answering
                writer.write(response("200 OK", {"ok": True, **info}))
            elif path == "/v1/completions":
                writer.write(
                    response(
                        "400 Bad Request",
                        {"error": {"message": "bad prompt", "type": "invalid_request_error"}},
                        "X-Upstream: scripted\r\nProxy-Authenticate: Basic\r\n",
                    )
                )
            else:
                writer.write(response("200 OK", {"headers": headers, **info}))
            await writer.drain()
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
