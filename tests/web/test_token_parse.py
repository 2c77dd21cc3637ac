"""Token figures of vLLM answers (`metrics`) beside OpenAI `usage` and llama-server
`timings` (runtime/http/observe/token_parse.py), alone and as a meter sees a response."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llama_swap.runtime.http.observe.activity import ResponseMeter
from llama_swap.runtime.http.observe.token_parse import has_markers, tokens_from, with_rates

SSE = {"Content-Type": "text/event-stream"}
JSON = {"Content-Type": "application/json"}


def figures(doc: Any) -> dict[str, Any]:
    found, _ = tokens_from(doc)
    return with_rates(found)


def metered(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    meter = ResponseMeter()
    meter.start(200, headers)
    meter.feed(body)
    meter.finish()
    return meter.tokens


def sse(*docs: Any) -> bytes:
    return b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs) + b"data: [DONE]\n\n"


def test_vllm_rates_from_time_to_first_token_and_inter_token_latency() -> None:
    doc = {"usage": {"prompt_tokens": 14, "completion_tokens": 5},
           "metrics": {"time_to_first_token_ms": 70, "mean_itl_ms": 10, "tokens_per_second": 999}}
    assert figures(doc) == {"input_tokens": 14, "output_tokens": 5,
                            "prompt_per_second": pytest.approx(200.0),
                            "tokens_per_second": pytest.approx(100.0)}  # vLLM's own rate unused


def test_cached_prompt_tokens_are_not_counted_in_the_prompt_rate() -> None:
    doc = {"usage": {"prompt_tokens": 42, "completion_tokens": 3,
                     "prompt_tokens_details": {"cached_tokens": 20}},
           "metrics": {"time_to_first_token_ms": 85.2, "mean_itl_ms": 9.1}}
    got = figures(doc)
    assert got["cache_tokens"] == 20
    assert got["prompt_per_second"] == pytest.approx(22 / 0.0852)
    assert got["tokens_per_second"] == pytest.approx(1000 / 9.1)


@pytest.mark.parametrize("metrics", [
    {"time_to_first_token_ms": 0, "mean_itl_ms": 0},
    {"time_to_first_token_ms": -5, "mean_itl_ms": "10"},
    {},
])
def test_no_rate_without_a_positive_number(metrics: dict[str, Any]) -> None:
    assert figures({"usage": {"prompt_tokens": 3}, "metrics": metrics}) == {"input_tokens": 3}


def test_speculative_decoding_counts_need_both_numbers() -> None:
    both = {"metrics": {"speculative_decoding": {"num_draft_tokens": 30, "num_accepted_draft_tokens": 21}}}
    assert figures(both) == {"draft_tokens": 30, "draft_acc_tokens": 21}
    half = {"metrics": {"speculative_decoding": {"num_draft_tokens": 30}}}
    assert figures(half) == {}


def test_timings_draft_counts_stay_when_vllm_gives_only_half() -> None:
    doc = {"timings": {"draft_n": 8, "draft_n_accepted": 6},
           "metrics": {"speculative_decoding": {"num_accepted_draft_tokens": 1}}}
    assert figures(doc) == {"draft_tokens": 8, "draft_acc_tokens": 6}
    assert figures({"timings": {"draft_n": 8}}) == {}  # half a llama-server pair: neither


def test_a_stream_with_usage_before_and_metrics_on_the_last_chunk() -> None:
    stream = sse({"choices": [{"delta": {"content": "hi"}}]},
                 {"choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 9}},
                 {"choices": [], "metrics": {"time_to_first_token_ms": 70, "mean_itl_ms": 10,
                                             "speculative_decoding": {"num_draft_tokens": 4,
                                                                      "num_accepted_draft_tokens": 3}}})
    got = metered(SSE, stream)
    assert got == {"input_tokens": 14, "output_tokens": 9, "draft_tokens": 4, "draft_acc_tokens": 3,
                   "prompt_per_second": pytest.approx(200.0), "tokens_per_second": pytest.approx(100.0)}


def test_the_last_metrics_of_a_stream_wins() -> None:
    stream = sse({"usage": {"prompt_tokens": 10}, "metrics": {"mean_itl_ms": 50}},
                 {"metrics": {"mean_itl_ms": 20}})
    assert metered(SSE, stream)["tokens_per_second"] == pytest.approx(50.0)


def test_a_json_body_with_metrics_alone_is_parsed() -> None:
    body = json.dumps({"metrics": {"mean_itl_ms": 4}}).encode()
    assert metered(JSON, body) == {"tokens_per_second": pytest.approx(250.0)}


def test_markers_include_metrics() -> None:
    assert has_markers(b'{"metrics": {}}') and has_markers(b'"usage"') and has_markers(b'"timings"')
    assert not has_markers(b'{"choices": []}')
