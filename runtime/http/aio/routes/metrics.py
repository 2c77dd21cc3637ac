"""Observability routes: `GET /metrics`, `GET /api/performance`, `GET /api/captures/{id}`.

The system sampler (runtime/http/observe/perf.py) runs as an
application task: started with the app, cancelled and awaited at cleanup, and
idle while `performance.disabled` is set (both routes then answer 503).
`/metrics` is Prometheus text from the services' own registry
(runtime/http/observe/prom.py): request and load histograms and counters, plus the
families read here at every scrape -- the latest system sample (the Go original's
`llamaswap_*` gauges), the GPUs, and the proxy's state: models loaded, requests in
flight and queued, requests recorded per model and status.  Captures are filed by the
activity recorder (runtime/http/observe/recording.py) into the services' store,
served here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from llama_swap.runtime.core.limits import parse_id
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.observe.captures import Capture
from llama_swap.runtime.http.observe.perf import Sampler, SysStat, every_seconds, parse_after
from llama_swap.runtime.http.observe.prom import CONTENT_TYPE
from llama_swap.runtime.http.render.errors import error_response
from llama_swap.runtime.http.services import Services

SAMPLER = web.AppKey("llama_swap_sampler", Sampler)
NOT_AVAILABLE = "# performance monitor not available\n"
MB = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


def system_metrics(stat: SysStat) -> Iterator[Metric]:
    """The latest system sample (the Go original's gauges and names)."""
    cores = GaugeMetricFamily("llamaswap_cpu_util_percent", "CPU utilization per core (0-100)",
                              labels=["core"])
    for i, pct in enumerate(stat.cpu_util_per_core):
        cores.add_metric([str(i)], pct)
    yield cores
    for name, help_text, value in (
        ("llamaswap_memory_total_bytes", "Total memory in bytes", stat.mem_total_mb),
        ("llamaswap_memory_used_bytes", "Used memory in bytes", stat.mem_used_mb),
        ("llamaswap_memory_free_bytes", "Free memory in bytes", stat.mem_free_mb),
        ("llamaswap_swap_total_bytes", "Total swap in bytes", stat.swap_total_mb),
        ("llamaswap_swap_used_bytes", "Used swap in bytes", stat.swap_used_mb),
    ):
        yield GaugeMetricFamily(name, help_text, value=value * MB)
    load = GaugeMetricFamily("llamaswap_load_average", "Load average", labels=["interval"])
    for interval, avg in (("1m", stat.load_avg_1), ("5m", stat.load_avg_5),
                          ("15m", stat.load_avg_15)):
        load.add_metric([interval], avg)
    yield load


GPU_GAUGES = (
    ("llamaswap_gpu_temperature_celsius", "GPU temperature in Celsius", "temp_c", 1),
    ("llamaswap_gpu_util_percent", "GPU utilization percent (0-100)", "gpu_util_pct", 1),
    ("llamaswap_gpu_memory_util_percent", "GPU memory utilization percent (0-100)",
     "mem_util_pct", 1),
    ("llamaswap_gpu_memory_used_bytes", "GPU memory used in bytes", "mem_used_mb", MB),
    ("llamaswap_gpu_memory_total_bytes", "GPU memory total in bytes", "mem_total_mb", MB),
    ("llamaswap_gpu_fan_speed_percent", "GPU fan speed percent (0-100)", "fan_speed_pct", 1),
    ("llamaswap_gpu_power_draw_watts", "GPU power draw in watts", "power_draw_w", 1),
)


def gpu_metrics(sampler: Sampler) -> Iterator[Metric]:
    if not sampler.gpu_stats:
        return
    gpus = sorted(sampler.gpu_stats[-1], key=lambda g: g["id"])
    for name, help_text, key, scale in GPU_GAUGES:
        family = GaugeMetricFamily(name, help_text, labels=["id", "name", "uuid"])
        for g in gpus:
            family.add_metric([str(g["id"]), str(g["name"]), str(g["uuid"])], g[key] * scale)
        yield family


def runtime_metrics(services: Services) -> Iterator[Metric]:
    """The proxy's own state, read at scrape time: models loaded and ready, requests
    recorded per model and status, in flight and queued, and what the fast path did."""
    states = {mid: proc.state for mid, proc in services.router.processes.items()}
    yield GaugeMetricFamily("llamaswap_models_loaded", "Local models whose server is ready",
                            value=sum(s is ProcessState.READY for s in states.values()))
    ready = GaugeMetricFamily("llamaswap_model_ready",
                              "1 while the model's server is ready, else 0", labels=["model"])
    inflight = GaugeMetricFamily("llamaswap_model_inflight_requests",
                                 "Requests being served, per local model", labels=["model"])
    queued = GaugeMetricFamily("llamaswap_model_queued_requests",
                               "Requests waiting for the model (to load, or for a slot)",
                               labels=["model"])
    waiting = Counter(r.model for r in services.router.waiting_requests())
    for mid, state in sorted(states.items()):
        ready.add_metric([mid], int(state is ProcessState.READY))
        inflight.add_metric([mid], services.router.in_flight(mid))
        queued.add_metric([mid], waiting.get(mid, 0))
    yield ready
    yield inflight
    yield queued
    yield GaugeMetricFamily("llamaswap_inflight_requests",
                            "Model requests in progress (being served or waiting)",
                            value=services.inflight.total)
    yield GaugeMetricFamily("llamaswap_queued_requests", "Model requests waiting",
                            value=sum(waiting.values()))
    requests = CounterMetricFamily("llamaswap_requests", "Requests recorded per model and status",
                                   labels=["model", "status"])
    for (model, status), count in sorted(services.activity.counts.items()):
        requests.add_metric([model, str(status)], count)
    yield requests
    fast = services.fast_path
    if fast is not None:
        yield CounterMetricFamily("llamaswap_fast_path_requests",
                                  "Inference requests served by the fast path (runtime/http/fast)",
                                  value=fast.served)
        yield CounterMetricFamily("llamaswap_fast_path_handoffs",
                                  "Client connections the fast path handed to the aiohttp server",
                                  value=fast.handed_off)


def budget_metrics(services: Services) -> Iterator[Metric]:
    """Evictions by the policy's reason (every policy), and under the budget router its
    capacities and what the loaded models use of them by their declared sizes."""
    router = services.router
    evictions = CounterMetricFamily("llamaswap_evictions", "Models evicted to make room, by reason",
                                    labels=["reason"])
    for reason, count in sorted(router.evictions.items()):
        evictions.add_metric([reason], count)
    yield evictions
    usage = router.budget_usage()
    if usage is None:
        return
    yield GaugeMetricFamily("llamaswap_budget_max_loaded",
                            "The budget's maxLoaded (0: no count limit)", value=usage.max_loaded)
    yield GaugeMetricFamily("llamaswap_budget_loaded",
                            "Models holding memory (starting, ready, stopping)",
                            value=len(usage.loaded))
    capacity = GaugeMetricFamily("llamaswap_budget_capacity",
                                 "Capacity per budget resource, in its units", labels=["resource"])
    used = GaugeMetricFamily("llamaswap_budget_used",
                             "Declared use of the loaded models per resource", labels=["resource"])
    for resource, amount in usage.capacity.items():
        capacity.add_metric([resource], amount)
        used.add_metric([resource], usage.used.get(resource, 0))
    yield capacity
    yield used


def render_json(capture: Capture) -> bytes:
    """The body of `GET /api/captures/{id}`: built on each read, never stored."""
    return json.dumps(capture.render()).encode()


def _prometheus(services: Services) -> Handler:
    """`GET /metrics`: the services' registry (counters, histograms, live state, process)."""

    async def prometheus(request: web.Request) -> web.Response:
        if services.plan.settings.performanceDisabled:
            return web.Response(status=503, text=NOT_AVAILABLE, content_type="text/plain")
        await services.store.flush()  # token counters include every request answered so far
        return web.Response(body=services.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return prometheus


def _performance(services: Services, sampler: Sampler) -> Handler:
    """`GET /api/performance[?after=<time>]`: the samples kept, newer than `after`."""

    async def performance(request: web.Request) -> web.Response:
        if services.plan.settings.performanceDisabled:
            return web.json_response({"enabled": False}, status=503)
        after = None
        raw = request.query.get("after")
        if raw:
            try:
                after = parse_after(raw)
            except ValueError:
                return error_response(request.headers, 400, f"invalid 'after' timestamp: {raw}")
        sys_stats, gpu_stats = sampler.since(after)
        return web.json_response({"enabled": True, "sys_stats": sys_stats, "gpu_stats": gpu_stats})

    return performance


async def capture(request: web.Request) -> web.Response:
    """`GET /api/captures/{id}`: one captured exchange, rendered on read."""
    raw_id = request.match_info["id"]
    if not _INT.fullmatch(raw_id):
        return error_response(request.headers, 400, "invalid capture ID")
    capture_id = parse_id(raw_id)  # None: too many digits to name a capture
    found = None if capture_id is None else request.app[STATE].captures.get(capture_id)
    if found is None:
        return error_response(request.headers, 404, "capture not found")
    if found.size > 1 << 20:  # redaction, base64 and JSON of big bodies: off the loop
        body = await asyncio.to_thread(render_json, found)
    else:
        body = render_json(found)
    return web.Response(body=body, content_type="application/json")


def _run_with_app(app: web.Application, sampler: Sampler) -> None:
    """The sampler runs from the app's startup until its cleanup."""
    tasks: list[asyncio.Task[None]] = []

    async def start_sampler(_: web.Application) -> None:
        tasks.append(asyncio.ensure_future(sampler.run()))

    async def stop_sampler(_: web.Application) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        tasks.clear()

    app.on_startup.append(start_sampler)
    app.on_cleanup.append(stop_sampler)


def register(app: web.Application, services: Services) -> None:
    def sampling() -> tuple[bool, float]:  # read per use: reloads apply
        settings = services.plan.settings
        return settings.performanceDisabled, every_seconds(settings.performanceEvery)

    sampler = Sampler.for_gpu_tools(sampling)
    app[SAMPLER] = sampler
    _run_with_app(app, sampler)
    def scraped() -> Iterator[Metric]:
        latest = sampler.latest()
        if latest is not None:
            yield from system_metrics(latest)
        yield from gpu_metrics(sampler)
        yield from runtime_metrics(services)
        yield from budget_metrics(services)

    services.metrics.add_collector(scraped)
    app.router.add_get("/metrics", _prometheus(services))
    app.router.add_get("/api/performance", _performance(services, sampler))
    app.router.add_get("/api/captures/{id}", capture)
