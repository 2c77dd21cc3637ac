"""What the bad-input run (test_bad_input.py) found, and two known faults, one test each,
on both front doors.

- A HEAD answer carries headers only, on the streaming routes too (`/api/events`,
  `/logs/stream`, `/logs/stream/{name}`), and the connection goes on with the next request.
- An API key header that is not valid UTF-8 is a 401 like any wrong key (the fast path
  dropped the connection without an answer).
- A path with `.` or `..` segments, however encoded (`%2e%2e`, `%2f`), is a 400 and never
  reaches a model server (`/upstream/a/../x` was forwarded, the model got `/x`).
- After a 401 or 413 decided from the head, the proxy reads and discards the unread body
  only briefly (aiohttp's lingering time, lowered from 10 s to `LINGERING_TIME`), then
  closes; a client that reads the answer still gets it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.serve import LINGERING_TIME
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.raw_http import Conn, request

KEY = "sk-regress"
AUTH = f"Authorization: Bearer {KEY}"
MIB = 1 << 20
DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])


def keyed_plan(record: Path, limit: int = 1 * MIB) -> Plan:
    plan = make_plan([fake_model("a", record)])
    return replace(plan, settings=replace(plan.settings, apiKeys=(KEY,), maxRequestBody=limit))


@DOORS
def test_a_head_to_a_streaming_route_gets_headers_only_and_the_connection_goes_on(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(keyed_plan(record_file), *door)
    for path in ("/api/events", "/logs/stream", "/logs/stream/proxy", "/logs/stream/a",
                 "/logs", "/health", "/v1/models"):
        with Conn(p.url, timeout=5) as conn:
            conn.send(request("HEAD", path, AUTH) + request("GET", "/health", close=True))
            head = conn.read_answer(head_only=True)
            assert head.status == 200, path
            health = conn.read_answer()  # the very next bytes are the next answer
            assert (health.status, health.body) == (200, b"OK"), (path, conn.buf[:200])


@DOORS
def test_a_key_header_that_is_not_valid_utf8_is_a_401(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(keyed_plan(record_file), *door)
    body = json.dumps({"model": "a", "messages": []}).encode()
    for header in (b"Authorization: Bearer " + KEY.encode() + b"\xff", b"x-api-key: \xc3",
                   b"Authorization: Bearer \xed\xa0\x80"):
        with Conn(p.url) as conn:
            conn.send(request("POST", "/v1/chat/completions", "Content-Type: application/json",
                              header, body=body, close=True))
            answer = conn.read_answer()
        assert answer.status == 401, header
        assert json.loads(answer.body)["src"] == "llama-swap"
    assert "Fatal error" not in p.log_text()


@DOORS
def test_dot_segments_are_a_400_however_encoded_and_never_reach_the_model(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(keyed_plan(record_file), *door)
    for path in ("/upstream/a/../etc/passwd", "/upstream/a/%2e%2e/%2e%2e/etc/passwd",
                 "/upstream/a/..%2f..%2fetc%2fpasswd", "/upstream/a/./v1/models",
                 "/ui/%2e%2e/%2e%2e/etc/passwd", "/ui/..%2fstatic%2fapp.js",
                 "/logs/stream/..%2fproxy"):
        for method in ("GET", "POST") if path.startswith("/upstream/") else ("GET",):
            with Conn(p.url) as conn:
                conn.send(request(method, path, AUTH, body=b"{}" if method == "POST" else b"",
                                  close=True))
                answer = conn.read_answer()
            assert answer.status == 400, (method, path, answer.status)
            assert ".." in json.loads(answer.body)["error"]["message"]
    assert p.records() == []  # nothing reached the model server


async def push_body_until_closed(url: str, head: bytes, total: int) -> dict[str, float]:
    """Send `head`, then zeros as fast as the server takes them, while reading the answer.
    Returns the status, the seconds from the answer to the server's close, and the body
    bytes the server had accepted at the answer and at the close."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    sent = 0
    block = b"0" * MIB

    async def send() -> None:
        nonlocal sent
        writer.write(head)
        while sent < total:
            writer.write(block)
            await writer.drain()
            sent += len(block)

    sender = asyncio.ensure_future(send())
    got = b""
    try:
        async with asyncio.timeout(30):
            while b"\r\n\r\n" not in got:
                data = await reader.read(65536)
                assert data, "closed without an answer"
                got += data
            answered, at_answer = time.monotonic(), sent
            try:
                while await reader.read(65536):
                    pass
            except ConnectionResetError:  # closed with our body unread: a reset
                pass
            closed, at_close = time.monotonic(), sent
    finally:
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionError):
            pass
        writer.close()
    return {"status": int(got.split(b" ", 2)[1]), "linger": closed - answered,
            "mb_at_answer": at_answer / MIB, "mb_at_close": at_close / MIB}


