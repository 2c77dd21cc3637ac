"""The persistent activity history, as the proxy sees it: entries go to a writer process.

Why this shape: the request path must never wait on a disk, and at thousands of
requests a second even a thread that only inserts costs the event loop more than the
inserts (docs/performance.md).  So `record` (on the event loop) only appends the
finished entry to a list; a timer on the loop turns the gathered entries into plain
tuples (activity_db.RawEntry) a slice at a time and sends each batch down a pipe to the
writer process (store_process.py), which owns the SQLite database, parses the answers for
their token figures (off the loop) and reports the counts per model back for /metrics
(`on_written`).  Reads the API asks
for go down the same pipe behind the batches (the entries still on the loop are sent
first), so an answer always includes every request recorded before it was asked.
Beyond `MAX_PENDING` unwritten entries (a stalled disk), new ones are dropped and
counted.

Why it never stops the proxy: the writer reports a file it cannot use and keeps this
run's history in memory instead; `status()` says so.  A writer that cannot start or
dies is logged and reported there too, the rows it had not written are counted as dropped,
and a new writer starts a second later (at most MAX_RESTARTS times); the proxy never waits.
`close()` hands over what is pending and waits for the writer to write it and exit.

Retention (`maxRows`, or `metricsMaxInMemory` for `:memory:`, and `maxAge`) is applied
by the writer, with the plan's values sent along with every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_swap.runtime.http.observe import activity_db as db
from llama_swap.runtime.http.observe.activity_query import ActivityQuery
from llama_swap.runtime.http.observe.store_process import HEADER, Message, frame, message_of

log = logging.getLogger("llama_swap.store")

MAX_PENDING = 10_000  # entries not yet written; more are dropped (and counted)
BATCH_DELAY = 0.05  # seconds entries gather before they are packed and sent
# Entries packed per turn of the event loop, so a burst never holds it for long, and
# rows gathered before a batch is sent while entries keep arriving.
RENDER_SLICE = 64
BATCH_ROWS = 1024
CLOSE_TIMEOUT = 30.0  # seconds the writer gets to finish at close before it is killed
RESTART_DELAY = 1.0  # seconds before a writer that died is replaced
MAX_RESTARTS = 5  # writers started after the first, in a run; then history stops
WRITER = "llama_swap.runtime.http.observe.store_process"
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


class ActivityStore:
    """The history behind `/api/metrics/activity` and `/api/metrics/stats`.

    `path()` (read at open: None means the default file) and `retention(in_memory)`
    (read at every batch, so a reload's values apply) come from the plan.  Everything
    runs on the event loop that called `open()`."""

    def __init__(self, path: Callable[[], str | None],
                 retention: Callable[[bool], Retention]) -> None:
        self._path_of = path
        self._retention = retention
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[int] | None = None
        self._asks: dict[int, asyncio.Future[Any]] = {}
        self._next_ask = 0
        # recorded, not packed yet; packed (RawEntry), not sent yet; sent, in rows
        self._pending: list[Any] = []
        self._packed: list[db.RawEntry] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._sent = 0
        self._accepting = False  # from open() on: a store nobody opens keeps nothing
        self._closing = False
        self.path = ""  # the database in use (":memory:" after a fallback)
        self.wanted = ""  # the database the plan asked for
        self.error: str | None = None  # why the wanted database is not in use / last failure
        self._dropped = 0  # here, and rows lost with a writer that died
        self._writer_written = 0  # as the current writer reports them
        self._writer_dropped = 0
        self._before_written = 0  # written by earlier writers (before a restart)
        self._before_dropped = 0
        self._retrying = 0
        self._restarts = 0
        self._restart: asyncio.Task[None] | None = None
        self.last_id = 0
        # the token counters of /metrics: the known input and output tokens of the entries
        # the writer parsed, per model, as it reports them (on the loop)
        self.on_written: Callable[[str, Mapping[str, Any]], None] | None = None

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid while it runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def written(self) -> int:
        return self._before_written + self._writer_written

    @property
    def dropped(self) -> int:
        return self._dropped + self._before_dropped + self._writer_dropped

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> int:
        """Start the writer and open the database; the last id given."""
        if self._proc is not None:
            return self.last_id
        self._loop = asyncio.get_running_loop()
        wanted = self._path_of()
        self.wanted = wanted if wanted is not None else default_path()
        return await self._start()

    async def _start(self) -> int:
        """Spawn a writer, have it open the database; the last id given."""
        loop = asyncio.get_running_loop()
        self._accepting = True
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", WRITER,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            self._gone(f"activity store writer did not start: {exc}")
            return 0
        self._reader = loop.create_task(self._read(self._proc))
        self._opened = loop.create_future()
        self._send(("open", self.wanted, db.BUSY_TIMEOUT_MS, *self._retentions()))
        try:
            self.last_id = await self._opened
        except db.StoreError:
            return 0
        return self.last_id

    async def close(self) -> None:
        """Hand over what is pending, let the writer write it, wait for it to exit."""
        restart, self._restart = self._restart, None
        if restart is not None:  # a writer that died and is not back yet
            self._closing = True
            restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await restart
        proc = self._proc
        if proc is None:
            return
        self._hand_over_all()
        self._closing = True
        self._send(("close",))
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        reader = self._reader
        try:
            if reader is not None:
                await asyncio.wait_for(asyncio.shield(reader), CLOSE_TIMEOUT)
        except TimeoutError:
            log.error("activity store: the writer did not finish in %s s; stopping it",
                      CLOSE_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        if reader is not None:
            await reader
        self._proc = None

    def _retentions(self) -> tuple[int, float | None, int, float | None]:
        on_file, in_memory = self._retention(False), self._retention(True)
        return on_file.max_rows, on_file.max_age, in_memory.max_rows, in_memory.max_age

    # -- the request path ------------------------------------------------------------

    def record(self, entry: Any) -> None:
        """Queue a finished entry (a rendered dict, or anything with `raw()`)."""
        if not self._accepting:
            return
        if self._closing or (
            len(self._pending) + len(self._packed) + self._unconfirmed() >= MAX_PENDING
        ):
            self._dropped += 1
            return
        self._pending.append(entry)
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(BATCH_DELAY, self._pack_some)

    def _unconfirmed(self) -> int:
        """Rows sent that the writer has not reported written or dropped."""
        return max(0, self._sent - self.written - self._before_dropped - self._writer_dropped)

    def _pack_some(self) -> None:
        """Pack one slice; come back on the next turn of the loop while more wait."""
        self._timer = None
        batch = self._pending[:RENDER_SLICE]
        del self._pending[:RENDER_SLICE]
        self._pack(batch)
        if self._pending:
            if len(self._packed) >= BATCH_ROWS:
                self._hand_over()
            assert self._loop is not None
            self._timer = self._loop.call_soon(self._pack_some)
        else:
            self._hand_over()

    def _pack(self, batch: list[Any]) -> None:
        for item in batch:
            try:
                raw = db.raw_of(item) if isinstance(item, dict) else item.raw()
            except (KeyError, TypeError, ValueError) as exc:  # a malformed entry: skip it
                self._dropped += 1
                log.warning("activity store: entry not written: %s", exc)
                continue
            self._packed.append(raw)

    def _hand_over(self) -> None:
        """Send the packed entries to the writer as one batch (or keep them while a new
        writer is on its way)."""
        if self._proc is None and self._restart is not None:
            return
        rows, self._packed = self._packed, []
        if not rows:
            return
        if self._send(("entries", rows, *self._retentions())):
            self._sent += len(rows)
        else:
            self._dropped += len(rows)

    def _hand_over_all(self) -> None:
        """Pack and send everything recorded so far (before a read, at close)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        self._pack(batch)
        self._hand_over()

    # -- the pipe ----------------------------------------------------------------------

    def _send(self, message: Message) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return False
        try:
            proc.stdin.write(frame(message))
        except (OSError, RuntimeError, ValueError) as exc:  # the writer is gone
            log.debug("activity store: cannot reach the writer: %s", exc)
            return False
        return True

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        """The writer's messages, until it exits."""
        assert proc.stdout is not None
        try:
            while True:
                head = await proc.stdout.readexactly(HEADER.size)
                (size,) = HEADER.unpack(head)
                self._receive(message_of(await proc.stdout.readexactly(size)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        code = await proc.wait()
        if not self._closing or code != 0:
            self._gone(f"activity store writer exited unexpectedly (code {code})")
        for future in self._asks.values():
            if not future.done():
                future.set_exception(db.StoreError("activity store is not open"))
        self._asks.clear()
        if not self._closing:
            self._lost_writer()

    def _lost_writer(self) -> None:
        """The writer died: what it had not written is counted as dropped, and a new one
        starts after RESTART_DELAY (at most MAX_RESTARTS times)."""
        self._proc = None
        unconfirmed = self._unconfirmed()
        self._before_written += self._writer_written
        self._before_dropped += self._writer_dropped + unconfirmed
        self._writer_written = self._writer_dropped = self._retrying = 0
        self._sent = self._before_written + self._before_dropped  # nothing unconfirmed now
        if self._restarts >= MAX_RESTARTS or self._loop is None:
            log.error("activity store: the writer died %s times; history is no longer kept",
                      self._restarts + 1)
            return
        self._restarts += 1
        self._accepting = True  # entries keep being packed; they wait for the new writer
        self._restart = self._loop.create_task(self._restart_later())

    async def _restart_later(self) -> None:
        await asyncio.sleep(RESTART_DELAY)
        if self._closing:
            return
        log.warning("activity store: starting a new writer (restart %s of at most %s)",
                    self._restarts, MAX_RESTARTS)
        await self._start()
        self._restart = None
        self._hand_over()  # the rows that waited

    def _receive(self, message: Message) -> None:
        kind = message[0]
        if kind == "status":
            (_, self.path, self.error, self._writer_written, self._writer_dropped,
             self._retrying, tokens) = message
            hook = self.on_written
            if hook is not None:
                for model, (inputs, outputs) in tokens.items():
                    hook(model, {"input_tokens": inputs, "output_tokens": outputs})
        elif kind == "log":
            log.log(message[1], "%s", message[2])
        elif kind == "answer":
            _, ask_id, ok, value = message
            future = self._asks.pop(ask_id, None)
            if future is not None and not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(db.StoreError(value))
        elif kind == "opened" and self._opened is not None and not self._opened.done():
            self._opened.set_result(message[1])

    def _gone(self, why: str) -> None:
        """No writer: say why, keep nothing more."""
        log.error("%s; activity history is not kept", why)
        self.error = why
        self._accepting = False
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(db.StoreError(why))

    # -- reads -----------------------------------------------------------------------

    async def _ask(self, op: str, argument: Any) -> Any:
        """The writer's answer, after every entry recorded so far is written."""
        if self._proc is None or self._closing or self._loop is None:
            raise db.StoreError("activity store is not open")
        self._hand_over_all()
        self._next_ask += 1
        future: asyncio.Future[Any] = self._loop.create_future()
        self._asks[self._next_ask] = future
        if not self._send(("ask", self._next_ask, op, argument)):
            del self._asks[self._next_ask]
            raise db.StoreError("activity store is not open")
        return await future

    async def page(self, query: ActivityQuery) -> dict[str, Any]:
        answer: dict[str, Any] = await self._ask("page", dataclasses.asdict(query))
        return answer

    async def flush(self) -> None:
        """Return once every entry recorded so far is written (no-op when not open)."""
        if self._proc is not None and not self._closing:
            with contextlib.suppress(db.StoreError):
                await self._ask("flush", None)

    async def stats(self, model: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._ask("stats", model)
        return answer

    def status(self) -> dict[str, Any]:
        """What `/api/store/status` shows."""
        state = "closed" if self._proc is None else "open"
        if self.path and self.path != self.wanted:
            state = "fallback"
        pending = len(self._pending) + len(self._packed) + self._unconfirmed()
        return {
            "state": state, "path": self.path, "configured": self.wanted, "error": self.error,
            "pending": pending, "written": self.written, "dropped": self.dropped,
        }

