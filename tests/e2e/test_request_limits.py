"""Request bodies are judged before they are read, and bounded, on both front doors.

- Without a valid API key a request is refused (401) from its head: a 300 MB body sent
  without a key does not grow the proxy's memory, and the answer comes before the body
  was sent.
- `maxRequestBody` bounds every body: over the limit by its Content-Length is a 413
  (the OpenAI-style error body) before the body is read; a chunked upload without a
  length (JSON, multipart, `/upstream/...`) is a 413 once its bytes cross the limit.
  A body of exactly the limit passes.
- A deeply nested JSON body is a clean 400, not a crash.
The same bytes go to a server with the fast path and one with `--no-fast-path`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httptools
import psutil
import pytest

from llama_swap.compiler.plan import Plan
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_fastpath import KEY, Response, normalized, one, raw_request

MIB = 1 << 20
LIMIT = 1 * MIB
DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])


def limited_plan(record: Path, limit: int = LIMIT) -> Plan:
    plan = make_plan([fake_model("a", record)])
    return replace(plan, settings=replace(plan.settings, apiKeys=(KEY,), maxRequestBody=limit))


class RssPeak:
    """The highest RSS of a process, sampled every 10 ms in a thread while in use."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / MIB


async def stream_request(
    url: str, head: bytes, total: int, *, chunked: bool = False, first: bytes = b""
) -> tuple[Response, int]:
    """Send `head`, then a body of `total` bytes (`first`, then zeros) generated as it
    goes, while reading the answer; returns the answer and how many body bytes had been
    sent when it was complete.  Sending stops when the server closes the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    sent = 0
    at_answer: list[int] = []
    block = b"0" * MIB

    async def send() -> None:
        nonlocal sent
        writer.write(head)
        data = first
        while sent < total:
            piece = (data or block)[: total - sent]
            data = b""
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def receive() -> Response:
        resp = Response()
        parser = httptools.HttpResponseParser(resp)
        while not resp.complete:
            data = await reader.read(65536)
            assert data, "connection closed without an answer"
            parser.feed_data(data)
        at_answer.append(sent)
        resp.status = parser.get_status_code()
        return resp

    sender = asyncio.ensure_future(send())
    try:
        async with asyncio.timeout(60):
            resp = await receive()
    finally:
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionError):
            pass
        writer.close()
    return resp, at_answer[0]


def post_head(path: str, ctype: str, *, length: int | None, key: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Type: {ctype}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if key:
        lines.append(f"Authorization: Bearer {KEY}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_error(resp: Response, status: int, text: str) -> None:
    assert resp.status == status
    assert resp.header("content-type") == "application/json"
    body = json.loads(resp.body)
    assert body["src"] == "llama-swap" and text in body["error"]["message"]


@DOORS
async def test_a_300_mb_body_without_a_key_is_a_401_from_its_head_and_memory_stays_flat(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(limited_plan(record_file, limit=0), *door)  # no size limit: auth alone decides
    total = 300 * MIB
    head = post_head("/v1/chat/completions", "application/json", length=total, key=False)
    with RssPeak(p.proc.pid) as rss:
        resp, sent = await stream_request(p.url, head, total, first=b'{"model":"a","x":"')
    assert_error(resp, 401, "unauthorized")
    assert resp.header("connection") == "close"
    assert sent < total // 2  # answered from the head, long before the body was in
    assert rss.growth_mb < 48, f"the proxy grew by {rss.growth_mb:.0f} MB"


@DOORS
async def test_a_body_over_the_limit_by_its_length_is_a_413_before_it_is_read(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(limited_plan(record_file), *door)
    for path, ctype in (("/v1/chat/completions", "application/json"),
                        ("/v1/audio/transcriptions", "multipart/form-data; boundary=b"),
                        ("/upstream/a/v1/anything", "application/octet-stream")):
        head = post_head(path, ctype, length=LIMIT + 1)
        resp, sent = await stream_request(p.url, head, LIMIT + 1)
        assert_error(resp, 413, f"the limit is {LIMIT} bytes")
        assert resp.header("connection") == "close"


@DOORS
async def test_a_chunked_upload_is_a_413_once_it_crosses_the_limit(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(limited_plan(record_file), *door)
    multipart_start = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\na\r\n'
                       b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n')
    for path, ctype, first in (
        ("/v1/chat/completions", "application/json", b'{"model":"a","x":"'),
        ("/v1/audio/transcriptions", "multipart/form-data; boundary=b", multipart_start),
        ("/upstream/a/v1/anything", "application/octet-stream", b""),
    ):
        head = post_head(path, ctype, length=None)
        # far more than socket buffers hold: what was sent when the answer came is what
        # the proxy read before refusing (about the limit) plus what the kernel buffered
        resp, sent = await stream_request(p.url, head, 64 * LIMIT, chunked=True, first=first)
        assert_error(resp, 413, f"the limit is {LIMIT} bytes")
        assert sent < 32 * LIMIT, path


async def test_the_limit_answers_are_the_same_on_both_doors_and_the_limit_itself_passes(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    fast = proxy(limited_plan(record_file))
    slow = proxy(limited_plan(tmp_path / "other.jsonl"), "--no-fast-path")
    prefix = b'{"model":"a","input":"'
    exact = prefix + b"x" * (LIMIT - len(prefix) - 2) + b'"}'
    over = prefix + b"x" * (LIMIT - len(prefix) - 1) + b'"}'
    cases = [("exactly the limit", raw_request("/v1/embeddings", raw_body=exact), 200),
             ("one byte over", raw_request("/v1/embeddings", raw_body=over), 413),
             ("over, no key", raw_request("/v1/embeddings", raw_body=over, key=False), 401),
             ("over, text", raw_request("/v1/embeddings", "Accept: text/plain", raw_body=over), 413)]
    for name, data, status in cases:
        got = [normalized(await one(url, data)) for url in (fast.url, slow.url)]
        assert got[0]["status"] == status, name
        if status != 200:  # the fake's echo names its own port
            assert got[0] == got[1], name


@DOORS
async def test_a_deeply_nested_json_body_is_a_clean_400(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(limited_plan(record_file), *door)
    for body in (b"[" * 100_000, b'{"model":"a","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        resp = await one(p.url, raw_request("/v1/chat/completions", raw_body=body))
        assert_error(resp, 400, "nested too deeply")


async def test_a_capture_id_too_long_for_int_is_a_clean_404(proxy: Any, record_file: Path) -> None:
    p = proxy(limited_plan(record_file))
    for raw_id, status in (("1" * 5000, 404), ("9" * 19, 404), ("-" + "1" * 5000, 404), ("x1", 400)):
        data = (f"GET /api/captures/{raw_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}"
                "\r\nConnection: close\r\n\r\n").encode()
        resp = await one(p.url, data)
        assert resp.status == status, raw_id[:20]
        assert json.loads(resp.body)["src"] == "llama-swap"
