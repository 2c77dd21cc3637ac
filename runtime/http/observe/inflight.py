"""The requests in flight: listed live on `/api/events`, and each one cancellable.

Why a registry and not a counter: a dashboard shows who is waiting on what (model, path,
client address, user agent, session, bytes received so far) and can cancel one request
(`POST /api/inflight/{id}/cancel`). Cancelling aborts the request wherever it is -- waiting
for admission or a swap (the scheduler forgets it at once) or being relayed (the upstream
connection is closed, so the model server sees the disconnect) -- because each front door
registers the request with a `cancel` callback that cancels the task serving it.

Events (type `inflight` on the hub):
- `{"operation":"snapshot","requests":[...]}` to a new subscriber (sorted by start time,
  then id; `requests` left out when there are none);
- `{"operation":"upsert","request":{...}}` when a request arrives, and then at most every
  `UPDATE_INTERVAL` seconds while its answer's headers or byte count changed;
- `{"operation":"remove","id":"7"}` when it is finished.

Progress is read, not pushed: each entry holds a `Progress` (what the front door knows of
the answer so far) that the ticker reads only while somebody watches, so relaying a chunk
costs nothing here. Publishing never blocks (the hub drops for a slow subscriber).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

UPDATE_INTERVAL = 0.25  # seconds between two upserts of one request's progress
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
REDACTED = "[REDACTED]"
DEFAULT_SESSION_HEADERS = ("X-Session-ID", "X-Litellm-Session-Id")


class Publisher(Protocol):
    """Where events go (the /api/events hub)."""

    def publish(self, kind: str, data: Any) -> None: ...

    def has_subscribers(self) -> bool: ...


class Progress(Protocol):
    """What a front door knows of a request's answer so far."""

    def response_headers(self) -> Iterable[tuple[str, str]] | None:
        """The answer's headers once it has started, else None."""

    def response_bytes(self) -> int:
        """Body bytes sent to the client so far."""


class _NoAnswerYet:
    def response_headers(self) -> None:
        return None

    def response_bytes(self) -> int:
        return 0


NO_ANSWER_YET: Progress = _NoAnswerYet()


def canonical_name(name: str) -> str:
    """A header name as Go spells it (`x-session-id` -> `X-Session-Id`), so entries look
    the same whichever client sent them."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_map(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The first value of each header under its canonical name, secrets redacted."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = canonical_name(name)
        if key not in out:
            out[key] = REDACTED if key.lower() in SENSITIVE_HEADERS else value
    return out


def client_ip(headers: Any, peer: str) -> str:
    """The first `X-Forwarded-For` address, else `X-Real-IP`, else the socket's peer."""
    forwarded = headers.get("X-Forwarded-For") or ""
    if forwarded:
        return str(forwarded).split(",", 1)[0].strip()
    real = headers.get("X-Real-IP") or ""
    if real:
        return str(real).strip()
    return peer


def normalize_session_headers(names: Iterable[str]) -> tuple[str, ...]:
    """Trimmed, blanks dropped, case-insensitive duplicates dropped (the first spelling kept)."""
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        name = name.strip()
        if name and name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    return tuple(out)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class InflightEntry:
    """One request in flight; `progress` is set by the front door as the answer goes.
    The request's headers are kept as given and rendered only when somebody looks."""

    __slots__ = (
        "id", "started", "model", "req_path", "method", "progress", "cancel", "cancelled",
        "_headers", "_peer", "_rendered", "_emitted",
    )

    def __init__(
        self, id: str, started: float, model: str, req_path: str, method: str,
        headers: Any, peer: str, cancel: Callable[[], object],
    ) -> None:
        self.id = id
        self.started = started
        self.model = model
        self.req_path = req_path
        self.method = method
        self.progress = NO_ANSWER_YET
        self.cancel = cancel
        self.cancelled = False  # set by `InflightTracker.cancel`: the door answers accordingly
        self._headers = headers
        self._peer = peer
        self._rendered: tuple[dict[str, str], str] | None = None
        self._emitted: tuple[bool, int] = (False, 0)

    def _state(self) -> tuple[bool, int]:
        progress = self.progress
        return progress.response_headers() is not None, progress.response_bytes()

    def render(self, now: float) -> dict[str, Any]:
        if self._rendered is None:
            self._rendered = (header_map(self._headers.items()), client_ip(self._headers, self._peer))
        req_headers, remote_ip = self._rendered
        progress = self.progress
        headers = progress.response_headers()
        return {
            "id": self.id,
            "timestamp": _iso(self.started),
            "model": self.model,
            "req_path": self.req_path,
            "method": self.method,
            "req_headers": dict(req_headers),
            "remote_ip": remote_ip,
            "resp_headers": header_map(headers) if headers is not None else {},
            "resp_bytes": progress.response_bytes(),
            "elapsed_ms": max(0, int((now - self.started) * 1000)),
        }


class InflightTracker:
    """Every request in flight on either front door, by id (a decimal string from 1)."""

    def __init__(self, hub: Publisher | None = None, clock: Callable[[], float] = time.time):
        self.hub = hub
        self._clock = clock
        self._next = 0
        self._entries: dict[str, InflightEntry] = {}
        self._ticker: asyncio.TimerHandle | None = None

    @property
    def total(self) -> int:
        return len(self._entries)

    def _watched(self) -> bool:
        return self.hub is not None and self.hub.has_subscribers()

    def add(
        self, *, model: str, req_path: str, method: str, headers: Any, peer: str,
        cancel: Callable[[], object],
    ) -> InflightEntry:
        """Register a request (`headers`: a case-insensitive mapping with `items()`);
        `remove` it when it is finished, whatever happened."""
        self._next += 1
        entry = InflightEntry(
            str(self._next), self._clock(), model, req_path, method, headers, peer, cancel
        )
        self._entries[entry.id] = entry
        if self._watched():
            self._publish_upsert(entry)
            self._schedule()
        return entry

    def remove(self, entry: InflightEntry) -> None:
        if self._entries.pop(entry.id, None) is not None and self._watched():
            assert self.hub is not None
            self.hub.publish("inflight", {"operation": "remove", "id": entry.id})

    def cancel(self, id: str) -> bool:
        """Cancel request `id`; False when no such request is in flight."""
        entry = self._entries.get(id)
        if entry is None:
            return False
        if not entry.cancelled:
            entry.cancelled = True
            entry.cancel()
        return True

    def snapshot(self) -> dict[str, Any]:
        """The `snapshot` event (a new subscriber's first view: its progress updates follow)."""
        if self._entries and self._watched():
            self._schedule()
        now = self._clock()
        entries = sorted(self._entries.values(), key=lambda e: (e.started, int(e.id)))
        doc: dict[str, Any] = {"operation": "snapshot"}
        if entries:
            doc["requests"] = [e.render(now) for e in entries]
        return doc

    def _publish_upsert(self, entry: InflightEntry) -> None:
        assert self.hub is not None
        entry._emitted = entry._state()
        self.hub.publish("inflight", {"operation": "upsert", "request": entry.render(self._clock())})

    def _schedule(self) -> None:
        if self._ticker is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not serving (a plain call): nothing to keep up to date
                return
            self._ticker = loop.call_later(UPDATE_INTERVAL, self._tick)

    def close(self) -> None:
        """Stop the ticker (the server is shutting down)."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _tick(self) -> None:
        """Upsert the requests whose answer moved since their last event; keep ticking
        while there are requests and somebody watches."""
        self._ticker = None
        if not self._entries or not self._watched():
            return
        for entry in tuple(self._entries.values()):
            if entry._state() != entry._emitted:
                self._publish_upsert(entry)
        self._schedule()
