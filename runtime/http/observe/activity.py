"""The in-memory activity log behind `GET /api/metrics` and the `metrics` event.

Why a tee and not a buffer: token counts live in the response (a JSON `usage`
object, llama-server `timings`, vLLM `metrics`, or the last SSE `data:` lines of a
stream; parsed by token_parse.py), but
the response must reach the client as it is produced.  `ResponseMeter` is fed
every chunk as it passes through the proxy and parses what it can on the side:
for SSE it keeps only the current incomplete line, for JSON at most
`MAX_BUFFER` bytes (a bigger body is not parsed: its tokens stay unknown).  It
never delays or changes a byte.  Compressed responses (`Content-Encoding`
other than identity) are not parsed either.

`ActivityLog` is the ring of finished entries (`metricsMaxInMemory`, read at
each append so a reload resizes it) with a listener for the live event, and
counts of requests per (model, status) for `/metrics`.  Captures (captures.py)
hook in through `ResponseMeter.capture_limit` (the meter keeps the
body it already collects, up to that size) and `record(capture=...)` (files the
capture under the entry's id: `has_capture`).  Every entry is also handed to `sink`,
the persistent store (activity_store.py), which renders and writes it off the loop.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from http import HTTPStatus
from typing import Any

from llama_swap.runtime.http.observe import activity_db as db
from llama_swap.runtime.http.observe.token_parse import (
    TOKEN_FIELDS,
    has_markers,
    merge_document,
    with_rates,
)

MAX_BUFFER = 1024 * 1024  # bytes of a JSON body (or of one SSE line) kept for parsing
ERROR_MSG_LIMIT = 500


def error_message(body: bytes, status: int) -> str:
    """`error.message` | `error` | `message` | `detail` of a JSON error body, else `<code> <text>`."""
    msg: Any = None
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            msg = err["message"]
        elif isinstance(err, str):
            msg = err
        elif isinstance(doc.get("message"), str):
            msg = doc["message"]
        elif isinstance(doc.get("detail"), str):
            msg = doc["detail"]
    if not msg:
        try:
            text = HTTPStatus(status).phrase
        except ValueError:
            text = ""
        msg = f"{status} {text}".strip()
    return str(msg)[:ERROR_MSG_LIMIT]


LAZY_LIMIT = 4096  # JSON bodies up to this size are kept and parsed only when read


# At most this many (model, status) pairs are counted apart for /metrics; requests for
# further model names (a client can send any name) are counted under OTHER_SERIES.
MAX_COUNTED_SERIES = 1000
OTHER_SERIES = "(other)"


class ResponseMeter:
    """Watches one response go by and extracts token figures, within bounded memory.

    Cheap on the hot path: a JSON body is only collected (the chunks, not copied) and
    parsed when `tokens`/`timing_ms` are first read; SSE `data:` lines are parsed only
    when they name `usage` or `timings`.  With `capture_limit` set (by a capture
    draft, before `start`) the body as relayed is kept whole while it stays within
    that many bytes -- the same chunk list serves both -- and `take_captured()` hands
    it over once finished."""

    __slots__ = (
        "status", "content_type", "headers", "capture_limit", "_sse", "_parse", "_buf", "_limit",
        "_chunks", "_size", "_overflow", "_body", "_captured", "_unparsed", "_tokens",
        "_timing_ms", "first_byte",
    )

    def __init__(self) -> None:
        self.status: int | None = None
        self.content_type = ""
        self.headers: Any = None  # the response's header list, as received (not copied)
        self.capture_limit = 0  # bytes of body kept for a capture (0: none)
        self._sse = False
        self._parse = True
        self._buf = bytearray()
        self._limit = 0  # bytes of body kept in `_chunks`: 0 while nothing is kept
        self._chunks: list[bytes] = []
        self._size = 0  # body bytes seen
        self._overflow = False  # an SSE line was given up
        self._body = b""  # the JSON body kept for parsing (and error messages)
        self._captured: bytes | None = None
        self._unparsed = False  # `_body` still to be parsed for tokens
        self._tokens: dict[str, Any] = {}
        self._timing_ms: float | None = None
        self.first_byte = 0.0  # time.monotonic() of the first body byte (0: none yet)

    @property
    def tokens(self) -> dict[str, Any]:
        if self._unparsed:
            self._parse_body()
        return with_rates(self._tokens)

    @property
    def timing_ms(self) -> float | None:
        if self._unparsed:
            self._parse_body()
        return self._timing_ms

    def unparsed_body(self) -> bytes | None:
        """The JSON body kept for its token figures while they are still to be parsed."""
        return self._body if self._unparsed else None

    def figures(self) -> dict[str, Any]:
        """The token figures found so far, merged, before `with_rates` (see token_parse)."""
        return dict(self._tokens)

    def timing_known(self) -> float | None:
        """The processing time found so far, without parsing a kept body."""
        return self._timing_ms

    @property
    def body_size(self) -> int:
        """Bytes of the (non-SSE) body this meter keeps for parsing."""
        return len(self._body)

    @property
    def held(self) -> int:
        """Body bytes held right now while the response goes by (0 once given up)."""
        return self._size if self._limit else 0

    def start(self, status: int, headers: Any) -> None:
        """The response's status and headers (before any body chunk)."""
        self.status = status
        self.headers = headers
        self.content_type = headers.get("Content-Type", "") or ""
        self._sse = "text/event-stream" in self.content_type
        encoding = headers.get("Content-Encoding", "")
        self._parse = not encoding or encoding.strip().lower() == "identity"
        if self._size == 0 or self._limit:  # else chunks went by unkept: keep none
            json_limit = MAX_BUFFER if self._parse and not self._sse else 0
            self._limit = max(json_limit, self.capture_limit)

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._size:
            self.first_byte = time.monotonic()
        self._size += len(chunk)
        if self._limit:
            if self._size > self._limit:  # too big to keep: give it all up
                self._limit = 0
                self._chunks = []
            else:
                self._chunks.append(chunk)
        if not self._sse or not self._parse:
            return
        self._buf += chunk
        if b"\n" not in chunk:
            if len(self._buf) > MAX_BUFFER:  # an absurd line: give it up
                self._buf = bytearray()
                self._overflow = True
            return
        *lines, rest = self._buf.split(b"\n")
        for line in lines:
            self._line(bytes(line))
        if len(rest) > MAX_BUFFER:  # an absurd line: give it up
            rest = bytearray()
            self._overflow = True
        self._buf = bytearray(rest)

    def _line(self, line: bytes) -> None:
        if self._overflow:  # the tail of a line that was given up
            self._overflow = False
            return
        if not line.startswith(b"data:") or not has_markers(line):
            return
        payload = line[5:].strip()
        if not payload.startswith((b"{", b"[")):
            return
        self._merge(payload)

    def _merge(self, payload: bytes) -> None:
        ms = merge_document(self._tokens, payload)
        if ms is not None:
            self._timing_ms = ms

    def _parse_body(self) -> None:
        # Flag cleared after the merge: the in-memory log and the store may both read the
        # figures; the second read finds them merged.
        if has_markers(self._body):
            self._merge(self._body)
        self._unparsed = False

    def finish(self) -> None:
        """End of the body: keep what was collected (parsed when first read)."""
        if self._sse and self._parse:
            if self._buf:
                self._line(bytes(self._buf))
            self._buf = bytearray()
        if not self._limit:  # nothing kept (or given up)
            return
        chunks, self._chunks = self._chunks, []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._parse and not self._sse and len(body) <= MAX_BUFFER:
            self._body = body
            self._unparsed = bool(body)
        if len(body) <= self.capture_limit:
            self._captured = body

    def take_captured(self) -> bytes | None:
        """The whole body as relayed if it was kept for a capture (once), else None."""
        body, self._captured = self._captured, None
        return body

    def error_msg(self) -> str | None:
        if self.status is None or self.status == 200:
            return None
        return error_message(self._body, self.status)


