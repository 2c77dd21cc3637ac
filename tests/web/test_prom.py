"""The proxy's Prometheus registry (runtime/http/observe/prom.py), fed directly."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from llama_swap.runtime.http.observe.activity import OTHER_SERIES
from llama_swap.runtime.http.observe.prom import ModelLabels, ProxyMetrics


def samples(metrics: ProxyMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_each_server_counts_in_a_registry_of_its_own() -> None:
    one, two = ProxyMetrics(), ProxyMetrics()
    one.request("m", 0.2, 0.05)
    got = samples(one)
    assert got[("llamaswap_request_duration_seconds_count", (("model", "m"),))] == 1
    assert got[("llamaswap_time_to_first_byte_seconds_sum", (("model", "m"),))] == 0.05
    assert ("llamaswap_request_duration_seconds_count", (("model", "m"),)) not in samples(two)
    assert not any(name.endswith("_created") for name, _ in got)


def test_an_answer_without_a_body_counts_its_whole_duration_as_first_byte() -> None:
    m = ProxyMetrics()
    m.request("m", 0.3, None)
    assert samples(m)[("llamaswap_time_to_first_byte_seconds_sum", (("model", "m"),))] == 0.3


def test_model_labels_are_bounded() -> None:
    label = ModelLabels(limit=2)
    assert [label(x) for x in ("a", "b", "c", "a")] == ["a", "b", OTHER_SERIES, "a"]


def test_loads_failures_and_evictions_come_from_router_events() -> None:
    m = ProxyMetrics()
    for old, new in (("stopped", "starting"), ("starting", "ready"),
                     ("ready", "stopping"), ("stopping", "stopped"),
                     ("stopped", "starting"), ("starting", "stopped"),
                     ("stopped", "starting"), ("starting", "shutdown")):
        m.on_event({"type": "state", "model": "x", "old": old, "new": new})
    m.on_event({"type": "evict", "model": "x", "reason": "ttl"})
    m.on_event({"type": "inflight", "total": 3})  # others are ignored
    got = samples(m)
    assert got[("llamaswap_model_loads_total", (("model", "x"),))] == 1
    assert got[("llamaswap_model_load_duration_seconds_count", (("model", "x"),))] == 1
    assert got[("llamaswap_model_load_failures_total", (("model", "x"),))] == 1  # not shutdown
    assert got[("llamaswap_model_evictions_total", (("model", "x"), ("reason", "ttl")))] == 1


def test_tokens_count_known_figures_only() -> None:
    m = ProxyMetrics()
    m.tokens("x", {"input_tokens": 4, "output_tokens": -1})
    m.tokens("x", {"input_tokens": 2, "output_tokens": 7})
    got = samples(m)
    assert got[("llamaswap_input_tokens_total", (("model", "x"),))] == 6
    assert got[("llamaswap_output_tokens_total", (("model", "x"),))] == 7


def test_scrape_time_families_are_read_at_each_render() -> None:
    from prometheus_client.core import GaugeMetricFamily

    m = ProxyMetrics()
    depth = [2]
    m.add_collector(lambda: [GaugeMetricFamily("llamaswap_queued_requests", "q", value=depth[0])])
    assert samples(m)[("llamaswap_queued_requests", ())] == 2
    depth[0] = 0
    assert samples(m)[("llamaswap_queued_requests", ())] == 0


def test_loop_histograms_count_a_value_in_the_first_bucket_it_fits_cumulatively() -> None:
    from llama_swap.runtime.http.observe.prom import LoopHistogram

    h = LoopHistogram("h_seconds", "h", (0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe("m", v)
    (sample_set,) = [h.family()]
    got = {(s.name, s.labels.get("le")): s.value for s in sample_set.samples}
    assert got[("h_seconds_bucket", "0.1")] == 2  # upper bounds are inclusive
    assert got[("h_seconds_bucket", "1.0")] == 4
    assert got[("h_seconds_bucket", "+Inf")] == 5
    assert got[("h_seconds_count", None)] == 5 and got[("h_seconds_sum", None)] == 8.65
