"""The activity store's writer: a process of its own that owns the SQLite database.

Why a process and not a thread of the proxy: at thousands of requests a second, inserts
made by a thread of the proxy's process cost its event loop more than the inserts
themselves, even when SQLite runs without the interpreter lock (measured in
docs/performance.md).  Here the proxy only sends each batch of rendered rows down a pipe.

The protocol, both ways: frames of a 4-byte big-endian length and a `marshal`-ed tuple
(both ends are this package and the values are plain: strings, numbers, None, and tuples,
lists and dicts of them).

    proxy -> writer  ("open", path, busy_ms, file_rows, file_age, memory_rows, memory_age)
                     ("entries", raw_entries, file_rows, file_age, memory_rows, memory_age)
                     ("ask", id, "page" | "stats" | "flush", argument)
                     ("close",)
    writer -> proxy  ("log", level, text)      for the proxy's log
                     ("status", path, error, written, dropped, retrying, tokens)
                     ("opened", last_id)
                     ("answer", id, ok, value_or_error_text)

Entries come in the proxy's raw form (activity_db.RawEntry): the answer's JSON body is parsed
for its token figures here, off the proxy's event loop, and each status carries the known
input and output tokens per model parsed since the last one, for the proxy's /metrics.
Retention travels with every batch so that a reload's values apply.  The end of the
input -- the proxy closed the pipe, or died -- is a close: what is pending is written and
the writer exits, so it never outlives the proxy.  SIGINT and SIGTERM are ignored (a
terminal's Ctrl-C and a service manager's stop reach the whole process group): the proxy
closes the pipe when it stops, after handing over its last entries.

Why it never stops the proxy: a file that cannot be used -- corrupt, held by another
running llama-swap (an advisory lock beside it), unwritable -- is reported and this run's
history is kept in an in-memory database instead.  Rows a busy database refuses are
retried every RETRY_DELAY seconds (at most MAX_RETRY rows are kept).

Run by the proxy as `python -m llama_swap.runtime.http.observe.store_process`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import os
import select
import signal
import sqlite3
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_swap.runtime.http.observe import activity_db as db
from llama_swap.runtime.http.observe.activity_query import ActivityQuery

RETRY_DELAY = 1.0  # seconds before rows the database refused are tried again
MAX_RETRY = 10_000  # refused rows kept for the next try; older ones are dropped
PRUNE_EVERY = 500  # inserts between retention passes
PRUNE_INTERVAL = 60.0  # seconds between retention passes while entries arrive
HEADER = struct.Struct(">I")

Message = tuple[Any, ...]


def frame(message: Message) -> bytes:
    """One message as it goes down the pipe."""
    payload = marshal.dumps(message)
    return HEADER.pack(len(payload)) + payload


def message_of(payload: bytes) -> Message:
    """A frame's payload as the message it carries."""
    message: Message = marshal.loads(payload)
    return message


class _Lock:
    """An advisory lock on `<db>.lock`: one running llama-swap per history file (ids are
    handed out by the proxy, so two writers would collide)."""

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


