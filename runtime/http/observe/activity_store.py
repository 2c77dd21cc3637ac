"""The persistent activity history: SQLite, written by one thread, in batches.

Why the work is split this way: the request path must never wait on a disk, and at
thousands of requests a second a thread doing Python work takes the interpreter lock
from the event loop often enough to cost more than the work itself.  So `record` (on
the event loop) only appends the finished entry to a list; a timer on the loop renders
the gathered entries into rows (token parsing included) a slice at a time, and hands
each batch to the writer thread as one JSON document.  The thread inserts it with one
statement (activity_db.insert_texts), which holds the lock only to start: the disk and
SQLite's own work run without it.  Reads the API asks for are queued behind the
batches already handed over (the entries still on the loop are handed over first), so
an answer always includes every request recorded before it was asked.  Beyond
`MAX_PENDING` unwritten entries (a stalled disk), new ones are dropped and counted.

Why it never stops the proxy: a file that cannot be used -- corrupt, held by another
running llama-swap (an advisory lock beside it), unwritable -- is logged and reported
by `status()`, and the history of this run is kept in an in-memory database instead,
so the API keeps answering.  `close()` writes what is pending before the thread ends.

Retention: rows beyond `maxRows` (or `metricsMaxInMemory` for `:memory:`), and rows
older than `maxAge`, are deleted at open, after every `PRUNE_EVERY` inserts and at
least once a minute while entries arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from llama_swap.runtime.http.observe import activity_db as db
from llama_swap.runtime.http.observe.activity_query import ActivityQuery

log = logging.getLogger("llama_swap.store")
T = TypeVar("T")

MAX_PENDING = 10_000  # entries waiting for the writer; more are dropped (and counted)
BATCH_DELAY = 0.05  # seconds the writer lets entries gather before a transaction
RETRY_DELAY = 1.0  # seconds before rows the database refused are tried again
PRUNE_EVERY = 500  # inserts between retention passes
PRUNE_INTERVAL = 60.0  # seconds between retention passes while entries arrive
# Entries rendered per turn of the event loop, so a burst never holds it for long, and
# rows gathered before a batch goes to the writer while entries keep arriving.
RENDER_SLICE = 64
BATCH_ROWS = 1024
STATE_DIR = "llama-swap-py"
DEFAULT_FILE = "activity.sqlite"


def default_path(env: dict[str, str] | None = None) -> str:
    """`activity.sqlite` in the user's state directory (XDG_STATE_HOME, else
    ~/.local/state), under `llama-swap-py`."""
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME", "").strip()
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return str(root / STATE_DIR / DEFAULT_FILE)


@dataclass(frozen=True, slots=True)
class _Batch:
    """Rows handed to the writer: one JSON document (activity_db.batch_text)."""

    text: str
    rows: int


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history is kept: newest `max_rows`, none older than `max_age` seconds."""

    max_rows: int
    max_age: float | None


