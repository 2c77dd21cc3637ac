"""What passes through the proxy and how: streaming chunk by chunk, headers, status codes
and error bodies, the retry on a dead pooled connection, client disconnects, and the
official `openai` client."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import openai

from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_serial import post_chat

SCRIPTED = str(Path(__file__).with_name("scripted_upstream.py"))


def scripted_model(record: Path) -> Any:
    return fake_model("s", record, cmd=(sys.executable, SCRIPTED, "${PORT}"))


async def test_sse_chunks_reach_the_client_as_the_upstream_sends_them(
    proxy: Any, record_file: Path
) -> None:
    delay, tokens = 0.25, 6
    plan = make_plan(
        [fake_model("a", record_file, "--tokens", str(tokens), "--token-delay", str(delay))]
    )
    p = proxy(plan)
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    lines: list[bytes] = []
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{p.url}/v1/chat/completions", json={"model": "a", "stream": True, "messages": []}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["X-Accel-Buffering"] == "no"
            async for line in resp.content:
                if line.startswith(b"data:"):
                    arrivals.append(loop.time())
                    lines.append(line)
    assert lines[-1].strip() == b"data: [DONE]"
    token_arrivals = arrivals[1 : 1 + tokens]
    # a buffering proxy would deliver everything at once; here the tokens arrive spread
    # out over (at least most of) the time the upstream took to send them
    assert token_arrivals[-1] - token_arrivals[0] >= 0.5 * delay * (tokens - 1)


async def test_hop_by_hop_headers_are_dropped_and_the_rest_pass_through(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([fake_model("a", record_file)]))
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{p.url}/v1/embeddings",
            json={"model": "a", "input": "x"},
            headers={
                "Connection": "keep-alive, X-Private",
                "X-Private": "secret",
                "Keep-Alive": "timeout=5",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                "X-Custom": "kept",
                "Authorization": "Bearer client-key",
            },
        ) as resp:
            assert resp.status == 200
            received = {k.lower(): v for k, v in (await resp.json())["fake"]["headers"].items()}
    assert received["x-custom"] == "kept"
    assert received["authorization"] == "Bearer client-key"
    for name in ("x-private", "keep-alive", "proxy-authorization"):
        assert name not in received


async def test_upstream_status_error_body_and_headers_pass_through(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([scripted_model(record_file)]))
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{p.url}/v1/completions", json={"model": "s", "prompt": "x"}) as resp:
            assert resp.status == 400
            assert resp.headers["X-Upstream"] == "scripted"
            assert "Proxy-Authenticate" not in resp.headers
            assert "Keep-Alive" not in resp.headers
            body = await resp.json()
    assert body["error"] == {"message": "bad prompt", "type": "invalid_request_error"}


async def test_a_post_read_and_dropped_on_a_pooled_connection_is_a_502_not_a_second_run(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([scripted_model(record_file)]))
    async with aiohttp.ClientSession() as s:
        results = [await post_chat(s, p.url, "s") for _ in range(6)]
    # every second request arrives on the reused connection, which the upstream reads and
    # drops: the upstream may have run it, so it is not sent again (tests/e2e/
    # test_no_double_post.py has the retry that stays: a connection closed while idle)
    assert [status for status, _ in results] == [200, 502, 200, 502, 200, 502]
    assert results[-2][1]["dropped"] == 2  # each dropped request was received once


async def test_a_client_leaving_mid_stream_cancels_the_upstream_and_frees_the_model(
    proxy: Any, record_file: Path
) -> None:
    model = fake_model("a", record_file, "--tokens", "50", "--token-delay", "0.1")
    p = proxy(make_plan([model]))
    async with aiohttp.ClientSession() as s:
        resp = await s.post(
            f"{p.url}/v1/chat/completions", json={"model": "a", "stream": True, "messages": []}
        )
        await resp.content.readline()
        await resp.content.readline()
        resp.close()  # the client goes away after the first chunk
        for _ in range(60):  # the upstream notices within a token or two
            async with s.get(f"{model.proxy}/fake/stats") as stats:
                if (await stats.json())["current"] == 0:
                    break
            await asyncio.sleep(0.05)
        # serial: this is only served once the aborted request stopped counting as in flight
        status, _ = await post_chat(s, p.url, "a", max_tokens=1)
        assert status == 200
    first, second = p.records()
    assert first["end"] < first["start"] + 50 * 0.1 - 1.0  # cut short, not streamed to the end
    assert second["start"] >= first["end"]


async def test_an_upstream_crash_mid_stream_truncates_the_response_and_the_next_works(
    proxy: Any, record_file: Path
) -> None:
    plan = make_plan(
        [
            fake_model("crashy", record_file, "--fail", "crash-mid-stream", "--tokens", "6"),
            fake_model("b", record_file),
        ]
    )
    p = proxy(plan)
    async with aiohttp.ClientSession() as s:
        got_done = False
        try:
            async with s.post(
                f"{p.url}/v1/chat/completions",
                json={"model": "crashy", "stream": True, "messages": []},
            ) as resp:
                async for line in resp.content:
                    got_done |= line.strip() == b"data: [DONE]"
        except aiohttp.ClientPayloadError:
            pass
        assert not got_done
        assert (await post_chat(s, p.url, "b"))[0] == 200


def test_the_official_openai_client_works_streaming_and_not(
    proxy: Any, record_file: Path
) -> None:
    p = proxy(make_plan([fake_model("a", record_file, "--tokens", "4")]))
    client = openai.OpenAI(base_url=f"{p.url}/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "hello"}]
    )
    assert chat.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    stream = client.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    emb = client.embeddings.create(model="a", input=["x", "y"])
    assert len(emb.data) == 2
    try:
        client.chat.completions.create(model="missing", messages=[])
    except openai.NotFoundError as exc:
        assert exc.status_code == 404
    else:
        raise AssertionError("an unknown model must be a 404")