class Writer:
    """The database side, synchronous: open, write batches, answer reads, prune.
    `send` takes the messages for the proxy (logs and status)."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self.conn: sqlite3.Connection | None = None
        self._lock: _Lock | None = None
        self.path = ""
        self.error: str | None = None
        self.written = 0
        self.dropped = 0
        self.retry: list[db.Row] = []
        self.tokens: dict[str, list[int | float]] = {}  # model -> [input, output] since the last status
        self._keep: tuple[tuple[int, float | None], tuple[int, float | None]] = (
            (100_000, None), (100_000, None))
        self._since_prune = 0
        self._pruned_at = 0.0

    def _log(self, level: int, text: str) -> None:
        self._send(("log", level, text))

    def status(self) -> None:
        tokens, self.tokens = self.tokens, {}
        self._send(("status", self.path, self.error, self.written, self.dropped,
                    len(self.retry), tokens))

    def rows(self, entries: list[db.RawEntry]) -> list[db.Row]:
        """Entries as table rows, their token figures counted (see `status`)."""
        out: list[db.Row] = []
        for raw in entries:
            try:
                row, model, tokens = db.row_of_raw(raw)
            except (KeyError, TypeError, ValueError) as exc:  # malformed: skip it
                self.dropped += 1
                self._log(logging.WARNING, f"activity store: entry not written: {exc}")
                continue
            out.append(row)
            counts = None
            for i, key in enumerate(("input_tokens", "output_tokens")):
                value = tokens.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                    if counts is None:
                        counts = self.tokens.setdefault(model, [0, 0])
                    counts[i] += value
        return out

    def retention(self, file_rows: int, file_age: float | None, memory_rows: int,
                  memory_age: float | None) -> None:
        self._keep = ((file_rows, file_age), (memory_rows, memory_age))

    # -- open / close ------------------------------------------------------------------

    def open(self, wanted: str, busy_ms: int) -> int:
        """Open `wanted` (or, failing that, memory); the highest id given so far."""
        last = 0
        try:
            self.conn = self._connect(wanted, busy_ms)
            last = db.last_id(self.conn)
            self.path = wanted
        except (db.StoreError, OSError, sqlite3.Error) as exc:
            self.error = str(exc)
            self._log(logging.ERROR, "activity store unavailable, keeping this run's "
                      f"history in memory: {exc}")
            if self.conn is not None:
                self.conn.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            self.conn = db.connect(db.MEMORY, busy_ms)
            self.path = db.MEMORY
        self._prune()
        return last

    def _connect(self, path: str, busy_ms: int) -> sqlite3.Connection:
        if path == db.MEMORY:
            return db.connect(path, busy_ms)
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if Path(path).is_dir():
            raise db.StoreError(f"{path} is a directory, not a file")
        try:
            self._lock = _Lock(path)
        except OSError as exc:
            raise db.StoreError(f"{path} is in use by another llama-swap ({exc})") from exc
        try:
            return db.connect(path, busy_ms)
        except db.StoreError:
            self._lock.release()
            self._lock = None
            raise

    def close(self) -> None:
        """Try the refused rows a last time, then let go of the database."""
        if self.retry:
            self.write([])
        if self.retry:
            self.dropped += len(self.retry)
            self._log(logging.WARNING, f"activity store: {len(self.retry)} entries could "
                      "not be written before exit")
            self.retry = []
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- writes ------------------------------------------------------------------------

    def write(self, rows: list[db.Row]) -> None:
        """Insert rows (after those refused before) in one transaction; on failure keep
        them for the next try."""
        assert self.conn is not None
        if self.retry:
            rows = self.retry + rows
            self.retry = []
        if not rows:
            return
        if len(rows) > MAX_RETRY:
            self.dropped += len(rows) - MAX_RETRY
            rows = rows[-MAX_RETRY:]
        try:
            db.insert(self.conn, rows)
        except sqlite3.Error as exc:
            self.retry = rows
            if self.error is None or not self.error.startswith("writing"):
                self._log(logging.WARNING, f"activity store: writing failed, will retry: {exc}")
            self.error = f"writing activity failed: {exc}"
            return
        if self.error is not None and self.error.startswith("writing"):
            self._log(logging.INFO, "activity store: writing works again")
            self.error = None
        self.written += len(rows)
        self._since_prune += len(rows)
        now = time.monotonic()
        if self._since_prune >= PRUNE_EVERY or now - self._pruned_at >= PRUNE_INTERVAL:
            self._prune()

    def _prune(self) -> None:
        assert self.conn is not None
        self._since_prune = 0
        self._pruned_at = time.monotonic()
        rows, age = self._keep[1 if self.path == db.MEMORY else 0]
        older = None if age is None else time.time() - age
        try:
            db.prune(self.conn, rows, older)
        except sqlite3.Error as exc:
            self._log(logging.WARNING, f"activity store: pruning failed: {exc}")

    # -- reads -------------------------------------------------------------------------

    def answer(self, op: str, argument: Any) -> Any:
        assert self.conn is not None
        if op == "page":
            return db.list_page(self.conn, ActivityQuery(**argument))
        if op == "stats":
            return db.stats(self.conn, str(argument))
        if op == "flush":
            return None
        raise ValueError(f"unknown request {op!r}")


class FrameReader:
    """Frames from a file descriptor, with a timeout (for the retries)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    def buffered(self) -> bool:
        """A whole frame is already here."""
        if len(self._buf) < HEADER.size:
            return False
        size: int = HEADER.unpack_from(self._buf)[0]
        return len(self._buf) >= HEADER.size + size

    def next(self, timeout: float | None) -> Message | None:
        """The next message; None when `timeout` passed first.  EOFError at the end."""
        while not self.buffered():
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                raise EOFError
            self._buf += chunk
        (size,) = HEADER.unpack_from(self._buf)
        payload = bytes(self._buf[HEADER.size:HEADER.size + size])
        del self._buf[:HEADER.size + size]
        return message_of(payload)


def serve(fd_in: int, fd_out: int) -> None:
    """Answer the proxy until it closes the pipe or says close."""

    def send(message: Message) -> None:
        data = memoryview(frame(message))
        while data:
            data = data[os.write(fd_out, data):]

    writer = Writer(send)
    reader = FrameReader(fd_in)
    rows: list[db.Row] = []
    try:
        while True:
            message = reader.next(RETRY_DELAY if writer.retry else None)
            if message is None:  # time to try the refused rows again
                writer.write([])
                writer.status()
                continue
            kind = message[0]
            if kind == "entries":
                rows.extend(writer.rows(message[1]))
                writer.retention(*message[2:6])
                if reader.buffered():  # more waiting: one transaction for all of them
                    continue
                writer.write(rows)
                rows = []
                writer.status()
            elif kind == "ask":
                writer.write(rows)  # a read sees every row sent before it
                rows = []
                writer.status()  # before the answer: the asker then sees it up to date
                _, ask_id, op, argument = message
                try:
                    send(("answer", ask_id, True, writer.answer(op, argument)))
                except Exception as exc:  # reported to the asker; the writer goes on
                    send(("answer", ask_id, False, f"{type(exc).__name__}: {exc}"))
            elif kind == "open":
                _, path, busy_ms, *keep = message
                writer.retention(*keep)
                last = writer.open(path, busy_ms)
                writer.status()
                send(("opened", last))
            elif kind == "close":
                break
    except EOFError:
        pass
    if writer.conn is not None:
        writer.write(rows)
        writer.close()
    with contextlib.suppress(OSError):  # the proxy may be gone already
        writer.status()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.stdin.fileno(), sys.stdout.fileno())


if __name__ == "__main__":
    main()