class _Lock:
    """An advisory lock on `<db>.lock`: one running llama-swap per history file (ids are
    handed out by the process, so two writers would collide)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class ActivityStore:
    """The history behind `/api/metrics/activity` and `/api/metrics/stats`.

    `path()` (read at open: None means the default file) and `retention(in_memory)`
    (read at every pass, so a reload's values apply) come from the plan.  Everything
    but the writer thread's own loop runs on the event loop that called `open()`."""

    def __init__(self, path: Callable[[], str | None],
                 retention: Callable[[bool], Retention]) -> None:
        self._path_of = path
        self._retention = retention
        self._loop: asyncio.AbstractEventLoop | None = None
        # on the loop: entries recorded, not rendered yet; rows rendered, not handed over
        self._pending: list[Any] = []
        self._rendered: list[db.Row] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        # shared with the writer thread, under `_cond`: batches and reads, in order
        self._cond = threading.Condition()
        self._work: list[_Batch | Callable[[], None]] = []
        self._queued = 0  # rows in `_work`
        self._closing = False
        # the writer thread's own
        self._retry: list[_Batch] = []  # batches the database refused, tried again next time
        self._retry_rows = 0
        self._accepting = False  # from open() on: a store nobody opens keeps nothing
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock: _Lock | None = None
        self.path = ""  # the database in use (":memory:" after a fallback)
        self.wanted = ""  # the database the plan asked for
        self.error: str | None = None  # why the wanted database is not in use / last failure
        self.dropped = 0
        self.written = 0
        self.last_id = 0
        self._since_prune = 0
        self._pruned_at = 0.0
        # sees every entry's model and token figures as it is rendered (on the loop):
        # the token counters of /metrics
        self.on_written: Callable[[str, Mapping[str, Any]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> int:
        """Open the database (off the loop) and start the writer; the last id given."""
        if self._thread is not None:
            return self.last_id
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        await asyncio.to_thread(self._open)
        self._thread = threading.Thread(target=self._run, name="activity-store", daemon=True)
        self._thread.start()
        return self.last_id

    def _open(self) -> None:
        wanted = self._path_of()
        self.wanted = wanted = wanted if wanted is not None else default_path()
        try:
            self._conn = self._connect(wanted)
            self.last_id = db.last_id(self._conn)
            self.path = wanted
        except (db.StoreError, OSError, sqlite3.Error) as exc:
            self.error = str(exc)
            log.error("activity store unavailable, keeping this run's history in memory: %s",
                      exc)
            if self._conn is not None:
                self._conn.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            self._conn = db.connect(db.MEMORY)
            self.path = db.MEMORY
            self.last_id = 0
        self._prune()

    def _connect(self, path: str) -> sqlite3.Connection:
        if path == db.MEMORY:
            return db.connect(path)
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if Path(path).is_dir():
            raise db.StoreError(f"{path} is a directory, not a file")
        try:
            self._lock = _Lock(path)
        except OSError as exc:
            raise db.StoreError(f"{path} is in use by another llama-swap ({exc})") from exc
        try:
            return db.connect(path)
        except db.StoreError:
            self._lock.release()
            self._lock = None
            raise

    async def close(self) -> None:
        """Write what is pending, stop the writer, close the database."""
        thread = self._thread
        if thread is None:
            return
        self._hand_over_all()
        with self._cond:
            self._closing = True
            self._cond.notify()
        await asyncio.to_thread(thread.join)
        self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- the request path (on the loop) ----------------------------------------------

    def record(self, entry: Any) -> None:
        """Queue a finished entry (a rendered dict, or anything with `stored()`)."""
        if not self._accepting:
            return
        if self._closing or len(self._pending) + self._queued >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append(entry)
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(BATCH_DELAY, self._render_some)

    def _render_some(self) -> None:
        """Render one slice; come back on the next turn of the loop while more wait."""
        self._timer = None
        batch = self._pending[:RENDER_SLICE]
        del self._pending[:RENDER_SLICE]
        self._render(batch)
        if self._pending:
            if len(self._rendered) >= BATCH_ROWS:
                self._hand_over()
            assert self._loop is not None
            self._timer = self._loop.call_soon(self._render_some)
        else:
            self._hand_over()

    def _render(self, batch: list[Any]) -> None:
        hook = self.on_written
        for item in batch:
            try:
                if isinstance(item, dict):
                    row, model, tokens = db.row_of(item), item["model"], item.get("tokens")
                else:
                    row, tokens = item.stored()
                    model = item.model
            except (KeyError, TypeError, ValueError) as exc:  # a malformed entry: skip it
                self.dropped += 1
                log.warning("activity store: entry not written: %s", exc)
                continue
            self._rendered.append(row)
            if hook is not None:
                hook(str(model), tokens or {})

    def _hand_over(self) -> None:
        """Give the rendered rows to the writer thread as one batch."""
        rows, self._rendered = self._rendered, []
        if not rows:
            return
        try:
            text = db.batch_text(rows)
        except (TypeError, ValueError) as exc:  # rows are built JSON-safe; never expected
            self.dropped += len(rows)
            log.warning("activity store: %s entries not written: %s", len(rows), exc)
            return
        with self._cond:
            self._work.append(_Batch(text, len(rows)))
            self._queued += len(rows)
            self._cond.notify()

    def _hand_over_all(self) -> None:
        """Render and hand over everything recorded so far (before a read, at close)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        self._render(batch)
        self._hand_over()

    # -- reads -----------------------------------------------------------------------

    async def _ask(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer thread after every entry recorded so far is written."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        def job() -> None:
            try:
                assert self._conn is not None
                result: Any = fn(self._conn)
                ok = True
            except Exception as exc:  # reported to the caller, the writer goes on
                result, ok = exc, False
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, ok, result)

        if self._thread is None or self._closing:
            raise db.StoreError("activity store is not open")
        self._hand_over_all()
        with self._cond:
            self._work.append(job)
            self._cond.notify()
        return await future

    async def page(self, query: ActivityQuery) -> dict[str, Any]:
        return await self._ask(lambda conn: db.list_page(conn, query))

    async def flush(self) -> None:
        """Return once every entry recorded so far is written (no-op when not open)."""
        if self._thread is not None and not self._closing:
            await self._ask(lambda conn: None)

    async def stats(self, model: str) -> dict[str, Any]:
        return await self._ask(lambda conn: db.stats(conn, model))

    def status(self) -> dict[str, Any]:
        """What `/api/store/status` shows."""
        state = "closed" if self._thread is None else "open"
        if self.path and self.path != self.wanted:
            state = "fallback"
        pending = len(self._pending) + len(self._rendered) + self._queued + self._retry_rows
        return {
            "state": state, "path": self.path, "configured": self.wanted, "error": self.error,
            "pending": pending, "written": self.written, "dropped": self.dropped,
        }

    # -- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._work or self._closing):
                    if self._retry:  # refused rows: try again after a pause
                        self._cond.wait(RETRY_DELAY)
                        break
                    self._cond.wait()
                work, self._work = self._work, []
                closing = self._closing
            batches: list[_Batch] = []
            for item in work:
                if isinstance(item, _Batch):
                    batches.append(item)
                    continue
                self._write(batches)  # a read sees every batch handed over before it
                batches = []
                item()
            if batches or self._retry:
                self._write(batches)
            if closing:
                with self._cond:
                    if not self._work:
                        break
        if self._retry:
            self.dropped += self._retry_rows
            log.warning("activity store: %s entries could not be written before exit",
                        self._retry_rows)
            self._retry, self._retry_rows = [], 0

    def _write(self, batches: list[_Batch]) -> None:
        """Insert batches in one transaction.  Batches a busy or failing database refused
        are kept and tried again with the next ones (at most MAX_PENDING rows)."""
        if not batches and not self._retry:
            return
        assert self._conn is not None
        new_rows = sum(b.rows for b in batches)
        with self._cond:
            self._queued -= new_rows
        batches = self._retry + batches
        rows = self._retry_rows + new_rows
        self._retry, self._retry_rows = [], 0
        while rows > MAX_PENDING and len(batches) > 1:
            rows -= batches[0].rows
            self.dropped += batches.pop(0).rows
        try:
            db.insert_texts(self._conn, [b.text for b in batches])
        except sqlite3.Error as exc:
            self._retry, self._retry_rows = batches, rows
            if self.error is None or not self.error.startswith("writing"):
                log.warning("activity store: writing failed, will retry: %s", exc)
            self.error = f"writing activity failed: {exc}"
            return
        if self.error is not None and self.error.startswith("writing"):
            log.info("activity store: writing works again")
            self.error = None
        self.written += rows
        self._since_prune += rows
        now = time.monotonic()
        if self._since_prune >= PRUNE_EVERY or now - self._pruned_at >= PRUNE_INTERVAL:
            self._prune()

    def _prune(self) -> None:
        assert self._conn is not None
        self._since_prune = 0
        self._pruned_at = time.monotonic()
        keep = self._retention(self.path == db.MEMORY)
        older = None if keep.max_age is None else time.time() - keep.max_age
        try:
            db.prune(self._conn, keep.max_rows, older)
        except sqlite3.Error as exc:
            log.warning("activity store: pruning failed: %s", exc)
