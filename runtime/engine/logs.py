"""Bounded in-memory logs with live subscribers: the proxy's, the upstream's and each model's.

Why a ring and not a file: the runtime must show recent output (`/logs`, start-failure errors)
without unbounded memory, and stream new output to any number of slow readers without ever
letting one of them block the writer.  Invariants:

- `history()` holds at most `capacity` characters (the oldest are dropped, possibly mid-line);
- `write()` never blocks and never raises because of a subscriber: a full subscriber queue
  drops the chunk and counts it in `LogSubscription.dropped`;
- every write is forwarded, as appended, to the optional parent (a model's log feeds the
  runtime's "upstream" log, as the Go original wires its log monitors);
- a write never continues a line another writer left unfinished: if the log ends mid-line
  and the new text comes from a different writer (the buffer's own `write()` callers, or
  one of the child buffers forwarding to it), a newline is inserted first.  A model server
  that dies with "out of memory" and no newline would otherwise have the proxy's
  "exited with code 3" glued to its last words.  The inserted newline is part of what is
  stored, offered to subscribers and forwarded, so every log down to the terminal agrees;
- subscribers receive only what is written after they subscribed (read `history()` first).

`write()` may be called from any thread; subscribers are woken on the event loop they were
created on.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from types import TracebackType

DEFAULT_CAPACITY = 100 * 1024


class LogSubscription:
    """An async iterator of the chunks written to a LogBuffer after `subscribe()`.

    Ends when closed (`close()`, leaving an `async with`, or `LogBuffer.close_subscribers()`).
    """

    def __init__(self, buffer: LogBuffer, maxsize: int, loop: asyncio.AbstractEventLoop | None):
        self._buffer = buffer
        self._maxsize = max(1, maxsize)
        self._loop = loop
        self._chunks: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0

    # -- writer side (called by LogBuffer, possibly from another thread) --------------------
    def _offer(self, data: str) -> None:
        loop = self._loop
        if loop is not None and not _on_loop(loop):
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._offer_here, data)
            return
        self._offer_here(data)

    def _offer_here(self, data: str) -> None:
        if self._closed:
            return
        if len(self._chunks) >= self._maxsize:
            self.dropped += 1
            return
        self._chunks.append(data)
        self._wake()

    def _end(self) -> None:
        loop = self._loop
        if loop is not None and not _on_loop(loop):
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._end_here)
            return
        self._end_here()

    def _end_here(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reader side --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unsubscribe; a pending `__anext__` ends the iteration."""
        self._buffer._unsubscribe(self)
        self._end_here()

    def __aiter__(self) -> LogSubscription:
        return self

    async def __anext__(self) -> str:
        while True:
            if self._chunks:
                return self._chunks.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def __aenter__(self) -> LogSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LogBuffer:
    """Bounded ring of recent output plus live subscribers; optional parent it forwards to."""

    def __init__(self, name: str, capacity: int = DEFAULT_CAPACITY, parent: LogBuffer | None = None):
        self.name = name
        self.capacity = max(1, capacity)
        self.parent = parent
        self._chunks: deque[str] = deque()
        self._size = 0
        self._subscribers: list[LogSubscription] = []
        # Reentrant: `_forward` holds it across the `write()` it makes on the child's behalf.
        self._lock = threading.RLock()
        # Who wrote the unfinished line the log ends with (None: it ends at a line boundary).
        self._unfinished_by: object | None = None
        # While `_forward` stores a child's text: (child, its text as written, must it start
        # a line); None during a direct write.
        self._incoming: tuple[LogBuffer, str, bool] | None = None

    def write(self, data: str) -> None:
        """Append `data`, forward it to the parent and offer it to every subscriber.

        Called directly, `data` is this log's own writer's (a runtime note, a proxy log
        line); it starts on a new line if a child's output left the last line unfinished.
        """
        if not data:
            return
        with self._lock:
            incoming = self._incoming
            if incoming is None:
                writer: object = self
                raw = data
                data, starts_line = self._separated(raw, writer, own_line=False)
            else:
                writer, raw, starts_line = incoming
            self._append(data)
            self._unfinished_by = None if data.endswith("\n") else writer
            subscribers = tuple(self._subscribers)
        for sub in subscribers:
            sub._offer(data)
        if self.parent is not None:
            self.parent._forward(raw, self, starts_line)

    def _forward(self, raw: str, child: LogBuffer, own_line: bool) -> None:
        """Store what `child` appended, through `write()` so subclasses see the final text.

        `raw` comes without any newline the child inserted, and `own_line` says whether it
        must start a line: each log then ends an unfinished line only where it has one
        (a parent already at a line boundary gets no blank line).
        """
        with self._lock:
            text, starts_line = self._separated(raw, child, own_line)
            self._incoming = (child, raw, starts_line)
            try:
                self.write(text)
            finally:
                self._incoming = None

    def _separated(self, raw: str, writer: object, own_line: bool) -> tuple[str, bool]:
        """`raw` preceded by a newline if it must not continue the log's unfinished line
        (another writer's, or any when `own_line`); and whether it must start a line."""
        unfinished_by = self._unfinished_by
        if unfinished_by is not None and (own_line or unfinished_by is not writer):
            return "\n" + raw, True
        return raw, own_line

    def _append(self, data: str) -> None:
        if len(data) >= self.capacity:
            self._chunks.clear()
            self._chunks.append(data[-self.capacity :])
            self._size = self.capacity
            return
        self._chunks.append(data)
        self._size += len(data)
        while self._size > self.capacity:
            excess = self._size - self.capacity
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess

    def history(self) -> str:
        """Everything the ring holds now (at most `capacity` characters)."""
        with self._lock:
            text = "".join(self._chunks)
            # keep the joined form: later reads are cheap and the ring stays one chunk
            self._chunks.clear()
            if text:
                self._chunks.append(text)
            return text

    def tail_lines(self, n: int) -> list[str]:
        """The last `n` non-empty lines, oldest first, without line endings."""
        if n <= 0:
            return []
        lines = [line for line in self.history().splitlines() if line.strip()]
        return lines[-n:]

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._size = 0
            self._unfinished_by = None

    def subscribe(self, maxsize: int = 1024) -> LogSubscription:
        """Live chunks written from now on; at most `maxsize` are queued, the rest dropped."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        sub = LogSubscription(self, maxsize, loop)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def close_subscribers(self) -> None:
        """End every live subscription (the server is shutting down)."""
        with self._lock:
            subscribers = tuple(self._subscribers)
            self._subscribers.clear()
        for sub in subscribers:
            sub._end()

    def _unsubscribe(self, sub: LogSubscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
