"""The persistent activity history through the real proxy: `GET /api/metrics/activity`,
`GET /api/metrics/stats`, `GET /api/store/status`, across restarts, with retention, and
with a database file that cannot be used."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import Proxy, fake_model
from tests.e2e.surface_fixtures import surface_plan


async def get(url: str, path: str, status: int = 200) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url + path) as r:
        assert r.status == status, await r.text()
        return await r.json()


async def chat(url: str, model: str = "a", n: int = 1) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(url + "/v1/chat/completions", json={"model": model}) as r:
                assert r.status == 200
                await r.read()


def ids(page: dict[str, Any]) -> list[int]:
    return [e["id"] for e in page["data"]]


async def test_history_survives_a_restart(proxy: Any, record_file: Path, tmp_path: Path) -> None:
    plan = surface_plan([fake_model("a", record_file, "--tokens", "5")],
                        storePath=str(tmp_path / "history.sqlite"))
    first: Proxy = proxy(plan)
    await chat(first.url, n=3)
    before = await get(first.url, "/api/metrics/activity")
    assert ids(before) == [3, 2, 1] and before["total"] == 3
    assert first.terminate() == 0

    second: Proxy = proxy(plan)
    after = await get(second.url, "/api/metrics/activity")
    assert ids(after) == [3, 2, 1]
    assert [e["tokens"] for e in after["data"]] == [e["tokens"] for e in before["data"]]
    assert all(e["has_capture"] is False for e in after["data"])  # captures are not kept
    await chat(second.url)
    assert ids(await get(second.url, "/api/metrics/activity?limit=1")) == [4]
    stats = await get(second.url, "/api/metrics/stats?model=a")
    assert (stats["total_requests"], stats["total_output_tokens"]) == (4, 20)


async def test_retention_bounds_the_history(proxy: Any, record_file: Path, tmp_path: Path) -> None:
    plan = surface_plan([fake_model("a", record_file)], storePath=str(tmp_path / "h.sqlite"),
                        storeMaxRows=2)
    first: Proxy = proxy(plan)
    await chat(first.url, n=5)
    assert first.terminate() == 0
    second: Proxy = proxy(plan)
    page = await get(second.url, "/api/metrics/activity")
    assert ids(page) == [5, 4] and page["total"] == 2


async def test_pages_filters_and_refusals(proxy: Any, record_file: Path, tmp_path: Path) -> None:
    plan = surface_plan([fake_model("a", record_file), fake_model("b", record_file)],
                        storePath=":memory:")
    p: Proxy = proxy(plan)
    await chat(p.url, "a", 2)
    await chat(p.url, "b", 1)
    page = await get(p.url, "/api/metrics/activity?model=a&limit=1&page=2&order=asc")
    assert (ids(page), page["total"], page["total_pages"], page["limit"], page["page"]) == (
        [2], 2, 2, 1, 2)
    assert page["data"][0]["has_capture"] is True  # still in this run's capture memory
    both = await get(p.url, "/api/metrics/activity?model=a&model=b&min_id=2&sort=model")
    assert ids(both) == [3, 2]
    bad = await get(p.url, "/api/metrics/activity?limit=1000", status=400)
    assert bad["error"]["message"] == "limit must be between 1 and 999"
    status = await get(p.url, "/api/store/status")
    assert (status["state"], status["path"], status["error"]) == ("open", ":memory:", None)


async def test_each_recorded_request_is_announced_by_id(
    proxy: Any, record_file: Path,
) -> None:
    from tests.e2e.test_surface_live import next_events

    p: Proxy = proxy(surface_plan([fake_model("a", record_file)], storePath=":memory:"))
    async with aiohttp.ClientSession() as s, s.get(p.url + "/api/events") as events:
        buf = [b""]
        await next_events(events, buf, lambda f: len(f) >= 5)  # the initial burst
        await chat(p.url, n=2)
        frames = await next_events(
            events, buf, lambda f: sum(x["type"] == "activity" for x in f) >= 2)
    assert [f["data"] for f in frames if f["type"] == "activity"] == [{"id": 1}, {"id": 2}]
    assert ids(await get(p.url, "/api/metrics/activity")) == [2, 1]


async def test_a_corrupt_database_does_not_stop_the_proxy(
    proxy: Any, record_file: Path, tmp_path: Path,
) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(b"not a database " * 1000)
    p: Proxy = proxy(surface_plan([fake_model("a", record_file)], storePath=str(path)))
    await chat(p.url, n=2)
    status = await get(p.url, "/api/store/status")
    assert (status["state"], status["configured"]) == ("fallback", str(path))
    assert "history.sqlite" in status["error"]
    assert ids(await get(p.url, "/api/metrics/activity")) == [2, 1]  # kept in memory
    assert "activity store unavailable" in p.log_text()
    assert path.read_bytes() == b"not a database " * 1000


async def test_a_reload_that_names_another_file_keeps_the_open_one_until_restart(
    tmp_path: Path,
) -> None:
    from tests.e2e.conftest import LLAMA_SWAP, launch

    first, second = tmp_path / "one.sqlite", tmp_path / "two.sqlite"
    config = tmp_path / "config.yaml"
    config.write_text(f"store:\n  path: {first}\nmodels: {{}}\n")
    started: list[Proxy] = []
    try:
        p = launch([LLAMA_SWAP, "--config", str(config), "--listen", "127.0.0.1:0"],
                   tmp_path / "unused.jsonl", started)
        config.write_text(f"store:\n  path: {second}\n  maxRows: 5\nmodels: {{}}\n")
        async with aiohttp.ClientSession() as s, s.post(p.url + "/api/config/reload") as r:
            outcome = await r.json()
        assert sorted(outcome["diff"]["settingsChanged"]) == ["storeMaxRows", "storePath"]
        status = await get(p.url, "/api/store/status")
        assert (status["state"], status["path"]) == ("open", str(first))
        note = f"store.path changed to {second}; it applies after a restart"
        for _ in range(500):  # the log reaches us through a pipe
            if note in p.log_text():
                break
            await asyncio.sleep(0.01)
        assert note in p.log_text()
        assert not second.exists()
    finally:
        for proc in started:
            proc.stop()
