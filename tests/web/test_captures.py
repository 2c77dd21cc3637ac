"""Request/response captures: a FIFO cache bounded in raw bytes holding
references to the exchange's bytes, sensitive headers redacted when read, per-route field
masks, and bounded memory while a response streams by."""

from __future__ import annotations

import base64
import os
from typing import Any

from multidict import CIMultiDict

from llama_swap.runtime.http.fast.headers import LazyHeaders
from llama_swap.runtime.http.observe.activity import ActivityLog, ResponseMeter
from llama_swap.runtime.http.observe.captures import (
    ITEM_OVERHEAD,
    MB,
    REDACTED,
    Capture,
    CaptureStore,
    Draft,
    flat_headers,
)

JSON = {"Content-Type": "application/json"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read(store: CaptureStore, id: int) -> dict[str, Any]:
    capture = store.get(id)
    assert capture is not None
    return capture.render()


def blob_capture(id: int, size: int) -> Capture:
    """A capture whose request body makes it `size` bytes in the cache's count."""
    return Capture(id, "/v1/completions", None, os.urandom(size - ITEM_OVERHEAD), None, None)


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
    assert read(store, 7) == {
        "id": 7,
        "req_path": "/v1/chat/completions",
        "req_headers": {"Content-Type": "application/json"},
        "req_body": b64(b'{"model":"a"}'),
        "resp_headers": {"Content-Type": "application/json"},
        "resp_body": b64(b'{"ok":true}'),
    }


def test_a_capture_holds_the_exchange_bytes_without_copying_them() -> None:
    store = CaptureStore(lambda: 1)
    req_body = b'{"content":"' + b"hello " * 2000 + b'"}'
    resp_body = b'{"answer":"' + b"x" * 5000 + b'"}'
    headers = CIMultiDict([("Authorization", "Bearer sk-1"), *JSON.items()])
    draft, _ = exchange(store, "/v1/completions", req_body, resp_body, req_headers=headers)
    assert draft.store(1)
    capture = store.get(1)
    assert capture is not None
    assert capture.req_body is req_body and capture.resp_body is resp_body
    assert capture.req_headers is headers  # redacted when read, not when stored
    header_bytes = sum(len(k) + len(v) for h in (headers, JSON) for k, v in h.items())
    assert capture.size == ITEM_OVERHEAD + len(req_body) + len(resp_body) + header_bytes == store.size
    assert base64.b64decode(capture.render()["resp_body"]) == resp_body


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
    doc = read(store, 0)
    assert doc["req_headers"]["Authorization"] == REDACTED
    assert doc["resp_headers"] == {"Content-Type": "application/json", "Set-Cookie": REDACTED}


def test_audio_and_image_routes_skip_their_large_bodies() -> None:
    store = CaptureStore(lambda: 1)
    speech, _ = exchange(store, "/v1/audio/speech", b'{"input":"hi"}', b"RIFF....")
    assert speech.store(1)
    doc = read(store, 1)
    assert (doc["req_body"], doc["resp_body"]) == (b64(b'{"input":"hi"}'), None)
    assert doc["resp_headers"] == {"Content-Type": "application/json"}

    edits, meter = exchange(store, "/v1/images/edits", b"--multipart--", b'{"data":[]}')
    assert meter.capture_limit == 0  # no body kept for the capture
    assert edits.store(2)
    doc = read(store, 2)
    assert (doc["req_body"], doc["resp_body"]) == (None, None)
    assert doc["req_headers"] is not None and doc["resp_headers"] is not None

    voices, _ = exchange(store, "/v1/audio/transcriptions", b"--upload--", b'{"text":"hi"}')
    assert voices.store(3)
    doc = read(store, 3)
    assert (doc["req_body"], doc["resp_body"]) == (None, b64(b'{"text":"hi"}'))


def test_an_error_answer_keeps_only_the_request_side() -> None:
    store = CaptureStore(lambda: 1)
    draft, _ = exchange(store, "/v1/chat/completions", b'{"model":"x"}', b'{"error":"no"}',
                        status=404)
    assert draft.store(4)
    doc = read(store, 4)
    assert doc["req_body"] == b64(b'{"model":"x"}')
    assert (doc["resp_headers"], doc["resp_body"]) == (None, None)


def test_the_cache_evicts_oldest_first_within_its_byte_bound() -> None:
    store = CaptureStore(lambda: 1)
    for i in range(3):
        assert store.add(blob_capture(i, 400 * 1024))
    assert 0 not in store and 1 in store and 2 in store
    assert store.size == 800 * 1024 <= MB


def test_captures_without_bodies_still_count_against_the_bound() -> None:
    store = CaptureStore(lambda: 1)
    for i in range(MB // ITEM_OVERHEAD + 10):
        assert store.add(Capture(i, "/v1/images/edits", {}, None, {}, None))
    assert len(store) == MB // ITEM_OVERHEAD and 0 not in store


def test_an_item_larger_than_the_whole_cache_is_skipped() -> None:
    store = CaptureStore(lambda: 1)
    assert store.add(blob_capture(0, 2 * ITEM_OVERHEAD))
    assert not store.add(blob_capture(1, MB + 1))
    assert 0 in store and 1 not in store


def test_a_smaller_capture_buffer_after_a_reload_evicts_and_zero_empties() -> None:
    size = [2]
    store = CaptureStore(lambda: size[0])
    for i in range(4):
        store.add(blob_capture(i, 400 * 1024))
    assert len(store) == 4
    size[0] = 1
    assert store.get(0) is None and store.get(3) is not None
    assert store.size <= MB
    size[0] = 0
    assert store.get(3) is None and len(store) == 0


def test_a_response_larger_than_the_cache_is_never_held_nor_captured() -> None:
    store = CaptureStore(lambda: 1)
    meter = ResponseMeter()
    draft = Draft(store, "/v1/chat/completions", CIMultiDict(JSON), lambda: b"{}", meter)
    assert meter.capture_limit == MB
    meter.start(200, {"Content-Type": "text/event-stream"})
    frame = b"data: " + b"x" * (256 * 1024) + b"\n\n"
    for _ in range(3):
        meter.feed(frame)
    assert meter.held == 3 * len(frame)
    meter.feed(frame)  # past the cache size: everything kept so far is dropped at once
    assert meter.held == 0
    meter.feed(frame)
    assert meter.held == 0
    meter.finish()
    assert not draft.store(9)
    assert 9 not in store


def test_a_streamed_response_is_captured_whole() -> None:
    store = CaptureStore(lambda: 1)
    frames = [b'data: {"n":%d}\n\n' % i for i in range(50)] + [b"data: [DONE]\n\n"]
    draft, _ = exchange(store, "/v1/chat/completions", b"{}", *frames,
                        resp_headers={"Content-Type": "text/event-stream"})
    assert draft.store(5)
    assert base64.b64decode(read(store, 5)["resp_body"]) == b"".join(frames)


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


async def test_a_tee_body_keeps_what_it_forwards_within_its_limit_only() -> None:
    from llama_swap.runtime.http.request.body import TeeBody

    class Chunks:
        length = None

        def __init__(self, *parts: bytes) -> None:
            self.parts = parts

        async def chunks(self):  # type: ignore[no-untyped-def]
            for part in self.parts:
                yield part

        def close(self) -> None:
            pass

    small = TeeBody(Chunks(b"ab", b"cd"), limit=4)
    assert small.kept() is None  # nothing forwarded yet
    assert [c async for c in small.chunks()] == [b"ab", b"cd"]
    assert small.kept() == b"abcd"
    big = TeeBody(Chunks(b"ab", b"cde"), limit=4)
    assert [c async for c in big.chunks()] == [b"ab", b"cde"]  # forwarded whole all the same
    assert big.kept() is None


def test_header_bytes_count_against_the_cache_so_large_headers_cannot_pile_up() -> None:
    # a client may send up to 1 MiB of headers; a capture keeps them, so they must count
    big = CIMultiDict({"X-Big": "h" * (MB // 2)})
    store = CaptureStore(lambda: 1)
    for id in range(4):
        assert store.add(Capture(id, "/v1/chat/completions", big, b"{}", None, None))
    assert len(store) == 1 and store.size <= MB
    # the fast path's raw header pairs count the same
    raw = LazyHeaders([(b"X-Big", b"h" * (MB // 2))])
    assert Capture(9, "/v1/chat/completions", raw, b"{}", raw, None).size >= MB