@DOORS
async def test_after_an_early_401_or_413_the_unread_body_is_discarded_only_briefly(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(keyed_plan(record_file), *door)
    total = 64 * 1024 * MIB  # far more than anyone can send in the lingering time
    for status, key in ((401, ""), (413, f"{AUTH}\r\n")):
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"{key}Content-Length: {total}\r\n\r\n").encode()
        seen = await push_body_until_closed(p.url, head, total)
        print(f"\n{door or 'fast'} {status}: {seen}")
        assert seen["status"] == status
        assert seen["linger"] < LINGERING_TIME + 1.5, seen


@DOORS
def test_a_body_that_cannot_be_decoded_is_a_400_not_a_500(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(keyed_plan(record_file), *door)
    body = json.dumps({"model": "a", "messages": []}).encode()
    broken_chunks = b"5\r\n" + body[:5] + b"\r\nzz\r\n" + body[5:] + b"\r\n0\r\n\r\n"
    cases = {
        "gzip that is not gzip": request("POST", "/v1/chat/completions", AUTH,
                                         "Content-Type: application/json",
                                         "Content-Encoding: gzip", body=body, close=True),
        "deflate that is not deflate": request("POST", "/upstream/a/v1/chat/completions", AUTH,
                                               "Content-Type: application/json",
                                               "Content-Encoding: deflate", body=body, close=True),
        "broken chunk framing": request("POST", "/v1/chat/completions", AUTH,
                                        "Content-Type: application/json",
                                        "Transfer-Encoding: chunked", body=broken_chunks,
                                        length=False, close=True),
    }
    for name, data in cases.items():
        with Conn(p.url) as conn:
            conn.send(data)
            answer = conn.read_answer()
        assert answer.status == 400, (name, answer.status, answer.body[:200])
        assert answer.closes, name
        if answer.header("content-type") == "application/json":  # ours, not the parser's
            assert "invalid request body" in json.loads(answer.body)["error"]["message"], name
    # aiohttp still logs the broken body once more when it discards the rest of it
    # ("Unhandled exception: RequestPayloadError"), after the 400 went out; nothing else
    crashes = [line for line in p.log_text().splitlines()
               if "Unhandled exception" in line and "RequestPayloadError" not in line]
    assert crashes == []


@DOORS
def test_a_model_name_that_is_not_valid_text_breaks_no_page_or_metric(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(keyed_plan(record_file), *door)
    with Conn(p.url) as conn:  # a JSON escape that decodes to a lone surrogate
        conn.send(request("POST", "/v1/chat/completions", AUTH, "Content-Type: application/json",
                          body=b'{"model": "\\ud800"}', close=True))
        answer = conn.read_answer()
    assert answer.status == 404
    assert "\ufffd" in json.loads(answer.body)["error"]["message"]
    for path in ("/metrics", "/api/metrics", "/ui/activity", "/logs"):
        with Conn(p.url) as conn:
            conn.send(request("GET", path, AUTH, close=True))
            assert conn.read_answer().status == 200, path
