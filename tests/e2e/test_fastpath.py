"""The fast path (runtime/fastpath) against real processes over real sockets.

- Differential: the same requests, byte for byte, to two llama-swap processes on
  equal plans, one with the fast path and one with `--no-fast-path`; the answers
  (status, headers, bodies, what the upstream received) must match.
- Connections: a keep-alive connection that starts on the fast path and moves to
  aiohttp (handoff) keeps working in both orders; pipelined requests are answered
  in order; `Connection: close` is honoured; a large JSON body passes whole.
- The fast path is really used: its counters on /metrics.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httptools

from llama_swap.compiler.plan import Filters, Plan, Timeouts
from tests.e2e.conftest import fake_model, make_plan

SCRIPTED = str(Path(__file__).with_name("scripted_upstream.py"))
KEY = "sk-fast"
VOLATILE = {"pid", "port", "created", "Host", "host"}


def plan_with_everything(record: Path) -> Plan:
    """Models for every shape a fast-path request can take: plain, aliased, filtered,
    an upstream with scripted errors; API keys on."""
    a = fake_model("a", record, "--tokens", "3", aliases=("alias-a",))
    f = replace(
        fake_model("f", record),
        filters=Filters(stripParams=("temperature",), setParams=MappingProxyType({"top_k": 5})),
    )
    s = fake_model("s", record, cmd=(sys.executable, SCRIPTED, "${PORT}"))
    slow = replace(
        fake_model("slow", record, "--response-delay", "3"), timeouts=Timeouts(responseHeader=1)
    )
    dead = replace(  # "ready" at once (no health check), but nothing listens on its port
        fake_model("dead", record, cmd=("sleep", "60")), checkEndpoint="none"
    )
    plan = make_plan([a, f, s, slow, dead], scheduler="fifo")
    return replace(
        plan,
        settings=replace(plan.settings, apiKeys=(KEY,), logLevel="info"),
        routing=replace(plan.routing, priority=MappingProxyType({"a": 3})),
    )


def side_by_side(proxy: Any, plan: Any, record: Path, tmp_path: Path) -> tuple[Any, Any]:
    """`plan(record_file)` served twice: with the fast path, and with `--no-fast-path`
    (its fakes recording elsewhere)."""
    return proxy(plan(record)), proxy(plan(tmp_path / "other.jsonl"), "--no-fast-path")


async def assert_same_answers(
    fast: Any, slow: Any, cases: Sequence[tuple[str, bytes]]
) -> list[dict[str, Any]]:
    """Send each case to both servers; the normalized answers must be equal (returned)."""
    answers = []
    for name, data in cases:
        got_slow = normalized(await one(slow.url, data))
        got_fast = normalized(await one(fast.url, data))
        assert got_fast == got_slow, name
        answers.append(got_slow)
    return answers


def raw_request(
    path: str, body: Any = None, *headers: str, key: bool = True, raw_body: bytes | None = None
) -> bytes:
    data = raw_body if raw_body is not None else json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", "Host: llama-swap.test", "Content-Type: application/json",
             f"Content-Length: {len(data)}", "Connection: close", *headers]
    if key:
        lines.append(f"Authorization: Bearer {KEY}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class Response:
    """One HTTP/1.1 response read off a socket (body de-chunked)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode().lower(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


async def one(url: str, data: bytes) -> Response:
    """Send `data` on a fresh connection and read one response."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        return await read_one(reader, bytewise=False)
    finally:
        writer.close()


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def normalized(resp: Response) -> dict[str, Any]:
    """What must be equal on both paths: status, headers (not Date/Server/length, which
    follow from the body) and the body with per-process values (pids, ports, times) out."""
    headers = sorted(
        (k, v) for k, v in resp.headers
        if k not in ("date", "server", "content-length", "transfer-encoding", "connection")
    )
    body: Any = resp.body
    ctype = resp.header("content-type") or ""
    if "event-stream" in ctype:
        body = [
            _scrub(json.loads(line[5:])) if line[5:].strip().startswith(b"{") else line
            for line in resp.body.split(b"\n") if line.startswith(b"data:")
        ]
    elif "json" in ctype:
        body = _scrub(json.loads(resp.body))
    return {"status": resp.status, "headers": headers, "body": body}


CASES: Sequence[tuple[str, bytes]] = (
    ("chat", raw_request("/v1/chat/completions", {"model": "a", "messages": []})),
    ("streamed chat", raw_request("/v1/chat/completions", {"model": "a", "stream": True})),
    ("alias", raw_request("/v1/chat/completions", {"model": "alias-a", "messages": []})),
    ("versionless", raw_request("/v/chat/completions", {"model": "a", "messages": []})),
    ("query string", raw_request("/v1/embeddings?x=1&y=%20z", {"model": "a", "input": "q"})),
    ("headers forwarded", raw_request(
        "/v1/embeddings", {"model": "a", "input": "q"},
        "X-Custom: kept", "X-Forwarded-For: 10.0.0.1", "Keep-Alive: timeout=5",
        "Proxy-Authorization: Basic Zm9vOmJhcg==", "Connection: X-Private", "X-Private: no",
    )),
    ("filters", raw_request("/v1/embeddings", {"model": "f", "input": "q", "temperature": 2})),
    ("upstream error passthrough", raw_request("/v1/completions", {"model": "s", "prompt": "x"})),
    ("response header timeout", raw_request("/v1/chat/completions", {"model": "slow"})),
    ("unknown model", raw_request("/v1/chat/completions", {"model": "nope"})),
    ("unknown model, text", raw_request("/v1/chat/completions", {"model": "nope"},
                                        "Accept: text/plain")),
    ("no model", raw_request("/v1/chat/completions", {"messages": []})),
    ("bad JSON", raw_request("/v1/chat/completions", raw_body=b"{not json")),
    ("no API key", raw_request("/v1/chat/completions", {"model": "a"}, key=False)),
    ("wrong API key", raw_request("/v1/chat/completions", {"model": "a"}, "x-api-key: wrong",
                                  key=False)),
    ("x-api-key", raw_request("/v1/chat/completions", {"model": "a"}, f"x-api-key: {KEY}",
                              key=False)),
    ("not canonical", raw_request("/v1//chat/completions", {"model": "a"})),
    ("chunked request body", (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
        + f"Authorization: Bearer {KEY}\r\n\r\n".encode()
        + b'e\r\n{"model": "a"}\r\n0\r\n\r\n'
    )),
)


async def test_the_fast_path_answers_exactly_as_the_aiohttp_path_does(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    fast, slow = side_by_side(proxy, plan_with_everything, record_file, tmp_path)
    await assert_same_answers(fast, slow, CASES)
    # and the fast one really took the fast path for the requests it could
    # (10 of the cases are plain JSON requests for a local model with a valid key)
    assert (await fast_path_counters(fast.url))["requests"] == 10
    assert await fast_path_counters(slow.url) == {}


GET_METRICS = (
    f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    "Connection: close\r\n\r\n"
).encode()


async def fast_path_counters(url: str) -> dict[str, int]:
    """The fast path's counters from /metrics ({} when it is off)."""
    text = (await one(url, GET_METRICS)).body.decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("llamaswap_fast_path_"):
            name, value = line.split()
            out[name.removeprefix("llamaswap_fast_path_").removesuffix("_total")] = int(float(value))
    return out


async def test_the_access_log_and_activity_match_the_aiohttp_path(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    fast, slow = side_by_side(proxy, plan_with_everything, record_file, tmp_path)
    for url in (fast.url, slow.url):
        await one(url, raw_request("/v1/chat/completions", {"model": "a", "messages": []},
                                   "X-Forwarded-For: 203.0.113.9", "User-Agent: probe/1"))
    lines = []
    for p in (fast, slow):  # the line is written just after the answer: wait for it
        log = await eventually(
            lambda p=p: next((x for x in p.output if '"POST /v1/chat/completions' in x), None)
        )
        lines.append(log.split(" ")[:-1])  # without the duration
    assert lines[0] == lines[1]
    at = lines[0].index("Request")
    assert lines[0][at + 1 : at + 6] == [
        "203.0.113.9", '"POST', "/v1/chat/completions", 'HTTP/1.1"', "200"
    ]
    assert int(lines[0][at + 6]) > 0 and lines[0][at + 7] == '"probe/1"'
    activities = []
    for url in (fast.url, slow.url):
        got = await one(url, f"GET /api/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}"
                        "\r\nConnection: close\r\n\r\n".encode())
        entries = json.loads(got.body)
        assert len(entries) == 1
        entry = entries[0]
        activities.append({k: entry[k] for k in ("model", "req_path", "resp_status_code",
                                                 "tokens", "has_capture", "metadata")
                           if k in entry})
    assert activities[0] == activities[1]
    assert activities[0]["model"] == "a"
    assert activities[0]["has_capture"] is True
    assert activities[0]["metadata"] == {"fifo_priority": "3"}  # the fifo scheduler's note


async def eventually(probe: Any, timeout: float = 10.0) -> Any:
    """`probe()`'s first non-None value, polled every 20 ms for up to `timeout` s."""
    async with asyncio.timeout(timeout):
        while (value := probe()) is None:
            await asyncio.sleep(0.02)
    return value


def chat(model: str = "a", connection: str = "keep-alive") -> bytes:
    body = json.dumps({"model": model, "messages": []}).encode()
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nConnection: {connection}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


GET_RUNNING = f"GET /running HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()


async def test_a_connection_moves_to_aiohttp_mid_way_and_keeps_working_in_both_orders(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(plan_with_everything(record_file))
    host, port = p.url.removeprefix("http://").rsplit(":", 1)
    for sequence in ((chat(), GET_RUNNING, chat()), (GET_RUNNING, chat(), GET_RUNNING)):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for data in sequence:
                writer.write(data)
                resp = await read_one(reader)
                assert resp.status == 200, (sequence, data)
                assert resp.header("connection") != "close"
        finally:
            writer.close()


async def read_one(reader: asyncio.StreamReader, *, bytewise: bool = True) -> Response:
    """One response; `bytewise` never reads past its end (for keep-alive connections)."""
    resp = Response()
    parser = httptools.HttpResponseParser(resp)
    async with asyncio.timeout(20):
        while not resp.complete:
            data = await reader.read(1 if bytewise else 65536)
            assert data, "connection closed early"
            parser.feed_data(data)
    resp.status = parser.get_status_code()
    return resp


async def test_pipelined_requests_are_answered_in_order_across_a_handoff(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(plan_with_everything(record_file))
    host, port = p.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(chat("a") + chat("alias-a") + GET_RUNNING + chat("a"))
        answers = [await read_one(reader) for _ in range(4)]
    finally:
        writer.close()
    assert [r.status for r in answers] == [200, 200, 200, 200]
    assert [json.loads(r.body).get("object") for r in answers] == [
        "chat.completion", "chat.completion", None, "chat.completion"
    ]
    assert "running" in json.loads(answers[2].body)


async def test_connection_close_is_honoured_and_a_large_body_passes_whole(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(plan_with_everything(record_file))
    big = "x" * (3 << 20)
    resp = await one(p.url, raw_request("/v1/embeddings", {"model": "a", "input": big}))
    assert resp.status == 200
    assert resp.header("connection") == "close"
    echoed = json.loads(resp.body)["fake"]
    assert echoed["headers"]["Content-Length"] == str(len(json.dumps({"model": "a", "input": big})))


async def test_an_unreachable_upstream_is_a_502_shaped_like_the_aiohttp_paths(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    fast, slow = side_by_side(proxy, plan_with_everything, record_file, tmp_path)
    data = raw_request("/v1/chat/completions", {"model": "dead", "messages": []})
    answers = [await one(url, data) for url in (fast.url, slow.url)]
    for resp in answers:
        assert resp.status == 502
        assert resp.header("content-type") == "application/json"
        body = json.loads(resp.body)
        assert body["src"] == "llama-swap"
        assert body["error"]["message"].startswith("[dead] upstream error: ")
    # the fast path names the address and the reason in its own words
    assert "cannot connect to 127.0.0.1:" in json.loads(answers[0].body)["error"]["message"]
    assert "refused" in json.loads(answers[0].body)["error"]["message"].lower()
