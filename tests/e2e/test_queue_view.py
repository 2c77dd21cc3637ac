"""`GET /api/queue` and the Queue page against a real proxy: under `fifo`, requests that
arrive while their model loads are listed as that load's collation group, and a request
whose load would collide waits in the queue; once everything is served, nothing is left.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.surface_fixtures import fetch

WAIT = 30.0


async def queue(s: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    status, _, raw = await fetch(s, "GET", url + "/api/queue")
    assert status == 200
    doc: dict[str, Any] = json.loads(raw)
    return doc


async def test_fifo_collation_groups_and_the_blocked_queue(proxy: Any, record_file: Path) -> None:
    # one group, so a and b evict each other: b cannot load while a does
    p = proxy(make_plan([fake_model("a", record_file, "--start-delay", "2"),
                         fake_model("b", record_file)], scheduler="fifo"))
    async with aiohttp.ClientSession() as s:
        async def chat(model: str) -> int:
            status, _, _ = await fetch(s, "POST", p.url + "/v1/chat/completions",
                                       json={"model": model})
            return status

        first = asyncio.ensure_future(chat("a"))
        deadline = asyncio.get_running_loop().time() + WAIT
        while (await queue(s, p.url))["waiting"] < 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        rest = [asyncio.ensure_future(chat(m)) for m in ("b", "a")]
        while (doc := await queue(s, p.url))["waiting"] < 3:
            assert asyncio.get_running_loop().time() < deadline, doc
            await asyncio.sleep(0.02)
        status, _, html = await fetch(s, "GET", p.url + "/ui/queue")
        assert status == 200
        statuses = await asyncio.gather(first, *rest)
        # a lease is released just after its answer is written: wait for the last one
        while (after := await queue(s, p.url))["inFlight"]:
            assert asyncio.get_running_loop().time() < deadline + WAIT, after
            await asyncio.sleep(0.02)

    assert doc["scheduler"] == "fifo"
    (load,) = doc["loading"]
    assert load["model"] == "a" and [w["model"] for w in load["waiters"]] == ["a", "a"]
    assert all(w["waitMs"] is not None and w["waitMs"] >= 0 for w in load["waiters"])
    assert [(q["model"], q["position"]) for q in doc["queued"]] == [("b", 1)]
    page = html.decode()
    assert '<div class="group" data-loading="a">' in page and "Served together when ready" in page
    assert page.count("<tr data-request=") == 3
    assert statuses == [200, 200, 200]
    assert after == {"scheduler": "fifo", "queued": [], "loading": [], "inFlight": [],
                     "waiting": 0}
