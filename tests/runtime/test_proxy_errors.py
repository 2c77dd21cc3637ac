"""How `UpstreamPool` reports an upstream that fails before answering (the text lands in
the client's 502 body, so it must be readable)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from multidict import CIMultiDict

from llama_swap.compiler.plan import Model
from llama_swap.runtime.http.aio.proxy import UpstreamError, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def send_to(handler: Handler) -> str:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    model = Model(id="m", cmd=("x",), cmdStop=None, proxy=f"http://127.0.0.1:{port}",
                  checkEndpoint="/health", ttl=0)
    pool = UpstreamPool()
    try:
        with pytest.raises(UpstreamError) as info:
            await pool.send(model, "POST", "/v1/chat/completions", CIMultiDict(), b"{}")
        return str(info.value)
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


async def test_an_upstream_hanging_up_mid_headers_is_described_in_one_short_line() -> None:
    async def half_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: appl")
        await writer.drain()
        writer.close()

    text = await send_to(half_headers)
    assert text == "ServerDisconnectedError: the upstream closed the connection before answering"


async def test_an_upstream_answering_garbage_is_a_clear_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    assert "Bad status line" in await send_to(garbage)
