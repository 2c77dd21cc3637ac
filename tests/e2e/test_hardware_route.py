"""`GET /api/hardware` through the real proxy: this machine's snapshot, behind the API key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import fake_model
from tests.e2e.surface_fixtures import fetch, surface_plan


async def test_the_snapshot_of_this_machine(proxy: Any, record_file: Path) -> None:
    p = proxy(surface_plan([fake_model("m", record_file)], apiKeys=("sk-hw",)))
    async with aiohttp.ClientSession() as s:
        status, _, _ = await fetch(s, "GET", p.url + "/api/hardware")
        assert status == 401
        status, headers, raw = await fetch(s, "GET", p.url + "/api/hardware",
                                           headers={"Authorization": "Bearer sk-hw"})
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        snap = json.loads(raw)
        assert snap["schema_version"] == 1
        assert snap["capture"]["detector"]["name"] == "llama-swap"
        assert snap["memory"]["capacity_bytes"] > 0
        assert snap["cpu"]["logical_thread_count"] >= 1
        assert isinstance(snap["accelerators"], list)
        again = json.loads((await fetch(s, "GET", p.url + "/api/hardware",
                                        headers={"Authorization": "Bearer sk-hw"}))[2])
        assert again["captured_at"] == snap["captured_at"]  # taken once