class _Pending:
    """An entry recorded but not yet rendered (rendered when somebody reads it)."""

    __slots__ = (
        "id", "started", "duration_ms", "model", "req_path", "meter", "has_capture", "metadata",
    )

    def __init__(
        self, id: int, started: datetime | float, duration_ms: float, model: str,
        req_path: str, meter: ResponseMeter, metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.id = id
        self.started = started
        self.duration_ms = duration_ms
        self.model = model
        self.req_path = req_path
        self.meter = meter
        self.has_capture = False
        self.metadata = metadata

    def render(self) -> dict[str, Any]:
        meter = self.meter
        started = self.started
        if not isinstance(started, datetime):
            started = datetime.fromtimestamp(started).astimezone()
        found = meter.tokens
        timing = meter.timing_ms
        entry: dict[str, Any] = {
            "id": self.id,
            "timestamp": started.isoformat(),
            "model": self.model,
            "req_path": self.req_path,
            "resp_content_type": meter.content_type,
            "resp_status_code": meter.status if meter.status is not None else 0,
            "tokens": {k: found.get(k, -1) for k in TOKEN_FIELDS},
            "duration_ms": int(timing if timing is not None else self.duration_ms),
            "has_capture": self.has_capture,
        }
        if (msg := meter.error_msg()) is not None:
            entry["error_msg"] = msg
        if self.metadata:
            entry["metadata"] = dict(self.metadata)
        return entry


    def raw(self) -> db.RawEntry:
        """The entry as the store's writer takes it: the answer's JSON body still unparsed
        (the writer parses it for the token figures, off the event loop), or the figures
        a stream's lines already gave."""
        meter = self.meter
        started = self.started
        ts = started.timestamp() if isinstance(started, datetime) else started
        body = meter.unparsed_body()
        return (
            self.id, ts, self.model, self.req_path, meter.content_type,
            meter.status if meter.status is not None else 0, self.duration_ms,
            body, {} if body is not None else meter.figures(), meter.timing_known(),
            meter.error_msg() or "", dict(self.metadata) if self.metadata else None,
        )


class ActivityLog:
    """Recent request entries, oldest first; `listener` sees each new entry.

    Entries are rendered lazily: `record` keeps the meter (holding at most
    `LAZY_LIMIT` unparsed bytes) and the dict is built when `entries()` is read or
    a live listener wants it (`live()`: is anybody listening right now?)."""

    def __init__(
        self,
        capacity: Callable[[], int],
        listener: Callable[[dict[str, Any]], None] | None = None,
        live: Callable[[], bool] | None = None,
    ) -> None:
        self._capacity = capacity
        self._entries: deque[dict[str, Any] | _Pending] = deque(maxlen=max(0, capacity()))
        self._next_id = 0
        self.counts: dict[tuple[str, int], int] = {}  # (model, status) -> requests recorded
        self.listener = listener
        self.live = live
        self.sink: Callable[[dict[str, Any] | _Pending], None] | None = None  # the store

    def continue_after(self, last_id: int) -> None:
        """Hand out ids after `last_id` (the store's highest, so ids survive restarts)."""
        self._next_id = max(self._next_id, last_id + 1)

    def entries(self) -> list[dict[str, Any]]:
        if any(isinstance(e, _Pending) for e in self._entries):
            rendered = [e.render() if isinstance(e, _Pending) else e for e in self._entries]
            self._entries = deque(rendered, maxlen=self._entries.maxlen)
            return list(rendered)
        return list(self._entries)  # type: ignore[arg-type]

    def record(
        self,
        *,
        started: datetime | float,
        duration_ms: float,
        model: str,
        req_path: str,
        meter: ResponseMeter,
        capture: Callable[[int], bool] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Append an entry; `started` is a datetime or a `time.time()` value.
        `capture(id)` stores the exchange's capture and says whether it did;
        `metadata` (the scheduler's notes, e.g. `fifo_priority`) is shown as is."""
        pending = _Pending(self._next_id, started, duration_ms, model, req_path, meter, metadata)
        item: dict[str, Any] | _Pending = pending
        self._next_id += 1
        key = (model, meter.status or 0)
        counts = self.counts
        if key not in counts and len(counts) >= MAX_COUNTED_SERIES:
            key = (OTHER_SERIES, key[1])  # clients name models; their names must not grow this
        counts[key] = counts.get(key, 0) + 1
        if capture is not None:
            pending.has_capture = capture(pending.id)
        size = self._capacity()
        if size < 0:
            size = 0
        if self._entries.maxlen != size:
            self._entries = deque(self._entries, maxlen=size)
        listener = self.listener
        if listener is not None and (self.live is None or self.live()):
            item = item.render()  # type: ignore[union-attr]
            self._entries.append(item)
            listener(item)
        else:
            if meter.body_size > LAZY_LIMIT:  # bounded memory: render (and drop) big bodies now
                item = item.render()  # type: ignore[union-attr]
            self._entries.append(item)
        if self.sink is not None:
            self.sink(item)


class TeeContent:
    """Stands in for an aiohttp response's `content`: every chunk read is shown to a meter."""

    def __init__(self, inner: Any, meter: ResponseMeter) -> None:
        self._inner = inner
        self._meter = meter

    def __bool__(self) -> bool:
        return True

    async def readany(self) -> bytes:
        chunk: bytes = await self._inner.readany()
        self._meter.feed(chunk)
        return chunk

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await self._inner.read(n)
        self._meter.feed(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def tee_response(upstream: Any, meter: ResponseMeter) -> None:
    """Make `meter` see `upstream` (an aiohttp.ClientResponse) as the proxy relays it."""
    meter.start(upstream.status, upstream.headers)
    upstream.content = TeeContent(upstream.content, meter)
