"""Observability routes: `GET /metrics`, `GET /api/performance`, `GET /api/captures/{id}`.

The system sampler (runtime/http/observe/perf.py) runs as an
application task: started with the app, cancelled and awaited at cleanup, and
idle while `performance.disabled` is set (both routes then answer 503).
`/metrics` is Prometheus text: the latest system sample (the Go original's
`llamaswap_*` gauges) plus the proxy's own state: models loaded, requests in
flight, requests recorded per model and status.  Captures are filed by the
activity recorder (runtime/http/observe/recording.py) into the services' store,
served here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from llama_swap.runtime.core.limits import parse_id
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.observe.captures import Capture
from llama_swap.runtime.http.observe.perf import Sampler, SysStat, every_seconds, parse_after
from llama_swap.runtime.http.render.errors import error_response
from llama_swap.runtime.http.services import Services

SAMPLER = web.AppKey("llama_swap_sampler", Sampler)
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NOT_AVAILABLE = "# performance monitor not available\n"
MB = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


def label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def gauge(out: list[str], name: str, help_text: str, samples: list[tuple[str, float]],
          kind: str = "gauge") -> None:
    """One metric family: `samples` are (label text such as `{core="0"}`, value)."""
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    out.extend(f"{name}{labels} {_num(value)}" for labels, value in samples)


def system_metrics(out: list[str], stat: SysStat) -> None:
    cores = [(f'{{core="{i}"}}', pct) for i, pct in enumerate(stat.cpu_util_per_core)]
    gauge(out, "llamaswap_cpu_util_percent", "CPU utilization per core (0-100)", cores)
    for name, help_text, value in (
        ("llamaswap_memory_total_bytes", "Total memory in bytes", stat.mem_total_mb),
        ("llamaswap_memory_used_bytes", "Used memory in bytes", stat.mem_used_mb),
        ("llamaswap_memory_free_bytes", "Free memory in bytes", stat.mem_free_mb),
        ("llamaswap_swap_total_bytes", "Total swap in bytes", stat.swap_total_mb),
        ("llamaswap_swap_used_bytes", "Used swap in bytes", stat.swap_used_mb),
    ):
        gauge(out, name, help_text, [("", value * MB)])
    gauge(out, "llamaswap_load_average", "Load average", [
        ('{interval="1m"}', stat.load_avg_1),
        ('{interval="5m"}', stat.load_avg_5),
        ('{interval="15m"}', stat.load_avg_15),
    ])


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


def gpu_metrics(out: list[str], sampler: Sampler) -> None:
    if not sampler.gpu_stats:
        return
    gpus = sorted(sampler.gpu_stats[-1], key=lambda g: g["id"])
    for name, help_text, key, scale in GPU_GAUGES:
        gauge(out, name, help_text, [
            (f'{{id="{g["id"]}",name="{label(g["name"])}",uuid="{label(g["uuid"])}"}}',
             g[key] * scale)
            for g in gpus
        ])


def runtime_metrics(out: list[str], services: Services) -> None:
    """The proxy's own state: models loaded and ready, requests in flight, requests
    recorded per model and status, and what the fast path did (when it is in front)."""
    states = {mid: proc.state for mid, proc in services.router.processes.items()}
    gauge(out, "llamaswap_models_loaded", "Local models whose server is ready",
          [("", sum(s is ProcessState.READY for s in states.values()))])
    gauge(out, "llamaswap_model_ready", "1 while the model's server is ready, else 0",
          [(f'{{model="{label(mid)}"}}', int(s is ProcessState.READY))
           for mid, s in sorted(states.items())])
    gauge(out, "llamaswap_inflight_requests", "Model requests being served",
          [("", services.inflight.total)])
    gauge(out, "llamaswap_requests_total", "Requests recorded per model and status", [
        (f'{{model="{label(model)}",status="{status}"}}', count)
        for (model, status), count in sorted(services.activity.counts.items())
    ], kind="counter")
    fast = services.fast_path
    if fast is not None:
        gauge(out, "llamaswap_fast_path_requests_total",
              "Inference requests served by the fast path (runtime/http/fast)",
              [("", fast.served)], kind="counter")
        gauge(out, "llamaswap_fast_path_handoffs_total",
              "Client connections the fast path handed to the aiohttp server",
              [("", fast.handed_off)], kind="counter")


def budget_metrics(out: list[str], services: Services) -> None:
    """Evictions by reason (every policy), and under the budget router its capacities and
    what the loaded models use of them by their declared sizes."""
    router = services.router
    gauge(out, "llamaswap_evictions_total", "Models evicted to make room, by reason", [
        (f'{{reason="{label(reason)}"}}', count) for reason, count in sorted(router.evictions.items())
    ], kind="counter")
    usage = router.budget_usage()
    if usage is None:
        return
    gauge(out, "llamaswap_budget_max_loaded", "The budget's maxLoaded (0: no count limit)",
          [("", usage.max_loaded)])
    gauge(out, "llamaswap_budget_loaded", "Models holding memory (starting, ready, stopping)",
          [("", len(usage.loaded))])
    gauge(out, "llamaswap_budget_capacity", "Capacity per budget resource, in its units", [
        (f'{{resource="{label(r)}"}}', c) for r, c in usage.capacity.items()
    ])
    gauge(out, "llamaswap_budget_used", "Declared use of the loaded models per resource", [
        (f'{{resource="{label(r)}"}}', usage.used.get(r, 0)) for r in usage.capacity
    ])


def render_json(capture: Capture) -> bytes:
    """The body of `GET /api/captures/{id}`: built on each read, never stored."""
    return json.dumps(capture.render()).encode()


def _prometheus(services: Services, sampler: Sampler) -> Handler:
    """`GET /metrics`: the latest system sample, the GPUs, the proxy's own state."""

    async def prometheus(request: web.Request) -> web.Response:
        if services.plan.settings.performanceDisabled:
            return web.Response(status=503, text=NOT_AVAILABLE, content_type="text/plain")
        out: list[str] = []
        latest = sampler.latest()
        if latest is not None:
            system_metrics(out, latest)
        gpu_metrics(out, sampler)
        runtime_metrics(out, services)
        budget_metrics(out, services)
        body = ("\n".join(out) + "\n").encode()
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TYPE})

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
    app.router.add_get("/metrics", _prometheus(services, sampler))
    app.router.add_get("/api/performance", _performance(services, sampler))
    app.router.add_get("/api/captures/{id}", capture)
