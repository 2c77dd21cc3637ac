"""An upstream that dies in the middle of a streamed answer.

The model server crashes after sending a few chunks of a streaming chat completion
(`swap-fake-upstream --fail crash-mid-stream`).  With the fast path and with
`--no-fast-path`, required:

- the client's stream ends, promptly -- it never hangs waiting for chunks that will not
  come;
- the model is marked stopped, the next request restarts it and is served;
- nothing stays counted in flight (`llamaswap_inflight_requests` back to 0).

The goal beyond that: the stream ends with an error event (a final
`data: {"error": ...}`) so that a client can tell a cut answer from a finished one,
rather than with a cut connection alone.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable

import aiohttp
import pytest

from llama_swap.compiler.plan import Plan
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_serial import post_chat
from tests.faults.conftest import Site, inflight, running, stream_chat, until_async

PATHS = [pytest.param((), id="fast-path"), pytest.param(("--no-fast-path",), id="aiohttp-path")]
TIMEOUT = aiohttp.ClientTimeout(total=20)


def crashing_plan(site: Site) -> Plan:
    model = fake_model(
        "a", site.record, "--fail", "crash-mid-stream", "--tokens", "8", "--token-delay", "0.05"
    )
    return make_plan([model])


@pytest.mark.parametrize("extra", PATHS)
async def test_a_crash_mid_stream_ends_the_stream_and_the_next_request_restarts_the_model(
    site: Site, extra: tuple[str, ...]
) -> None:
    p = site.proxy(crashing_plan(site), *extra)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        status, payloads, _ = await stream_chat(s, p.url, "a")
        assert status == 200
        first = json.loads(payloads[0])
        assert first["choices"][0]["delta"]["role"] == "assistant"
        crashed_pid = first["fake"]["pid"]
        assert "[DONE]" not in payloads  # the answer was cut short

        await until_async(lambda: _is([], running(s, p.url)), "the model to be marked stopped")
        await until_async(lambda: _is(0, inflight(s, p.url)), "no request left in flight")

        status, body = await post_chat(s, p.url, "a")  # not streamed: no crash
        assert status == 200, body
        assert body["fake"]["pid"] != crashed_pid
        assert await inflight(s, p.url) == 0


@pytest.mark.parametrize("extra", PATHS)
async def test_a_crash_mid_stream_ends_the_stream_with_an_error_event(
    site: Site, extra: tuple[str, ...]
) -> None:
    p = site.proxy(crashing_plan(site), *extra)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        status, payloads, cut = await stream_chat(s, p.url, "a")
    assert status == 200
    last = json.loads(payloads[-1])
    assert "error" in last, (payloads[-1], "connection cut" if cut else "ended")


async def _is(expected: object, value: Awaitable[object]) -> bool:
    return expected == await value
