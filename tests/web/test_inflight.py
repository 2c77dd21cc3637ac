"""The in-flight list (runtime/http/observe/inflight.py): entries, events, cancelling."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from multidict import CIMultiDict

from llama_swap.runtime.http.observe.inflight import (
    InflightTracker,
    canonical_name,
    client_ip,
    header_map,
    normalize_session_headers,
)


class Hub:
    """Records what is published; `watching` says whether anybody subscribes."""

    def __init__(self, watching: bool = True) -> None:
        self.watching = watching
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    def publish(self, kind: str, data: Any) -> None:
        assert kind == "inflight"
        self.events.append(data)
        self.arrived.set()

    def has_subscribers(self) -> bool:
        return self.watching


class Clock:
    def __init__(self, now: float = 1_785_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Answer:
    """A Progress a test moves by hand."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] | None = None
        self.bytes = 0

    def response_headers(self) -> Iterable[tuple[str, str]] | None:
        return self.headers

    def response_bytes(self) -> int:
        return self.bytes


def add(tracker: InflightTracker, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "model": "m1", "req_path": "/v1/chat/completions", "method": "POST",
        "headers": CIMultiDict({"User-Agent": "curl/8"}), "peer": "10.0.0.1", "cancel": lambda: None,
    }
    args.update(kw)
    return tracker.add(**args)


def test_an_entry_as_the_dashboard_sees_it() -> None:
    clock = Clock()
    tracker = InflightTracker(Hub(), clock=clock)
    headers = CIMultiDict([("user-agent", "curl/8"), ("authorization", "Bearer sk"),
                           ("X-SESSION-ID", "s1"), ("x-session-id", "s2"), ("Cookie", "c")])
    add(tracker, headers=headers)
    clock.now += 1.5
    (entry,) = tracker.snapshot()["requests"]
    assert entry == {
        "id": "1", "timestamp": "2026-07-25T17:20:00.000Z", "model": "m1",
        "req_path": "/v1/chat/completions", "method": "POST",
        "req_headers": {"User-Agent": "curl/8", "Authorization": "[REDACTED]",
                        "X-Session-Id": "s1", "Cookie": "[REDACTED]"},
        "remote_ip": "10.0.0.1", "resp_headers": {}, "resp_bytes": 0, "elapsed_ms": 1500,
    }


def test_ids_count_from_one_and_the_snapshot_is_sorted_by_start_then_id() -> None:
    clock = Clock()
    tracker = InflightTracker(Hub(), clock=clock)
    first = add(tracker)
    clock.now -= 5  # a clock step back: the later request sorts first by its start time
    add(tracker)
    add(tracker)
    assert [e["id"] for e in tracker.snapshot()["requests"]] == ["2", "3", "1"]
    tracker.remove(first)
    assert tracker.total == 2
    clock.now -= 100
    assert all(e["elapsed_ms"] == 0 for e in tracker.snapshot()["requests"])  # never negative


def test_an_empty_snapshot_has_no_requests_key() -> None:
    assert InflightTracker(Hub()).snapshot() == {"operation": "snapshot"}


def test_events_when_watched_and_none_when_not() -> None:
    hub = Hub()
    tracker = InflightTracker(hub, clock=Clock())
    entry = add(tracker)
    tracker.remove(entry)
    tracker.remove(entry)  # twice: one remove event
    assert [e["operation"] for e in hub.events] == ["upsert", "remove"]
    assert hub.events[0]["request"]["id"] == "1" and hub.events[1] == {"operation": "remove", "id": "1"}
    quiet = Hub(watching=False)
    tracker = InflightTracker(quiet)
    tracker.remove(add(tracker))
    assert quiet.events == []


def test_cancel_calls_the_request_s_cancel_once_and_unknown_ids_are_refused() -> None:
    calls: list[str] = []
    tracker = InflightTracker(Hub())
    entry = add(tracker, cancel=lambda: calls.append("x"))
    assert not entry.cancelled
    assert tracker.cancel("1") and tracker.cancel("1")
    assert calls == ["x"] and entry.cancelled
    assert not tracker.cancel("2") and not tracker.cancel("")
    tracker.remove(entry)
    assert not tracker.cancel("1")


async def test_progress_is_upserted_while_it_moves() -> None:
    hub = Hub()
    tracker = InflightTracker(hub, clock=Clock())
    answer = Answer()
    entry = add(tracker)
    entry.progress = answer
    hub.events.clear()
    hub.arrived.clear()
    answer.headers = [("content-type", "text/event-stream"), ("set-cookie", "k")]
    answer.bytes = 10
    await asyncio.wait_for(hub.arrived.wait(), 5)
    (update,) = hub.events
    assert update["operation"] == "upsert"
    assert update["request"]["resp_headers"] == {"Content-Type": "text/event-stream", "Set-Cookie": "[REDACTED]"}
    assert update["request"]["resp_bytes"] == 10
    hub.arrived.clear()
    answer.bytes = 25
    await asyncio.wait_for(hub.arrived.wait(), 5)
    assert hub.events[-1]["request"]["resp_bytes"] == 25
    tracker.remove(entry)
    tracker.close()


def test_header_helpers() -> None:
    assert canonical_name("x-litellm-session-id") == "X-Litellm-Session-Id"
    assert canonical_name("USER-AGENT") == "User-Agent"
    assert header_map([("a", "1"), ("A", "2"), ("x-api-key", "k")]) == {"A": "1", "X-Api-Key": "[REDACTED]"}
    h = CIMultiDict({"X-Forwarded-For": " 203.0.113.9 , 10.0.0.1", "X-Real-IP": "198.51.100.1"})
    assert client_ip(h, "127.0.0.1") == "203.0.113.9"
    assert client_ip(CIMultiDict({"X-Real-IP": " 198.51.100.1 "}), "127.0.0.1") == "198.51.100.1"
    assert client_ip(CIMultiDict(), "127.0.0.1") == "127.0.0.1"


def test_session_header_names_are_normalized() -> None:
    assert normalize_session_headers([" X-Session-ID ", "", "x-session-id", "X-Other"]) == (
        "X-Session-ID", "X-Other")
    assert normalize_session_headers([]) == ()
