"""The proxy's Prometheus metrics, kept with `prometheus_client` in a registry of its own.

Why a registry per server (not the library's global one): tests and embedders run
several servers in one process, and each must count only its own requests.

What is counted where:
- per request, on the loop, by `recording` (both front doors): duration and time to the
  first byte of the answer's body (histograms per model);
- per batch of activity entries the store's writer process parsed: tokens in and out
  per model, reported back over its pipe (parsing them on the request path would cost
  every request; the writer parses the answers anyway);
- per router event: model loads, load failures, load duration, evictions by reason;
- at scrape time, from the state itself (`add_collector`): requests per model and
  status (the activity log's bounded counts), models ready, requests in flight and
  queued, the fast path's counters, the system and GPU samples.
Process metrics (CPU, memory, file descriptors, GC) come from the library's collectors.

Label sets are bounded: clients name models, so at most `MAX_MODEL_LABELS` distinct model
names get series of their own, later ones share `(other)`.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from llama_swap.runtime.http.observe.activity import MAX_COUNTED_SERIES, OTHER_SERIES

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` twin per counter

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MAX_MODEL_LABELS = MAX_COUNTED_SERIES
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
LOAD_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class ModelLabels:
    """Hands out model label values: the first `limit` names keep their own."""

    def __init__(self, limit: int = MAX_MODEL_LABELS) -> None:
        self._limit = limit
        self._known: set[str] = set()
        self._lock = threading.Lock()  # embedders may feed metrics from other threads

    def __call__(self, model: str) -> str:
        if model in self._known:
            return model
        with self._lock:
            if len(self._known) >= self._limit:
                return OTHER_SERIES
            self._known.add(model)
        return model


class LoopHistogram:
    """A histogram per model label, updated only on the event loop.

    Why not the library's `Histogram` for these two: it takes a lock per bucket and per
    label lookup, ~8 us per observation on the reference machine, and every request
    observes two; this costs a dict lookup and a C bisect.  The library still writes the
    exposition (a `HistogramMetricFamily` built at scrape time, also on the loop)."""

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        # per label: a count per bucket (the last one past every bound), then the sum
        self._rows: dict[str, list[float]] = {}

    def observe(self, label: str, value: float) -> None:
        row = self._rows.get(label)
        if row is None:
            row = self._rows[label] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["model"])
        for label, row in sorted(self._rows.items()):
            buckets: list[tuple[str, float]] = []
            total = 0.0
            for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), row[:-1],
                                    strict=True):
                total += count
                buckets.append((bound, total))
            family.add_metric([label], buckets, sum_value=row[-1])
        return family


class _Scrape(Collector):
    """Metric families computed from live state when /metrics is read."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def describe(self) -> Iterable[Metric]:
        return ()  # computed at scrape time; nothing to check at registration


class ProxyMetrics:
    """One server's metrics (see the module docstring for who feeds what)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.label = ModelLabels()
        self.duration = LoopHistogram(
            "llamaswap_request_duration_seconds",
            "Time from a model request's arrival to the end of its answer, per model",
            REQUEST_BUCKETS)
        self.ttfb = LoopHistogram(
            "llamaswap_time_to_first_byte_seconds",
            "Time from a model request's arrival to the first byte of its answer's body "
            "(the first token of a stream), per model",
            REQUEST_BUCKETS)
        self.add_collector(lambda: (self.duration.family(), self.ttfb.family()))
        self.input_tokens = Counter(
            "llamaswap_input_tokens", "Prompt tokens the upstreams reported, per model",
            ["model"], registry=registry)
        self.output_tokens = Counter(
            "llamaswap_output_tokens", "Generated tokens the upstreams reported, per model",
            ["model"], registry=registry)
        self.loads = Counter(
            "llamaswap_model_loads", "Model server starts that became ready", ["model"],
            registry=registry)
        self.load_failures = Counter(
            "llamaswap_model_load_failures", "Model server starts that never became ready",
            ["model"], registry=registry)
        self.load_duration = Histogram(
            "llamaswap_model_load_duration_seconds",
            "Time from a model server's start to its first successful health check",
            ["model"], buckets=LOAD_BUCKETS, registry=registry)
        self.evictions = Counter(
            "llamaswap_model_evictions",
            "Running models stopped, by reason (swap: to make room for another; ttl: idle "
            "past its ttl; unload: asked to)",
            ["model", "reason"], registry=registry)
        self._starting: dict[str, float] = {}
        self._token_counters: dict[str, tuple[Any, Any]] = {}

    def add_collector(self, families: Callable[[], Iterable[Metric]]) -> None:
        """Metric families read from live state at every scrape."""
        self.registry.register(_Scrape(families))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- feeders ---------------------------------------------------------------------

    def request(self, model: str, seconds: float, first_byte: float | None) -> None:
        """A model request answered (on the loop)."""
        name = self.label(model)
        self.duration.observe(name, seconds)
        self.ttfb.observe(name, seconds if first_byte is None else first_byte)

    def tokens(self, model: str, tokens: Mapping[str, Any]) -> None:
        """Token counts of recorded requests (as the store's writer reports them): known ones."""
        counters = None
        for i, key in enumerate(("input_tokens", "output_tokens")):
            value = tokens.get(key, -1)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                if counters is None:
                    name = self.label(model)
                    counters = self._token_counters.get(name)
                    if counters is None:  # a child per label, looked up once
                        counters = self._token_counters[name] = (
                            self.input_tokens.labels(name), self.output_tokens.labels(name))
                counters[i].inc(value)

    def on_event(self, event: Mapping[str, Any]) -> None:
        """Router events: state changes (loads) and evictions."""
        kind = event.get("type")
        if kind == "state":
            self._state(str(event.get("model")), str(event.get("old")), str(event.get("new")))
        elif kind == "evict":
            self.evictions.labels(self.label(str(event.get("model"))),
                                  str(event.get("reason"))).inc()

    def _state(self, model: str, old: str, new: str) -> None:
        if new == "starting":
            self._starting[model] = time.monotonic()
            return
        started = self._starting.pop(model, None)
        if old != "starting" or started is None:
            return
        if new == "shutdown":  # the proxy is exiting: not the model's failure
            return
        name = self.label(model)
        if new == "ready":
            self.loads.labels(name).inc()
            self.load_duration.labels(name).observe(time.monotonic() - started)
        else:
            self.load_failures.labels(name).inc()
