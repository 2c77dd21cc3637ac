"""Request/response captures (reference 5.15): a FIFO cache bounded in compressed bytes,
sensitive headers redacted, per-route field masks, and bounded memory while a response
streams by."""

from __future__ import annotations

import base64
import os
from typing import Any

from multidict import CIMultiDict

from runtime.web.activity import ActivityLog, ResponseMeter
from runtime.web.captures import (
    MB,
    REDACTED,
    BodyCollector,
    CaptureStore,
    Draft,
    flat_headers,
    pack,
    unpack,
)

JSON = {"Content-Type": "application/json"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def exchange(
    store: CaptureStore, path: str, req_body: bytes | None, *chunks: bytes, status: int = 200,
    req_headers: Any = None, resp_headers: Any = None,
) -> tuple[Draft, ResponseMeter]:
    meter = ResponseMeter()
    draft = Draft(store, path, req_headers or CIMultiDict(JSON), lambda: req_body, meter)
    meter.start(status, resp_headers or JSON)
    for chunk in chunks:
        meter.feed(chunk)
    meter.finish()
    return draft, meter


def test_a_capture_round_trips_with_base64_bodies() -> None:
    store = CaptureStore(lambda: 1)
    draft, _ = exchange(store, "/v1/chat/completions", b'{"model":"a"}', b'{"ok":', b"true}")
    assert draft.store(7)
    assert unpack(store.get(7) or b"") == {
        "id": 7,
        "req_path": "/v1/chat/completions",
        "req_headers": {"Content-Type": "application/json"},
        "req_body": b64(b'{"model":"a"}'),
        "resp_headers": {"Content-Type": "application/json"},
        "resp_body": b64(b'{"ok":true}'),
    }


def test_stored_captures_are_compressed() -> None:
    body = b'{"content":"' + b"hello " * 20000 + b'"}'
    blob = pack(1, "/v1/completions", {}, body, {}, body)
    assert len(blob) < len(body) // 10
    assert base64.b64decode(unpack(blob)["resp_body"]) == body


def test_sensitive_headers_are_redacted_in_both_directions() -> None:
    headers = CIMultiDict([
        ("Authorization", "Bearer sk-1"), ("proxy-authorization", "x"), ("Cookie", "a=b"),
        ("X-Api-Key", "k"), ("X-Request-Id", "r1"), ("X-Request-Id", "r2"),
    ])
    assert flat_headers(headers) == {
        "Authorization": REDACTED, "proxy-authorization": REDACTED, "Cookie": REDACTED,
        "X-Api-Key": REDACTED, "X-Request-Id": "r1",
    }
    store = CaptureStore(lambda: 1)
    resp = CIMultiDict([("Content-Type", "application/json"), ("Set-Cookie", "s=1")])
    draft, _ = exchange(store, "/v1/chat/completions", b"{}", b"{}", req_headers=headers,
                        resp_headers=resp)
    assert draft.store(0)
    doc = unpack(store.get(0) or b"")
    assert doc["req_headers"]["Authorization"] == REDACTED
    assert doc["resp_headers"] == {"Content-Type": "application/json", "Set-Cookie": REDACTED}


def test_audio_and_image_routes_skip_their_large_bodies() -> None:
    store = CaptureStore(lambda: 1)
    speech, _ = exchange(store, "/v1/audio/speech", b'{"input":"hi"}', b"RIFF....")
    assert speech.store(1)
    doc = unpack(store.get(1) or b"")
    assert (doc["req_body"], doc["resp_body"]) == (b64(b'{"input":"hi"}'), None)
    assert doc["resp_headers"] == {"Content-Type": "application/json"}

    edits, meter = exchange(store, "/v1/images/edits", b"--multipart--", b'{"data":[]}')
    assert meter.sink is None  # no body collected at all
    assert edits.store(2)
    doc = unpack(store.get(2) or b"")
    assert (doc["req_body"], doc["resp_body"]) == (None, None)
    assert doc["req_headers"] is not None and doc["resp_headers"] is not None

    voices, _ = exchange(store, "/v1/audio/transcriptions", b"--upload--", b'{"text":"hi"}')
    assert voices.store(3)
    doc = unpack(store.get(3) or b"")
    assert (doc["req_body"], doc["resp_body"]) == (None, b64(b'{"text":"hi"}'))


def test_an_error_answer_keeps_only_the_request_side() -> None:
    store = CaptureStore(lambda: 1)
    draft, _ = exchange(store, "/v1/chat/completions", b'{"model":"x"}', b'{"error":"no"}',
                        status=404)
    assert draft.store(4)
    doc = unpack(store.get(4) or b"")
    assert doc["req_body"] == b64(b'{"model":"x"}')
    assert (doc["resp_headers"], doc["resp_body"]) == (None, None)


def test_the_cache_evicts_oldest_first_within_its_byte_bound() -> None:
    store = CaptureStore(lambda: 1)
    blob = os.urandom(400 * 1024)  # incompressible, as stored
    for i in range(3):
        assert store.add(i, blob)
    assert 0 not in store and 1 in store and 2 in store
    assert store.size <= MB


def test_an_item_larger_than_the_whole_cache_is_skipped() -> None:
    store = CaptureStore(lambda: 1)
    assert store.add(0, b"small")
    assert not store.add(1, os.urandom(MB + 1))
    assert 0 in store and 1 not in store


def test_a_smaller_capture_buffer_after_a_reload_evicts_and_zero_empties() -> None:
    size = [2]
    store = CaptureStore(lambda: size[0])
    for i in range(4):
        store.add(i, os.urandom(400 * 1024))
    assert len(store) == 4
    size[0] = 1
    assert store.get(0) is None and store.get(3) is not None
    assert store.size <= MB
    size[0] = 0
    assert store.get(3) is None and len(store) == 0


def test_a_response_larger_than_the_cache_is_never_held_nor_captured() -> None:
    collector = BodyCollector(10)
    collector(b"12345")
    collector(b"678901")
    collector(b"more")
    assert collector.overflow and collector.chunks == [] and collector.body() is None

    store = CaptureStore(lambda: 1)
    chunk = b"x" * (256 * 1024)
    draft, meter = exchange(store, "/v1/chat/completions", b"{}", *[chunk] * 5)
    assert isinstance(meter.sink, BodyCollector) and meter.sink.chunks == []
    assert not draft.store(9)
    assert 9 not in store


def test_a_streamed_response_is_captured_whole() -> None:
    store = CaptureStore(lambda: 1)
    frames = [b'data: {"n":%d}\n\n' % i for i in range(50)] + [b"data: [DONE]\n\n"]
    draft, _ = exchange(store, "/v1/chat/completions", b"{}", *frames,
                        resp_headers={"Content-Type": "text/event-stream"})
    assert draft.store(5)
    assert base64.b64decode(unpack(store.get(5) or b"")["resp_body"]) == b"".join(frames)


def test_the_activity_entry_says_whether_its_capture_was_stored() -> None:
    log = ActivityLog(lambda: 10)
    store = CaptureStore(lambda: 1)
    draft, meter = exchange(store, "/v1/chat/completions", b"{}", b"{}")
    log.record(started=0.0, duration_ms=1, model="a", req_path="/v1/chat/completions",
               meter=meter, capture=draft.store)
    log.record(started=0.0, duration_ms=1, model="a", req_path="/v1/chat/completions",
               meter=exchange(store, "/v1/chat/completions", b"{}", b"{}")[1],
               capture=lambda _id: False)
    log.record(started=0.0, duration_ms=1, model="b", req_path="/v1/chat/completions",
               meter=exchange(store, "/v1/chat/completions", b"{}", b"{}", status=500)[1])
    first, second, third = log.entries()
    assert (first["has_capture"], second["has_capture"], third["has_capture"]) == (
        True, False, False)
    assert 0 in store
    assert log.counts == {("a", 200): 2, ("b", 500): 1}
