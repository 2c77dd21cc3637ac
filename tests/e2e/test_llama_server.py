"""The proxy against a real llama.cpp `llama-server` serving tiny random-weight models.

Fakes cannot show how the real server behaves; these tests can. They first prove that the
generated model really works with the real server (direct), including the quirk the proxy has to
survive: the server closes the TCP connection after every streamed response. Then, through
`llama-swap --config`, on both front doors: 200 alternating streamed / plain chats and bursts of
concurrent streams with zero errors (only possible if the proxy never writes a request into a
connection the server is closing), embeddings, and swaps between two
models under the `serial` and `fifo` schedulers. Every test stops the proxy at the end and checks
that no llama-server outlived it.

Needs the binary from `scripts/build_llama_server.py` (see `tests/e2e/llama_fixtures.py`).
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import aiohttp
import pytest

if TYPE_CHECKING:
    from tests.e2e.llama_fixtures import DirectServer, SwapProxy, TinyModels

# Fixtures: llama_server_bin, tiny_models, direct_server, swap_proxy, llama_config.
# (Loaded as a plugin, not imported, so pytest rewrites its asserts.)
pytest_plugins = ["tests.e2e.llama_fixtures"]

pytestmark = [pytest.mark.llama_server, pytest.mark.timeout(300)]

MAX_TOKENS = 8


def chat_body(model: str, *, stream: bool, content: str = "Say hello.") -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,  # random weights: fix the length instead of waiting for EOS
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def chat(
    session: aiohttp.ClientSession, url: str, model: str, *, stream: bool
) -> dict[str, Any]:
    """One chat completion; returns {status, model, completion_tokens, chunks, error}."""
    async with session.post(
        f"{url}/v1/chat/completions", json=chat_body(model, stream=stream)
    ) as resp:
        if resp.status != 200:
            return {"status": resp.status, "error": await resp.text()}
        if not stream:
            data = await resp.json()
            return {
                "status": 200,
                "model": data.get("model"),
                "completion_tokens": data["usage"]["completion_tokens"],
                "chunks": None,
                "content_type": resp.content_type,
            }
        events: list[str] = []
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                events.append(line[len("data:") :].strip())
    if not events or events[-1] != "[DONE]":
        return {"status": 200, "error": f"stream did not end with [DONE]: {events[-3:]}"}
    chunks = [json.loads(e) for e in events[:-1]]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    return {
        "status": 200,
        "model": chunks[0].get("model"),
        "completion_tokens": usage[-1]["completion_tokens"] if usage else None,
        "chunks": len(chunks),
        "content_type": resp.content_type,
    }


def assert_ok(result: dict[str, Any], model: str, *, stream: bool) -> None:
    assert result["status"] == 200 and "error" not in result, result
    assert result["model"] == model, result
    assert result["completion_tokens"] == MAX_TOKENS, result
    assert result["content_type"] == ("text/event-stream" if stream else "application/json")


# --------------------------------------------------------------------------- direct


async def test_the_generated_model_loads_and_chats_in_the_real_server(
    direct_server: Callable[..., DirectServer],
) -> None:
    server = direct_server("tiny-a")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{server.url}/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
        async with s.get(f"{server.url}/v1/models") as resp:
            assert resp.status == 200
            assert "tiny-a" in [m["id"] for m in (await resp.json())["data"]]
        assert_ok(await chat(s, server.url, "tiny-a", stream=False), "tiny-a", stream=False)
        assert_ok(await chat(s, server.url, "tiny-a", stream=True), "tiny-a", stream=True)


def test_the_real_server_closes_the_connection_after_a_streamed_response(
    direct_server: Callable[..., DirectServer],
) -> None:
    """The upstream quirk the proxy's connection reuse rules exist for; if this ever stops
    holding, the zero-error tests below no longer exercise them."""
    server = direct_server("tiny-a")
    host, port = urlparse(server.url).hostname, urlparse(server.url).port
    body = json.dumps(chat_body("tiny-a", stream=True)).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"the server kept the connection open after the stream: {received!r}")
            if not chunk:
                break  # the server closed the connection
            received += chunk
    assert b"data: [DONE]" in received
    assert b"keep-alive" in received.lower()  # ... although it advertised keep-alive


async def test_embeddings_work_with_mean_pooling(
    direct_server: Callable[..., DirectServer],
) -> None:
    server = direct_server("tiny-a", "--embeddings", "--pooling", "mean")
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{server.url}/v1/embeddings",
            json={"model": "tiny-a", "input": ["hello world", "llama swap"]},
        ) as resp:
            assert resp.status == 200, await resp.text()
            data = (await resp.json())["data"]
    assert len(data) == 2
    assert all(len(d["embedding"]) == 64 for d in data)


# --------------------------------------------------------------------------- through the proxy


async def running(session: aiohttp.ClientSession, proxy: SwapProxy) -> list[dict[str, Any]]:
    async with session.get(f"{proxy.url}/running") as resp:
        assert resp.status == 200
        rows: list[dict[str, Any]] = (await resp.json())["running"]
        return rows


DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])


@DOORS
async def test_200_alternating_streamed_and_plain_chats_have_zero_errors(
    tiny_models: TinyModels,
    llama_config: Callable[..., Path],
    swap_proxy: Callable[..., SwapProxy],
    door: tuple[str, ...],
) -> None:
    """The server closes its connection a moment after each streamed response, without
    announcing it; the request after it must never be written into that connection (a
    POST that fails there is not sent again), on either front door."""
    proxy = swap_proxy(llama_config("serial", {"tiny": (tiny_models.a, [])}), *door)
    failures: list[tuple[int, dict[str, Any]]] = []
    async with aiohttp.ClientSession() as s:
        first = await chat(s, proxy.url, "tiny", stream=False)
        assert_ok(first, "tiny", stream=False)
        [server] = proxy.llama_children()
        for i in range(200):
            stream = i % 2 == 0
            result = await chat(s, proxy.url, "tiny", stream=stream)
            try:
                assert_ok(result, "tiny", stream=stream)
            except AssertionError:
                failures.append((i, result))
        rows = await running(s, proxy)
    assert failures == [], f"{len(failures)} failed, first: {failures[:3]}\n{proxy.log_tail()}"
    # The same server answered everything: no restart hid an error.
    assert [p.pid for p in proxy.llama_children()] == [server.pid]
    assert [r["model"] for r in rows] == ["tiny"]


@DOORS
async def test_concurrent_streamed_chats_have_zero_errors(
    tiny_models: TinyModels,
    llama_config: Callable[..., Path],
    swap_proxy: Callable[..., SwapProxy],
    door: tuple[str, ...],
) -> None:
    """Bursts of streamed chats: every stream ends with the server closing its connection
    while others are being sent; none of them may meet a closing connection (a 502)."""
    proxy = swap_proxy(llama_config("serial", {"tiny": (tiny_models.a, [])}), *door)
    async with aiohttp.ClientSession() as s:
        assert_ok(await chat(s, proxy.url, "tiny", stream=False), "tiny", stream=False)
        results: list[dict[str, Any]] = []
        for _ in range(10):
            results += await asyncio.gather(
                *(chat(s, proxy.url, "tiny", stream=i % 4 != 3) for i in range(8))
            )
    failures = [r for r in results if r["status"] != 200 or "error" in r]
    assert failures == [], f"{len(failures)} of 80 failed, first: {failures[:3]}\n{proxy.log_tail()}"


async def test_embeddings_through_the_proxy(
    tiny_models: TinyModels,
    llama_config: Callable[..., Path],
    swap_proxy: Callable[[Path], SwapProxy],
) -> None:
    flags = ["--embeddings", "--pooling", "mean"]
    proxy = swap_proxy(llama_config("serial", {"embed": (tiny_models.a, flags)}))
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{proxy.url}/v1/embeddings",
            json={"model": "embed", "input": ["hello world", "llama swap", "hello world"]},
        ) as resp:
            assert resp.status == 200, await resp.text()
            data = (await resp.json())["data"]
    vectors = [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]
    assert [len(v) for v in vectors] == [64, 64, 64]
    assert all(math.isfinite(x) for v in vectors for x in v)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5)  # same text, same vector
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-5)


async def test_serial_swaps_between_two_real_models_one_at_a_time(
    tiny_models: TinyModels,
    llama_config: Callable[..., Path],
    swap_proxy: Callable[[Path], SwapProxy],
) -> None:
    two = {"tiny-a": (tiny_models.a, []), "tiny-b": (tiny_models.b, [])}
    proxy = swap_proxy(llama_config("serial", two))
    order = ["tiny-a", "tiny-b", "tiny-a", "tiny-b", "tiny-b", "tiny-a"]
    async with aiohttp.ClientSession() as s:
        # One after another: after each answer exactly that model's server is alive.
        for i, model in enumerate(order):
            result = await chat(s, proxy.url, model, stream=i % 2 == 1)
            assert_ok(result, model, stream=i % 2 == 1)
            alive = proxy.llama_children()
            assert len(alive) == 1, [p.cmdline() for p in alive]
            assert f"tiny-{model[-1]}.gguf" in " ".join(alive[0].cmdline())
            assert [r["model"] for r in await running(s, proxy)] == [model]
        # All at once, interleaved: every request is answered by the model it asked for.
        burst = [order[i % 2] for i in range(12)]
        results = await asyncio.gather(
            *(chat(s, proxy.url, m, stream=i % 3 == 0) for i, m in enumerate(burst))
        )
    for i, (model, result) in enumerate(zip(burst, results, strict=True)):
        assert_ok(result, model, stream=i % 3 == 0)
    assert len(proxy.llama_children()) == 1
    assert len(proxy.seen_children) >= len(order)  # every swap really started a server


async def test_fifo_swaps_between_two_real_models(
    tiny_models: TinyModels,
    llama_config: Callable[..., Path],
    swap_proxy: Callable[[Path], SwapProxy],
) -> None:
    two = {"tiny-a": (tiny_models.a, []), "tiny-b": (tiny_models.b, [])}
    proxy = swap_proxy(llama_config("fifo", two))
    async with aiohttp.ClientSession() as s:
        for i, model in enumerate(["tiny-a", "tiny-b", "tiny-a"]):
            assert_ok(await chat(s, proxy.url, model, stream=i == 1), model, stream=i == 1)
            # Both models are in the default group (swap: true): starting one stops the other.
            assert [r["model"] for r in await running(s, proxy)] == [model]
            assert len(proxy.llama_children()) == 1
        burst = ["tiny-a", "tiny-b"] * 8
        results = await asyncio.gather(
            *(chat(s, proxy.url, m, stream=i % 2 == 0) for i, m in enumerate(burst))
        )
    for i, (model, result) in enumerate(zip(burst, results, strict=True)):
        assert_ok(result, model, stream=i % 2 == 0)
    assert len(proxy.llama_children()) == 1
    assert len(proxy.seen_children) >= 3  # a, b, a: every swap really started a server
