"""A model being stopped has no idle connection from llama-swap left open: a server that
waits for its connections before it exits on SIGTERM (llama-server does) would otherwise
make every swap wait for them.  Checked through both front doors with a fake upstream that
waits like llama-server and says how many connections were still open when it exited."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import fake_model, make_plan

LEFT_OPEN = re.compile(r"(\d+) client connection\(s\) still open at exit")
DRAIN = "1"  # seconds the fake waits for connections (within the stop grace)


async def chat(session: aiohttp.ClientSession, url: str, model: str) -> int:
    async with session.post(f"{url}/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}],
    }) as resp:
        await resp.read()
        return resp.status


@pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast path", "aiohttp"])
async def test_a_swap_closes_the_idle_connections_to_the_model_it_stops(
    proxy: Any, record_file: Path, door: tuple[str, ...],
) -> None:
    plan = make_plan([fake_model(m, record_file, "--drain-on-sigterm", DRAIN)
                      for m in ("a", "b")])
    plan = replace(plan, settings=replace(plan.settings, logToStdout="both"))  # models' too
    p = proxy(plan, *door)
    async with aiohttp.ClientSession() as s:
        for model in ("a", "b", "a"):  # each request after the first stops the other model
            assert await chat(s, p.url, model) == 200
    left: list[int] = []
    for _ in range(200):  # the models' output reaches the proxy's a moment later
        left = [int(n) for n in LEFT_OPEN.findall(p.log_text())]
        if len(left) == 2:
            break
        await asyncio.sleep(0.01)
    assert left == [0, 0], p.log_text()  # a stopped for b, then b for a: nothing left open
