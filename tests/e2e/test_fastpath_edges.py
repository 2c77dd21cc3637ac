"""The fast path (runtime/fastpath) at the edges of a request's and a server's life.

Against real `llama-swap` processes over real sockets, with requests that are
known to take the fast path (its /metrics counters say so):

- shutdown (SIGTERM) with fast-path requests queued, in flight, streaming, idle
  keep-alive connections and half-sent requests, over plain TCP and TLS: queued
  requests get 503, the process exits 0 and leaves no child;
- llama-swap's own answers carry the headers the aiohttp path gives them;
- the `serial` scheduler through the fast path: arrival order across keep-alive
  connections, pipelined requests for different models on one connection, one
  request and one model at a time;
- a hot reload while fast-path requests queue and stream;
- `sendLoadingState`: the prelude comes from aiohttp until the model is ready;
- bodies sent slowly, clients that leave mid-body or half-close.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.conftest import Proxy, ResidencySampler, fake_model, make_plan, overlapping
from tests.e2e.test_fastpath import (
    fast_path_counters,
    one,
    plan_with_everything,
    raw_request,
    read_one,
    side_by_side,
)
from tests.e2e.test_fastpath_review import host_port, post
from tests.e2e.test_hot_reload import (  # noqa: F401 -- fixtures
    WAIT,
    Site,
    live_proxy,
    site,
)
from tests.e2e.test_surface_tls import self_signed  # noqa: F401 -- fixture

CHAT = "/v1/chat/completions"
GET_RUNNING = b"GET /running HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
GET_MODELS = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
GET_METRICS = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def chat(model: str, connection: str = "keep-alive", **extra: Any) -> bytes:
    return post(CHAT, {"model": model, "messages": [], **extra}, connection=connection)


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 20.0) -> bytes:
    out = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            out += chunk
    return out


async def served_fast(url: str, at_least: int) -> None:
    """Wait until the fast path has taken `at_least` requests (it counts them as it
    starts serving them), so a test knows its requests are where it means them to be."""
    async with asyncio.timeout(WAIT):
        while (await fast_path_counters(url)).get("requests", 0) < at_least:
            await asyncio.sleep(0.05)


def assert_no_child_left(children: list[psutil.Process]) -> None:
    assert children
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child


async def inflight(url: str) -> str:
    body = (await one(url, GET_METRICS)).body.decode()
    return next(line for line in body.splitlines()
                if line.startswith("llamaswap_inflight_requests "))


async def tls_fast_path_requests(host: str, port: int, ctx: ssl.SSLContext) -> int:
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    try:
        writer.write(GET_METRICS)
        text = (await read_one(reader, bytewise=False)).body.decode()
    finally:
        writer.close()
    line = next(x for x in text.splitlines() if x.startswith("llamaswap_fast_path_requests"))
    return int(float(line.split()[1]))


# --- shutdown ------------------------------------------------------------------------


async def test_sigterm_with_fast_path_requests_in_every_state_exits_0_and_leaves_no_child(
    proxy: Any, record_file: Path
) -> None:
    plan = make_plan(
        [fake_model("a", record_file, "--tokens", "2000", "--token-delay", "0.01"),
         fake_model("b", record_file)],
        scheduler="fifo",
    )
    p = proxy(plan, "--shutdown-timeout", "5")
    host, port = host_port(p.url)
    idle_r, idle_w = await asyncio.open_connection(host, port)  # keep-alive, served, idle
    idle_w.write(chat("a", max_tokens=2))
    assert (await read_one(idle_r)).status == 200
    stream_r, stream_w = await asyncio.open_connection(host, port)
    stream_w.write(chat("a", stream=True, max_tokens=2000))  # ~20 s of tokens
    assert (await stream_r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    plain_r, plain_w = await asyncio.open_connection(host, port)
    plain_w.write(chat("a", fake_delay=30))  # in flight, no answer yet
    queued_r, queued_w = await asyncio.open_connection(host, port)
    queued_w.write(chat("b"))  # b must wait for a (one group, swapping)
    half_r, half_w = await asyncio.open_connection(host, port)
    half = chat("a")
    half_w.write(half[: len(half) - 5])  # a request whose body never completes
    await served_fast(p.url, 4)
    children = p.children()

    code = await asyncio.to_thread(p.terminate, 30)

    assert code == 0
    queued = await read_one(queued_r)
    assert queued.status == 503
    assert json.loads(queued.body) == {"src": "llama-swap", "error": {"message": "llama-swap is shutting down", "type": "server_error", "param": None, "code": "service_unavailable"}}
    plain = await read_to_eof(plain_r)  # its model was stopped under it: a 502 (or nothing)
    assert plain == b"" or plain.startswith(b"HTTP/1.1 502"), plain
    streamed = await read_to_eof(stream_r)
    assert b"data: " in streamed and not streamed.endswith(b"0\r\n\r\n")  # cut, not ended
    assert await read_to_eof(idle_r) == b""
    assert await read_to_eof(half_r) == b""
    for writer in (idle_w, stream_w, plain_w, queued_w, half_w):
        writer.close()
    assert_no_child_left(children)
    assert "shutdown complete" in p.log_text()


async def test_a_tls_server_with_open_fast_path_connections_shuts_down_cleanly(
    proxy: Any, record_file: Path, self_signed: tuple[Path, Path]  # noqa: F811
) -> None:
    cert, key = self_signed
    plan = make_plan([fake_model("a", record_file, "--tokens", "2000", "--token-delay", "0.01")],
                     scheduler="fifo")
    p = proxy(plan, "--tls-cert-file", str(cert), "--tls-key-file", str(key),
              "--shutdown-timeout", "5")
    host, port = p.url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    idle_r, idle_w = await asyncio.open_connection(host, int(port), ssl=ctx)
    idle_w.write(chat("a", max_tokens=2))
    assert (await read_one(idle_r)).status == 200
    stream_r, stream_w = await asyncio.open_connection(host, int(port), ssl=ctx)
    stream_w.write(chat("a", stream=True, max_tokens=2000))
    assert (await stream_r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    # a client that sends a request and never reads again (nor answers close_notify)
    mute = ctx.wrap_socket(socket.create_connection((host, int(port))))
    try:
        mute.sendall(chat("a", max_tokens=2))
        async with asyncio.timeout(WAIT):  # all three were taken by the fast path
            while await tls_fast_path_requests(host, int(port), ctx) < 3:
                await asyncio.sleep(0.05)
        children = p.children()
        code = await asyncio.to_thread(p.terminate, 30)
    finally:
        mute.close()
    assert code == 0
    assert not (await read_to_eof(stream_r)).endswith(b"0\r\n\r\n")
    for writer in (idle_w, stream_w):
        writer.close()
    assert_no_child_left(children)


async def test_llama_swaps_own_answers_carry_the_headers_the_aiohttp_path_gives_them(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    """A 502 the fast path writes itself has the same header fields as aiohttp's
    (Server included), as relayed answers do."""
    fast, slow = side_by_side(proxy, plan_with_everything, record_file, tmp_path)
    data = raw_request(CHAT, {"model": "dead", "messages": []})
    fast_answer, slow_answer = [await one(url, data) for url in (fast.url, slow.url)]
    assert fast_answer.status == slow_answer.status == 502
    assert sorted(k for k, _ in fast_answer.headers) == sorted(k for k, _ in slow_answer.headers)
    assert fast_answer.header("server") == slow_answer.header("server")
    assert (await fast_path_counters(fast.url))["requests"] == 1


# --- the serial scheduler -------------------------------------------------------------


def serial_plan(record: Path) -> Any:
    return make_plan([fake_model("a", record, "--response-delay", "0.05"),
                      fake_model("b", record, "--response-delay", "0.05")])


def served_models(p: Proxy) -> list[str]:
    served = [r for r in p.records() if r["path"] == CHAT]
    assert overlapping(served) == []  # one request at a time
    return [r["model"] for r in served]


async def test_serial_serves_requests_from_many_keep_alive_connections_in_arrival_order(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(serial_plan(record_file))
    host, port = host_port(p.url)
    conns = [await asyncio.open_connection(host, port) for _ in range(6)]
    order = ["b", "a", "b", "a", "b"]
    try:
        with ResidencySampler(p) as sampler:
            for reader, writer in conns:  # every connection has served a request already
                writer.write(chat("a"))
                assert (await read_one(reader)).status == 200
            head_r, head_w = conns[0]
            head_w.write(chat("a", fake_delay=1.0))  # everything else queues behind this
            await served_fast(p.url, 7)
            for i, ((_, writer), model) in enumerate(zip(conns[1:], order, strict=True)):
                writer.write(chat(model))
                await served_fast(p.url, 8 + i)  # it has reached the router: the next may go
            answers = [await read_one(reader) for reader, _ in conns]
    finally:
        for _, writer in conns:
            writer.close()
    assert [a.status for a in answers] == [200] * 6
    assert [json.loads(a.body)["fake"]["model"] for a in answers] == ["a", *order]
    assert served_models(p) == ["a"] * 7 + order
    assert len(sampler.max_models) == 1, sampler.max_models
    assert (await fast_path_counters(p.url))["requests"] == 12


async def test_serial_serves_pipelined_requests_for_different_models_in_order(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(serial_plan(record_file))
    host, port = host_port(p.url)
    order = ["a", "b", "a", "b", "b", "a"]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        with ResidencySampler(p) as sampler:
            writer.write(b"".join(chat(m) for m in order))
            answers = [await read_one(reader) for _ in order]
    finally:
        writer.close()
    assert [a.status for a in answers] == [200] * len(order)
    assert [json.loads(a.body)["fake"]["model"] for a in answers] == order
    assert served_models(p) == order
    assert len(sampler.max_models) == 1, sampler.max_models
    assert (await fast_path_counters(p.url))["requests"] == len(order)


# --- hot reload -------------------------------------------------------------------------


async def test_a_reload_fails_queued_requests_for_a_removed_model_and_lets_streams_finish(
    site: Site, live_proxy: Any  # noqa: F811
) -> None:
    site.write_model("10-a.yaml", "a", "--token-delay", "0.02")
    site.write_model("20-b.yaml", "b")
    site.write_model("30-c.yaml", "c")
    p = live_proxy("--watch-config")
    host, port = host_port(p.url)
    stream_r, stream_w = await asyncio.open_connection(host, port)
    removed_r, removed_w = await asyncio.open_connection(host, port)
    changed_r, changed_w = await asyncio.open_connection(host, port)
    try:
        stream_w.write(chat("a", stream=True, max_tokens=200))  # ~4 s of tokens
        stream = asyncio.ensure_future(read_one(stream_r))
        await served_fast(p.url, 1)
        removed_w.write(chat("b"))  # b and c queue behind a (one group, swapping)
        changed_w.write(chat("c"))
        await served_fast(p.url, 3)

        site.fragment("20-b.yaml").unlink()
        site.write_model("30-c.yaml", "c", "--tokens", "3")

        removed = await read_one(removed_r)
        assert removed.status == 503
        assert json.loads(removed.body)["error"]["message"] == (
            "[b] model removed from the configuration by a reload"
        )
        assert not stream.done(), "the stream ended before the reload: the test proves nothing"
        streamed = await stream
        assert streamed.body.rstrip().endswith(b"data: [DONE]")
        assert streamed.body.count(b'"content": "tok') == 200
        changed = await read_one(changed_r)  # served by c as it is now
        assert changed.status == 200
        assert json.loads(changed.body)["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    finally:
        for writer in (stream_w, removed_w, changed_w):
            writer.close()


async def test_a_removed_model_still_draining_is_unknown_to_new_requests(
    site: Site, live_proxy: Any  # noqa: F811
) -> None:
    site.write_model("10-a.yaml", "a")
    site.write_model("20-b.yaml", "b", "--token-delay", "0.02")
    p = live_proxy("--watch-config")
    host, port = host_port(p.url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(chat("b", max_tokens=1))
        assert (await read_one(reader)).status == 200  # b is ready
        writer.write(chat("b", stream=True, max_tokens=200))  # ~4 s: b drains that long
        stream = asyncio.ensure_future(read_one(reader))
        await served_fast(p.url, 2)
        site.fragment("20-b.yaml").unlink()
        async with asyncio.timeout(WAIT):  # the reload has happened once b is not listed
            while b"\"id\": \"b\"" in (await one(p.url, GET_MODELS)).body:
                await asyncio.sleep(0.05)
        assert not stream.done(), "b's stream ended before the reload: the test proves nothing"
        got = await one(p.url, chat("b", connection="close"))
        assert got.status == 404, got.body
        assert json.loads(got.body) == {"src": "llama-swap", "error": {
            "message": "no local server found for requested model: b",
            "type": "invalid_request_error", "param": None, "code": "not_found",
        }}
        assert (await stream).body.rstrip().endswith(b"data: [DONE]")
    finally:
        writer.close()


# --- sendLoadingState ---------------------------------------------------------------------


def reasoning(sse: bytes) -> str:
    """The `reasoning_content` text of an SSE answer (where the loading prelude goes)."""
    text = []
    for line in sse.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in json.loads(line[6:]).get("choices") or ():
                text.append((choice.get("delta") or {}).get("reasoning_content") or "")
    return "".join(text)


async def test_a_loading_state_model_streams_its_prelude_via_aiohttp_then_takes_the_fast_path(
    proxy: Any, record_file: Path
) -> None:
    model = replace(fake_model("a", record_file, "--start-delay", "1"), sendLoadingState=True)
    p = proxy(make_plan([model], scheduler="fifo"))
    host, port = host_port(p.url)
    first_r, first_w = await asyncio.open_connection(host, port)
    try:
        first_w.write(chat("a", stream=True))
        loading = await read_one(first_r)
        assert loading.status == 200
        assert "llama-swap loading model: a" in reasoning(loading.body)
        assert loading.body.rstrip().endswith(b"data: [DONE]")
        assert await fast_path_counters(p.url) == {"requests": 0, "handoffs": 2}

        # ready now: a new connection streams on the fast path, without a prelude
        ready = await one(p.url, chat("a", connection="close", stream=True))
        assert ready.status == 200 and reasoning(ready.body) == ""
        assert ready.body.rstrip().endswith(b"data: [DONE]")
        assert (await fast_path_counters(p.url))["requests"] == 1
        # the first connection stays with aiohttp and keeps working
        first_w.write(chat("a", stream=True))
        again = await read_one(first_r)
        assert again.status == 200 and reasoning(again.body) == ""
    finally:
        first_w.close()


# --- bodies that come slowly, clients that leave --------------------------------------------


async def test_a_body_sent_in_pieces_is_served_on_the_fast_path(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([fake_model("a", record_file)], scheduler="fifo"))
    host, port = host_port(p.url)
    data = post(CHAT, {"model": "a", "messages": [{"role": "user", "content": "x" * 5000}]})
    head_end = data.index(b"\r\n\r\n") + 4
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(2):  # twice on one connection: the second after a complete exchange
            writer.write(data[:20])  # part of the head
            await asyncio.sleep(0.05)
            writer.write(data[20:head_end])
            for at in range(head_end, len(data), 1000):
                await asyncio.sleep(0.02)
                writer.write(data[at : at + 1000])
            resp = await read_one(reader)
            assert resp.status == 200
            echoed = json.loads(resp.body)["fake"]["body"]
            assert echoed["messages"][0]["content"] == "x" * 5000
    finally:
        writer.close()
    assert (await fast_path_counters(p.url)) == {"requests": 2, "handoffs": 1}


async def test_a_client_that_leaves_mid_body_starts_nothing(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([fake_model("a", record_file)], scheduler="fifo"))
    host, port = host_port(p.url)
    data = chat("a")
    for cut in (len(data) - 3, data.index(b"\r\n\r\n") + 2):  # mid-body, mid-head
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(data[:cut])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()
    # a request whose body never completes holds up nobody
    stuck_r, stuck_w = await asyncio.open_connection(host, port)
    try:
        stuck_w.write(data[:-1])
        assert (await one(p.url, chat("b", connection="close"))).status == 404  # handed off
        assert json.loads((await one(p.url, GET_RUNNING)).body) == {"running": [], "profile": None}
        assert await inflight(p.url) == "llamaswap_inflight_requests 0.0"
        assert p.records() == []
        assert (await one(p.url, chat("a", connection="close"))).status == 200
    finally:
        stuck_w.close()
    assert (await fast_path_counters(p.url))["requests"] == 1


async def half_closed_exchange(url: str, data: bytes) -> bytes:
    """Send `data`, shut the sending side (SHUT_WR), read whatever comes until EOF."""
    host, port = host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        return await read_to_eof(reader)
    finally:
        writer.close()


async def test_a_half_closed_connection_is_treated_as_the_aiohttp_path_treats_it(
    proxy: Any, record_file: Path, tmp_path: Path
) -> None:
    """A client that shuts its sending side right after (or in the middle of) a request:
    aiohttp takes the EOF as the end of the connection and answers nothing; so does the
    fast path, and nothing stays in flight."""

    def plan(record: Path) -> Any:
        return make_plan([fake_model("a", record, "--response-delay", "0.3")], scheduler="fifo")

    fast, slow = side_by_side(proxy, plan, record_file, tmp_path)
    complete = chat("a", connection="close")
    for data in (complete, chat("a"), complete[:-3]):
        answers = [await half_closed_exchange(url, data) for url in (slow.url, fast.url)]
        assert answers[0] == answers[1] == b""
    assert (await fast_path_counters(fast.url))["requests"] == 2
    for url in (fast.url, slow.url):
        async with asyncio.timeout(WAIT):
            while await inflight(url) != "llamaswap_inflight_requests 0.0":
                await asyncio.sleep(0.05)
        assert (await one(url, complete)).status == 200  # and the model still answers
