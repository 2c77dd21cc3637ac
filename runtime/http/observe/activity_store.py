"""The persistent activity history: SQLite written by one thread, in batches.

Why a thread and a bounded list: the request path must never wait on a disk.  `record`
(on the event loop) only appends the finished entry to a list under a lock held for
microseconds; the writer thread takes the whole list, renders the entries (token
parsing included) and inserts them in one transaction, then runs whatever reads the API
asked for.  Reads run on the same thread after the pending entries are written, so an
answer always includes every request recorded before it was asked.  Beyond
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
from collections.abc import Callable
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
# Rendering entries is Python work that holds the GIL; a thread that does not give it up
# keeps the event loop waiting up to the interpreter's switch interval (5 ms).  The
# writer gives it up after every few entries, so the loop waits microseconds instead.
YIELD_EVERY = 8
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
    (read at every pass, so a reload's values apply) come from the plan."""

    def __init__(self, path: Callable[[], str | None],
                 retention: Callable[[bool], Retention]) -> None:
        self._path_of = path
        self._retention = retention
        self._cond = threading.Condition()
        self._pending: list[Any] = []
        self._retry: list[db.Row] = []  # rows the database refused, tried again next time
        self._jobs: list[Callable[[], None]] = []
        self._closing = False
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
        # sees every entry written (on the writer thread): the token counters of /metrics
        self.on_written: Callable[[dict[str, Any]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> int:
        """Open the database (off the loop) and start the writer; the last id given."""
        if self._thread is not None:
            return self.last_id
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

    # -- the request path ------------------------------------------------------------

    def record(self, entry: Any) -> None:
        """Queue a finished entry (a rendered dict, or anything with `render()`)."""
        with self._cond:
            if not self._accepting:
                return
            if self._closing or len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                return
            self._pending.append(entry)
            if len(self._pending) == 1:
                self._cond.notify()

    # -- reads -----------------------------------------------------------------------

    async def _ask(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the writer thread after the pending entries are written."""
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

        with self._cond:
            if self._thread is None or self._closing:
                raise db.StoreError("activity store is not open")
            self._jobs.append(job)
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
        return {
            "state": state, "path": self.path, "configured": self.wanted, "error": self.error,
            "pending": len(self._pending) + len(self._retry), "written": self.written,
            "dropped": self.dropped,
        }

    # -- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._jobs or self._closing):
                    if self._retry:  # refused rows: try again after a pause
                        self._cond.wait(RETRY_DELAY)
                        break
                    self._cond.wait()
                if self._pending and not (self._jobs or self._closing):
                    self._cond.wait(BATCH_DELAY)  # let a burst gather into one transaction
                batch, self._pending = self._pending, []
                jobs, self._jobs = self._jobs, []
                closing = self._closing
            if batch or self._retry:
                self._write(batch)
            for job in jobs:
                job()
            if closing:
                with self._cond:
                    if not self._pending and not self._jobs:
                        break
        if self._retry:
            self.dropped += len(self._retry)
            log.warning("activity store: %s entries could not be written before exit",
                        len(self._retry))
            self._retry = []

    def _write(self, batch: list[Any]) -> None:
        """Render and insert a batch.  Rows a busy or failing database refused are kept
        and tried again with the next batch (at most MAX_PENDING of them)."""
        assert self._conn is not None
        entries: list[dict[str, Any]] = []
        rows: list[db.Row] = []
        for i, item in enumerate(batch):
            try:
                entry = item if isinstance(item, dict) else item.render()
                rows.append(db.row_of(entry))
            except (KeyError, TypeError, ValueError) as exc:  # a malformed entry: skip it
                self.dropped += 1
                log.warning("activity store: entry not written: %s", exc)
                continue
            entries.append(entry)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)  # hand the GIL to the event loop (see YIELD_EVERY)
        hook = self.on_written
        if hook is not None:
            for i, entry in enumerate(entries):
                hook(entry)
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    time.sleep(0)
        if self._retry:
            rows = self._retry + rows
            self._retry = []
        if len(rows) > MAX_PENDING:
            self.dropped += len(rows) - MAX_PENDING
            rows = rows[-MAX_PENDING:]
        try:
            db.insert(self._conn, rows)
        except sqlite3.Error as exc:
            self._retry = rows
            if self.error is None or not self.error.startswith("writing"):
                log.warning("activity store: writing failed, will retry: %s", exc)
            self.error = f"writing activity failed: {exc}"
            return
        if self.error is not None and self.error.startswith("writing"):
            log.info("activity store: writing works again")
            self.error = None
        self.written += len(rows)
        self._since_prune += len(rows)
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
