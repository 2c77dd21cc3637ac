"""The activity log: token figures read from responses as they pass by,
with bounded memory, and a ring of entries sized by metricsMaxInMemory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from llama_swap.runtime.core.error_body import route_error_answer
from llama_swap.runtime.core.errors import unknown_model
from llama_swap.runtime.http.observe.activity import (
    MAX_BUFFER,
    MAX_COUNTED_SERIES,
    OTHER_SERIES,
    ActivityLog,
    ResponseMeter,
    error_message,
)
from llama_swap.runtime.http.observe.token_parse import tokens_from

JSON = {"Content-Type": "application/json"}
SSE = {"Content-Type": "text/event-stream"}


def metered(headers: dict[str, str], *chunks: bytes, status: int = 200) -> ResponseMeter:
    meter = ResponseMeter()
    meter.start(status, headers)
    for chunk in chunks:
        meter.feed(chunk)
    meter.finish()
    return meter


def sse(*docs: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs) + b"data: [DONE]\n\n"


def test_openai_usage_in_a_json_body() -> None:
    body = json.dumps({"usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                 "prompt_tokens_details": {"cached_tokens": 2}}}).encode()
    meter = metered(JSON, body[:10], body[10:])
    assert meter.tokens == {"input_tokens": 7, "output_tokens": 3, "cache_tokens": 2}


def test_llama_server_timings_override_usage_and_give_the_duration() -> None:
    doc = {"usage": {"prompt_tokens": 1, "completion_tokens": 1},
           "timings": {"prompt_n": 12, "predicted_n": 34, "prompt_per_second": 100.5,
                       "predicted_per_second": 20.25, "cache_n": 4, "draft_n": 6,
                       "draft_n_accepted": 5, "prompt_ms": 120.0, "predicted_ms": 1680.0}}
    meter = metered(JSON, json.dumps(doc).encode())
    assert meter.tokens == {"input_tokens": 12, "output_tokens": 34, "cache_tokens": 4,
                            "prompt_per_second": 100.5, "tokens_per_second": 20.25,
                            "draft_tokens": 6, "draft_acc_tokens": 5}
    assert meter.timing_ms == 1800.0


def test_sse_usage_found_across_arbitrary_chunk_boundaries() -> None:
    stream = sse({"choices": [{"delta": {"content": "hi"}}]},
                 {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}})
    for cut in range(1, len(stream), 7):
        meter = metered(SSE, stream[:cut], stream[cut:])
        assert meter.tokens == {"input_tokens": 5, "output_tokens": 9}, cut


def test_anthropic_stream_merges_message_start_and_message_delta() -> None:
    stream = (b"event: message_start\n"
              + sse({"type": "message_start", "message": {"usage": {"input_tokens": 11,
                     "cache_read_input_tokens": 3}}},
                    {"type": "message_delta", "usage": {"output_tokens": 42}}))
    meter = metered(SSE, stream)
    assert meter.tokens == {"input_tokens": 11, "cache_tokens": 3, "output_tokens": 42}


def test_responses_api_usage_under_response() -> None:
    meter = metered(SSE, sse({"type": "response.completed",
                              "response": {"usage": {"input_tokens": 2, "output_tokens": 8}}}))
    assert meter.tokens == {"input_tokens": 2, "output_tokens": 8}


def test_infill_array_takes_the_last_element() -> None:
    body = json.dumps([{"timings": {"predicted_n": 1}}, {"timings": {"predicted_n": 9}}]).encode()
    assert metered(JSON, body).tokens == {"output_tokens": 9}
    assert tokens_from([]) == ({}, None)


def test_memory_stays_bounded_and_oversized_bodies_are_not_parsed() -> None:
    meter = ResponseMeter()
    meter.start(200, JSON)
    meter.feed(b'{"usage": {"prompt_tokens": 1}, "pad": "')
    for _ in range(3 * MAX_BUFFER // 65536):
        meter.feed(b"x" * 65536)
        assert len(meter._buf) <= MAX_BUFFER
    meter.feed(b'"}')
    meter.finish()
    assert meter.tokens == {}


def test_a_giant_sse_line_is_dropped_but_later_lines_still_count() -> None:
    meter = ResponseMeter()
    meter.start(200, SSE)
    meter.feed(b"data: {\"x\": \"")
    for _ in range(2 * MAX_BUFFER // 65536):
        meter.feed(b"y" * 65536)
        assert len(meter._buf) <= MAX_BUFFER + 65536
    meter.feed(b"\"}\n\n" + sse({"usage": {"completion_tokens": 4}}))
    meter.finish()
    assert meter.tokens == {"output_tokens": 4}


def test_compressed_responses_are_not_parsed() -> None:
    meter = metered({**JSON, "Content-Encoding": "gzip"}, b'{"usage": {"prompt_tokens": 1}}')
    assert meter.tokens == {}


def test_error_messages() -> None:
    assert error_message(b'{"error": {"message": "bad thing"}}', 400) == "bad thing"
    assert error_message(b'{"error": "plain"}', 500) == "plain"
    assert error_message(b'{"detail": "d"}', 422) == "d"
    assert error_message(b"not json", 503) == "503 Service Unavailable"
    assert error_message(b'{"error": "' + b"e" * 900 + b'"}', 500) == "e" * 500
    assert metered(JSON, b'{"error": "x"}', status=500).error_msg() == "x"
    assert metered(JSON, b"{}").error_msg() is None


def test_the_proxys_own_errors_are_logged_by_their_message() -> None:
    body = route_error_answer("", unknown_model("ghost")).body
    assert error_message(body, 404) == "no local server found for requested model: ghost"


def test_ring_entries_ids_unknowns_and_listener() -> None:
    size = [2]
    seen: list[dict[str, Any]] = []
    ring = ActivityLog(lambda: size[0], seen.append)
    t = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    for i in range(3):
        ring.record(started=t, duration_ms=12.7, model="m", req_path=f"/p{i}",
                    meter=metered(JSON, b'{"usage": {"prompt_tokens": 3}}'))
    entries = ring.entries()
    assert [e["id"] for e in entries] == [1, 2]
    assert [e["id"] for e in seen] == [0, 1, 2]
    assert entries[0] == {
        "id": 1, "timestamp": "2025-01-02T03:04:05+00:00", "model": "m", "req_path": "/p1",
        "resp_content_type": "application/json", "resp_status_code": 200,
        "tokens": {"cache_tokens": -1, "draft_tokens": -1, "draft_acc_tokens": -1,
                   "input_tokens": 3, "output_tokens": -1, "prompt_per_second": -1,
                   "tokens_per_second": -1},
        "duration_ms": 12, "has_capture": False,
    }
    size[0] = 1  # a reload shrank metricsMaxInMemory
    ring.record(started=t, duration_ms=1, model="m", req_path="/x",
                meter=metered(JSON, b"", status=502))
    assert [(e["id"], e["error_msg"]) for e in ring.entries()] == [(3, "502 Bad Gateway")]


def test_metadata_is_the_fifo_priority_of_local_models_and_the_selector_used() -> None:
    from types import MappingProxyType

    from llama_swap.compiler.plan import Model, Plan, Routing
    from llama_swap.runtime.http.observe.recording import entry_metadata, scheduler_metadata

    def model(mid: str) -> Model:
        return Model(id=mid, cmd=("x",), cmdStop=None, proxy="http://127.0.0.1:1",
                     checkEndpoint="/health", ttl=0)

    models = MappingProxyType({"a": model("a"), "b": model("b")})
    fifo = Plan(routing=Routing(scheduler="fifo", priority=MappingProxyType({"a": 7})),
                models=models)
    assert scheduler_metadata(fifo, "a") == {"fifo_priority": "7"}
    assert scheduler_metadata(fifo, "b") == {"fifo_priority": "0"}
    assert scheduler_metadata(fifo, "peer-model") is None
    serial = Plan(routing=Routing(scheduler="serial"), models=models)
    assert scheduler_metadata(serial, "a") is None
    # a selector the request went through is noted beside the scheduler's note
    assert entry_metadata(fifo, "a", "coder") == {"fifo_priority": "7", "selector": "coder"}
    assert entry_metadata(serial, "a", "coder") == {"selector": "coder"}
    assert entry_metadata(serial, "a", None) is None
    assert entry_metadata(fifo, "b", None) == {"fifo_priority": "0"}


def test_metadata_is_shown_in_the_entry_when_given() -> None:
    log = ActivityLog(lambda: 10)
    for metadata in ({"fifo_priority": "2"}, None):
        meter = ResponseMeter()
        meter.start(200, {"Content-Type": "application/json"})
        meter.finish()
        log.record(started=0.0, duration_ms=1, model="m", req_path="/v1/chat/completions",
                   meter=meter, metadata=metadata)
    with_meta, without = log.entries()
    assert with_meta["metadata"] == {"fifo_priority": "2"}
    assert "metadata" not in without


def test_request_counts_per_model_stay_bounded_whatever_names_clients_send() -> None:
    ring = ActivityLog(lambda: 0)
    t = datetime(2025, 1, 2, tzinfo=UTC)
    for i in range(MAX_COUNTED_SERIES + 50):
        ring.record(started=t, duration_ms=1, model=f"made-up-{i}", req_path="/v1/completions",
                    meter=metered(JSON, b"{}", status=404))
    ring.record(started=t, duration_ms=1, model="made-up-0", req_path="/v1/completions",
                meter=metered(JSON, b"{}", status=404))
    assert len(ring.counts) == MAX_COUNTED_SERIES + 1
    assert ring.counts[("made-up-0", 404)] == 2  # a series already counted keeps its own
    assert ring.counts[(OTHER_SERIES, 404)] == 50
