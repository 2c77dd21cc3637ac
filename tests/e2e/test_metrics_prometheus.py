"""`/metrics` through the real proxy, read with prometheus_client's own parser: after a
scripted workload over both front doors, every count and histogram count matches what
was sent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Proxy, fake_model
from tests.e2e.surface_fixtures import surface_plan

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def post(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> int:
    async with s.post(url, json=body) as r:
        await r.read()
        return r.status


async def test_counts_and_histograms_match_a_scripted_workload(
    proxy: Any, record_file: Path,
) -> None:
    broken = dataclasses.replace(fake_model("broken", record_file), cmd=("false",))
    plan = surface_plan(
        [fake_model("a", record_file, "--tokens", "5"),
         fake_model("b", record_file, "--tokens", "3"), broken],
        storePath=":memory:",
    )
    p: Proxy = proxy(plan)
    url = p.url
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # plain JSON: the fast path
            assert await post(s, url + "/v1/chat/completions", {"model": "a"}) == 200
        # through the aiohttp front door
        assert await post(s, url + "/upstream/a/v1/chat/completions", {"model": "a"}) == 200
        stream = {"model": "b", "stream": True, "stream_options": {"include_usage": True}}
        for _ in range(2):  # b evicts a (serial scheduler: one model at a time)
            assert await post(s, url + "/v1/chat/completions", stream) == 200
        async with s.post(url + "/api/models/unload") as r:
            assert r.status == 200
        assert await post(s, url + "/v1/chat/completions", {"model": "nope"}) == 404
        assert await post(s, url + "/v1/chat/completions", {"model": "broken"}) >= 500

    m = await scrape(url)
    assert value(m, "llamaswap_requests_total", model="a", status="200") == 4
    assert value(m, "llamaswap_requests_total", model="b", status="200") == 2
    assert value(m, "llamaswap_requests_total", model="nope", status="404") == 1
    for model, n in (("a", 4), ("b", 2), ("nope", 1), ("broken", 1)):
        assert value(m, "llamaswap_request_duration_seconds_count", model=model) == n, model
        assert value(m, "llamaswap_time_to_first_byte_seconds_count", model=model) == n, model
        le_inf = value(m, "llamaswap_request_duration_seconds_bucket", model=model, le="+Inf")
        assert le_inf == n
    assert value(m, "llamaswap_output_tokens_total", model="a") == 4 * 5
    assert value(m, "llamaswap_output_tokens_total", model="b") == 2 * 3
    assert value(m, "llamaswap_input_tokens_total", model="a") >= 4

    for model in ("a", "b"):
        assert value(m, "llamaswap_model_loads_total", model=model) == 1
        assert value(m, "llamaswap_model_load_duration_seconds_count", model=model) == 1
    assert value(m, "llamaswap_model_load_failures_total", model="broken") == 1
    assert value(m, "llamaswap_model_loads_total", model="broken") == 0
    assert value(m, "llamaswap_model_evictions_total", model="a", reason="swap") == 1
    assert value(m, "llamaswap_model_evictions_total", model="b", reason="unload") == 1

    assert value(m, "llamaswap_inflight_requests") == 0
    assert value(m, "llamaswap_queued_requests") == 0
    assert value(m, "llamaswap_models_loaded") == 0
    assert value(m, "llamaswap_fast_path_requests_total") >= 3
    assert value(m, "process_cpu_seconds_total") > 0  # the library's process collector


async def test_in_flight_and_queued_requests_are_shown_while_they_wait(
    proxy: Any, record_file: Path,
) -> None:
    import asyncio

    plan = surface_plan([fake_model("a", record_file, "--response-delay", "3"),
                         fake_model("b", record_file)], storePath=":memory:")
    p: Proxy = proxy(plan)
    async with aiohttp.ClientSession() as s:
        slow = asyncio.ensure_future(post(s, p.url + "/v1/chat/completions", {"model": "a"}))
        waiting = None
        m: Samples = {}
        for _ in range(500):  # until a is being served and b waits behind it (serial)
            m = await scrape(p.url)
            if waiting is None and value(m, "llamaswap_model_inflight_requests", model="a"):
                waiting = asyncio.ensure_future(
                    post(s, p.url + "/v1/chat/completions", {"model": "b"}))
            if value(m, "llamaswap_model_queued_requests", model="b") == 1:
                break
            await asyncio.sleep(0.01)
        assert value(m, "llamaswap_model_inflight_requests", model="a") == 1
        assert value(m, "llamaswap_model_queued_requests", model="b") == 1
        assert value(m, "llamaswap_queued_requests") == 1
        assert value(m, "llamaswap_inflight_requests") == 2  # in progress: served or waiting
        assert await slow == 200 and waiting is not None and await waiting == 200
    after = await scrape(p.url)
    assert value(after, "llamaswap_queued_requests") == 0
    assert value(after, "llamaswap_model_evictions_total", model="a", reason="swap") == 1
