"""The persistent activity history: the SQLite layer (activity_db.py) against real
databases, and the store (activity_store.py) with its writer process (store_process.py)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from llama_swap.runtime.http.observe import activity_db as db
from llama_swap.runtime.http.observe import activity_store
from llama_swap.runtime.http.observe.activity import TOKEN_FIELDS, ActivityLog, ResponseMeter
from llama_swap.runtime.http.observe.activity_query import ActivityQuery
from llama_swap.runtime.http.observe.activity_store import (
    WRITER,
    ActivityStore,
    Retention,
    default_path,
)
from llama_swap.runtime.http.observe.store_process import frame


def entry(id: int, model: str = "m", *, ts: float | None = None, status: int = 200,
          tokens: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    when = datetime.fromtimestamp(ts if ts is not None else time.time()).astimezone()
    out = {
        "id": id, "timestamp": when.isoformat(), "model": model,
        "req_path": "/v1/chat/completions", "resp_content_type": "application/json",
        "resp_status_code": status, "tokens": {k: -1 for k in TOKEN_FIELDS} | (tokens or {}),
        "duration_ms": 10 * id, "has_capture": False,
    }
    out.update(extra)
    return out


def ids(page: dict[str, Any]) -> list[int]:
    return [e["id"] for e in page["data"]]


# -- the database ---------------------------------------------------------------------


def test_a_written_entry_reads_back_in_the_api_shape(tmp_path: Path) -> None:
    conn = db.connect(str(tmp_path / "a.sqlite"))
    e = entry(4, tokens={"input_tokens": 3, "output_tokens": 4}, error_msg="boom",
              metadata={"fifo_priority": "0"})
    db.insert(conn, [db.row_of(e)])
    page = db.list_page(conn, ActivityQuery())
    assert page == {"data": [e], "page": 1, "limit": 25, "total": 1, "total_pages": 1}


def test_an_empty_history_is_an_empty_page(tmp_path: Path) -> None:
    conn = db.connect(db.MEMORY)
    assert db.list_page(conn, ActivityQuery()) == {
        "data": [], "page": 1, "limit": 25, "total": 0, "total_pages": 0}


def test_filters_and_together_and_models_or_together() -> None:
    conn = db.connect(db.MEMORY)
    t0 = 1_700_000_000.0
    db.insert(conn, [db.row_of(entry(i, "ab"[i % 2], ts=t0 + i)) for i in range(1, 11)])
    assert ids(db.list_page(conn, ActivityQuery(models=("a",)))) == [10, 8, 6, 4, 2]
    assert ids(db.list_page(conn, ActivityQuery(models=("a", "b"), min_id=3, max_id=5))) == [
        5, 4, 3]
    # times are inclusive at second precision: end = t0 + 4 takes t0 + 4.x
    q = ActivityQuery(start=t0 + 2, end=t0 + 4, models=("b",))
    assert ids(db.list_page(conn, q)) == [3]


def test_pages_sorting_and_ties_break_on_id() -> None:
    conn = db.connect(db.MEMORY)
    rows = [entry(i, "m", tokens={"output_tokens": i % 3}) for i in range(1, 8)]
    db.insert(conn, [db.row_of(r) for r in rows])
    page = db.list_page(conn, ActivityQuery(limit=3, page=3))
    assert (ids(page), page["total"], page["total_pages"]) == ([1], 7, 3)
    asc = db.list_page(conn, ActivityQuery(sort="generated", descending=False))
    assert ids(asc) == [3, 6, 1, 4, 7, 2, 5]


def test_stats_sum_known_tokens_and_histogram_known_speeds() -> None:
    conn = db.connect(db.MEMORY)
    db.insert(conn, [
        db.row_of(entry(1, "a", tokens={"input_tokens": 10, "output_tokens": 5,
                                        "cache_tokens": 2, "tokens_per_second": 20.0})),
        db.row_of(entry(2, "a", tokens={"input_tokens": 1, "prompt_per_second": 50.0})),
        db.row_of(entry(3, "b")),
    ])
    s = db.stats(conn, "")
    assert (s["total_requests"], s["total_input_tokens"], s["total_output_tokens"],
            s["total_cache_tokens"]) == (3, 11, 5, 2)
    assert s["gen_histogram"]["bins"] == [1] and s["prompt_histogram"]["p50"] == 50.0
    only_b = db.stats(conn, "b")
    assert only_b["total_requests"] == 1
    assert only_b["prompt_histogram"] is None and only_b["gen_histogram"] is None


def test_prune_keeps_the_newest_rows_and_drops_old_ones() -> None:
    conn = db.connect(db.MEMORY)
    now = time.time()
    db.insert(conn, [db.row_of(entry(i, ts=now - 100 + i)) for i in range(1, 11)])
    db.prune(conn, max_rows=6, older_than=None)
    assert ids(db.list_page(conn, ActivityQuery())) == [10, 9, 8, 7, 6, 5]
    db.prune(conn, max_rows=100, older_than=now - 92.5)
    assert ids(db.list_page(conn, ActivityQuery())) == [10, 9, 8]
    db.prune(conn, max_rows=1, older_than=None)
    assert db.last_id(conn) == 10  # ids are never given twice, even once pruned


def test_file_databases_use_wal_and_keep_their_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "h.sqlite")
    conn = db.connect(path)
    db.insert(conn, [db.row_of(entry(1))])
    conn.close()
    again = db.connect(path)
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ids(db.list_page(again, ActivityQuery())) == [1]


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 200)
    with pytest.raises(db.StoreError, match="junk.sqlite"):
        db.connect(str(path))


# -- the store ------------------------------------------------------------------------


def make_store(path: str | None, rows: int = 1000, age: float | None = None) -> ActivityStore:
    return ActivityStore(lambda: path, lambda memory: Retention(rows, age))


async def test_default_file_is_in_the_user_state_directory(tmp_path: Path) -> None:
    assert default_path({"XDG_STATE_HOME": "/s"}) == "/s/llama-swap-py/activity.sqlite"
    assert default_path({"XDG_STATE_HOME": "rel", "HOME": str(tmp_path)}).endswith(
        ".local/state/llama-swap-py/activity.sqlite")
    store = make_store(None)  # tests/conftest.py points XDG_STATE_HOME at a scratch dir
    await store.open()
    try:
        assert store.status()["state"] == "open" and Path(store.path).exists()
        assert store.path == default_path()
    finally:
        await store.close()


async def test_reads_see_every_entry_recorded_before_them(tmp_path: Path) -> None:
    store = make_store(str(tmp_path / "a.sqlite"))
    await store.open()
    try:
        for i in range(1, 201):
            store.record(entry(i))
        page = await store.page(ActivityQuery(limit=5))
        assert page["total"] == 200 and ids(page) == [200, 199, 198, 197, 196]
        assert (await store.stats(""))["total_requests"] == 200
    finally:
        await store.close()


async def test_close_writes_what_is_pending_and_a_restart_continues_the_ids(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "a.sqlite")
    store = make_store(path)
    assert await store.open() == 0
    for i in range(1, 51):
        store.record(entry(i))
    await store.close()
    assert store.status()["written"] == 50

    again = make_store(path)
    assert await again.open() == 50
    try:
        assert (await again.page(ActivityQuery()))["total"] == 50
    finally:
        await again.close()


async def test_the_activity_log_feeds_the_store_lazily_rendered_entries() -> None:
    store = make_store(db.MEMORY)
    log = ActivityLog(lambda: 10)
    log.sink = store.record
    log.continue_after(await store.open())
    try:
        meter = ResponseMeter()
        meter.start(200, {"Content-Type": "application/json"})
        meter.feed(b'{"usage": {"prompt_tokens": 7, "completion_tokens": 9}}')
        meter.finish()
        log.record(started=time.time(), duration_ms=12.0, model="m",
                   req_path="/v1/chat/completions", meter=meter)
        (got,) = (await store.page(ActivityQuery()))["data"]
        assert got["id"] == 1 and got["tokens"]["input_tokens"] == 7
        assert got["tokens"]["output_tokens"] == 9 and log.entries()[0]["id"] == 1
    finally:
        await store.close()


async def test_retention_bounds_the_history(tmp_path: Path) -> None:
    store = make_store(str(tmp_path / "a.sqlite"), rows=30)
    await store.open()
    try:
        for i in range(1, 1001):  # two retention passes on the way (every 500 inserts)
            store.record(entry(i))
        page = await store.page(ActivityQuery(limit=999))
        assert page["total"] <= 30 + 499 and ids(page)[0] == 1000
    finally:
        await store.close()
    again = make_store(str(tmp_path / "a.sqlite"), rows=30)  # a start prunes too
    await again.open()
    try:
        assert ids(await again.page(ActivityQuery(limit=999))) == list(range(1000, 970, -1))
    finally:
        await again.close()


async def test_old_rows_go_at_the_next_start(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sqlite")
    store = make_store(path)
    await store.open()
    store.record(entry(1, ts=time.time() - 7200))
    store.record(entry(2))
    await store.close()
    again = make_store(path, age=3600)
    await again.open()
    try:
        assert ids(await again.page(ActivityQuery())) == [2]
    finally:
        await again.close()


async def test_a_corrupt_file_falls_back_to_memory_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    path.write_bytes(b"\x00garbage" * 1000)
    store = make_store(str(path))
    await store.open()
    try:
        status = store.status()
        assert (status["state"], status["path"], status["configured"]) == (
            "fallback", ":memory:", str(path))
        assert "a.sqlite" in status["error"]
        store.record(entry(1))
        assert ids(await store.page(ActivityQuery())) == [1]
    finally:
        await store.close()
    assert path.read_bytes() == b"\x00garbage" * 1000  # left as found


async def test_a_file_in_use_by_another_store_falls_back(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sqlite")
    first, second = make_store(path), make_store(path)
    await first.open()
    try:
        await second.open()
        assert second.status()["state"] == "fallback"
        assert "in use by another llama-swap" in second.status()["error"]
        await second.close()
    finally:
        await first.close()


async def test_a_database_locked_by_an_outside_writer_is_reported(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sqlite")
    db.connect(path).close()
    outside = sqlite3.connect(path, isolation_level=None)
    outside.execute("BEGIN EXCLUSIVE")  # e.g. a maintenance script holding a write lock
    store = make_store(path)
    try:
        store_open = store.open()
        await store_open
        assert store.status()["state"] == "fallback" and "locked" in store.status()["error"]
    finally:
        outside.rollback()
        outside.close()
        await store.close()


async def test_a_store_nobody_opened_keeps_nothing() -> None:
    store = make_store(db.MEMORY)  # e.g. an app built without the activity routes
    for i in range(1, 20):
        store.record(entry(i))
    assert store.status()["pending"] == 0 and store.status()["state"] == "closed"
    await store.flush()  # /metrics asks: nothing to wait for


async def test_rows_a_locked_database_refuses_are_written_once_it_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 50)  # give up on the lock quickly
    path = str(tmp_path / "a.sqlite")
    store = make_store(path)
    await store.open()
    try:
        outside = sqlite3.connect(path, isolation_level=None)
        outside.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        for i in range(1, 4):
            store.record(entry(i))
        for _ in range(200):  # the writer tries, and is refused
            if store.status()["error"] is not None:
                break
            await asyncio.sleep(0.01)
        status = store.status()
        assert "locked" in status["error"] and status["pending"] == 3 and status["dropped"] == 0
        outside.rollback()
        outside.close()
        assert ids(await store.page(ActivityQuery())) == [3, 2, 1]  # a read writes them first
        assert store.status()["error"] is None
    finally:
        await store.close()


async def test_names_json_cannot_carry_and_figures_that_are_not_numbers_are_still_written(
    tmp_path: Path,
) -> None:
    store = make_store(str(tmp_path / "a.sqlite"))
    await store.open()
    try:
        store.record(entry(1, model="bad\ud800name", tokens={"prompt_per_second": float("nan")}))
        store.record(entry(2, model="ünïcödé", tokens={"tokens_per_second": float("inf"),
                                                       "input_tokens": True}))
        store.record(entry(3, tokens={"output_tokens": 12, "prompt_per_second": 1.5}))
        page = await store.page(ActivityQuery(sort="id", descending=False))
        assert [e["model"] for e in page["data"]] == ["bad?name", "ünïcödé", "m"]
        first, second, third = (e["tokens"] for e in page["data"])
        assert first["prompt_per_second"] == -1
        assert second["tokens_per_second"] == -1 and second["input_tokens"] == -1
        assert third["output_tokens"] == 12 and third["prompt_per_second"] == 1.5
        assert store.status()["dropped"] == 0
    finally:
        await store.close()


async def test_a_burst_is_written_in_slices_and_the_token_counters_see_every_entry(
    tmp_path: Path,
) -> None:
    store = make_store(str(tmp_path / "a.sqlite"))
    seen: dict[str, list[float]] = {}
    store.on_written = lambda model, tokens: seen.setdefault(model, []).append(
        tokens["input_tokens"])
    await store.open()
    try:
        for i in range(1, 1001):
            store.record(entry(i, tokens={"input_tokens": i}))
        for _ in range(500):  # the loop hands them over slice by slice while nobody reads
            if store.status()["written"] == 1000:
                break
            await asyncio.sleep(0.01)
        assert store.status()["written"] == 1000 and store.status()["pending"] == 0
        await store.flush()  # the counts parsed so far have arrived
        assert sum(seen["m"]) == sum(range(1, 1001))
        assert (await store.stats(""))["total_input_tokens"] == sum(range(1, 1001))
    finally:
        await store.close()


# -- the writer process -----------------------------------------------------------------


def writer_of(store: ActivityStore) -> psutil.Process:
    (kid,) = [k for k in psutil.Process().children() if WRITER in " ".join(k.cmdline())
              and k.pid == store.writer_pid]
    return kid


async def test_the_writer_is_a_process_that_exits_at_close(tmp_path: Path) -> None:
    store = make_store(str(tmp_path / "a.sqlite"))
    await store.open()
    kid = writer_of(store)
    store.record(entry(1))
    await store.close()
    assert not kid.is_running() or kid.status() == psutil.STATUS_ZOMBIE
    assert store.status()["state"] == "closed" and store.status()["written"] == 1


async def test_the_writer_ignores_a_stop_signal_meant_for_the_process_group(
    tmp_path: Path,
) -> None:
    """A terminal's Ctrl-C or a service manager's SIGTERM reaches the writer too; it keeps
    going until the proxy, stopping, hands over its last entries and closes the pipe."""
    store = make_store(str(tmp_path / "a.sqlite"))
    await store.open()
    try:
        kid = writer_of(store)
        kid.send_signal(signal.SIGINT)
        kid.send_signal(signal.SIGTERM)
        store.record(entry(1))
        assert ids(await store.page(ActivityQuery())) == [1]
    finally:
        await store.close()
    assert store.status()["error"] is None


async def test_a_writer_that_dies_is_reported_and_replaced_and_nothing_is_counted_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(activity_store, "RESTART_DELAY", 0.2)
    store = make_store(str(tmp_path / "a.sqlite"))
    await store.open()
    try:
        store.record(entry(1))
        await store.flush()
        first = writer_of(store)
        first.kill()
        for _ in range(500):
            if store.status()["state"] == "closed":
                break
            await asyncio.sleep(0.01)
        status = store.status()
        assert status["state"] == "closed" and "exited unexpectedly" in status["error"]
        with pytest.raises(db.StoreError):  # no writer to ask right now
            await store.page(ActivityQuery())
        store.record(entry(2))  # waits for the new writer
        for _ in range(500):
            if store.writer_pid is not None and store.status()["state"] == "open":
                break
            await asyncio.sleep(0.01)
        assert writer_of(store).pid != first.pid
        assert ids(await store.page(ActivityQuery())) == [2, 1]
        status = store.status()
        assert (status["written"], status["dropped"], status["pending"]) == (2, 0, 0)
        assert status["error"] is None
    finally:
        await store.close()
    assert store.status()["state"] == "closed"


def test_the_writer_writes_what_it_was_sent_when_its_input_ends(tmp_path: Path) -> None:
    """The proxy died (its end of the pipe closed): what reached the writer is kept."""
    path = str(tmp_path / "a.sqlite")
    entries = [db.raw_of(entry(i)) for i in range(1, 4)]
    keep = (1000, None, 1000, None)
    proc = subprocess.Popen([sys.executable, "-m", WRITER], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(frame(("open", path, 5000, *keep)) + frame(("entries", entries, *keep)))
    proc.stdin.close()  # no "close": the end of the input says it
    assert proc.wait(30) == 0
    assert ids(db.list_page(db.connect(path), ActivityQuery())) == [3, 2, 1]
