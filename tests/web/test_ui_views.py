"""The UI's newer views, served in-process: Queue (and `GET /api/queue`), Playground,
Activity (filters, pages, the tokens/s chart, captures) and Config (reload diff and
warnings).  What the views compute is also specified on its own, as plain values.

The browser-driven checks of the same pages are in tests/browser/.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from llama_swap.compiler.plan import Budget, Plan
from llama_swap.runtime.http.aio.app import build_app, create_services
from llama_swap.runtime.http.aio.stack import default_middlewares
from llama_swap.runtime.http.observe.access_log import ProxyLog, is_ui_refresh, log_access
from llama_swap.runtime.http.render import ui_activity
from llama_swap.runtime.http.render.ui_activity import ActivityQuery, parse_query
from llama_swap.runtime.http.services import Services
from tests.web.conftest import Serve, make_plan, model
from tests.web.test_captures import exchange


def plan(**settings: Any) -> Plan:
    return make_plan(model("alpha", name="Alpha", ttl=60), model("beta"), **settings)


async def start(serve: Serve, p: Plan, reloader: Any = None) -> tuple[TestClient, Services]:
    services = create_services(p)
    services.reloader = reloader
    client = await serve(build_app(services, middlewares=default_middlewares(services)))
    return client, services


async def text(client: TestClient, path: str, **kw: Any) -> str:
    resp = await client.get(path, **kw)
    assert resp.status == 200, (path, resp.status)
    return await resp.text()


def entry(i: int, model: str = "alpha", status: int = 200, tps: float = -1) -> dict[str, Any]:
    """An activity entry as the activity API writes it."""
    return {"id": i, "timestamp": "2026-01-01T10:00:00+00:00", "model": model,
            "req_path": "/v1/chat/completions", "resp_content_type": "application/json",
            "resp_status_code": status, "duration_ms": 12, "has_capture": i % 2 == 0,
            "tokens": {"input_tokens": 3, "output_tokens": 4, "cache_tokens": -1,
                       "prompt_per_second": -1, "tokens_per_second": tps,
                       "draft_tokens": -1, "draft_acc_tokens": -1}}


# -- queue -----------------------------------------------------------------------------------


async def test_the_queue_api_and_page_of_an_idle_server(serve: Serve) -> None:
    client, _ = await start(serve, plan())
    resp = await client.get("/api/queue")
    assert await resp.json() == {"scheduler": "serial", "queued": [], "loading": [],
                                 "inFlight": [], "waiting": 0}
    html = await text(client, "/ui/queue")
    assert "No request is waiting." in html and "Nothing in flight." in html
    assert "No model is loading." in html and "<code>serial</code>" in html
    fragment = await text(client, "/ui/queue?partial=1")
    assert fragment.lstrip().startswith('<section id="queue"') and "<html" not in fragment


async def test_the_models_page_shows_the_budget_when_the_budget_router_is_used(
        serve: Serve) -> None:
    base = plan()
    budgeted = replace(base, routing=replace(
        base.routing, scheduler="fifo", router="budget",
        budget=Budget(maxLoaded=2, resources=MappingProxyType({"vram": 24}),
                      probes=MappingProxyType({}))))
    client, _ = await start(serve, budgeted)
    html = await text(client, "/ui/")
    assert "<dd>0 loaded of at most 2</dd>" in html
    assert '<meter min="0" max="24" value="0"></meter> 0 of 24' in html
    client, _ = await start(serve, base)
    assert 'id="budget"' not in await text(client, "/ui/")


# -- playground ------------------------------------------------------------------------------


async def test_the_playground_offers_every_model_and_asks_for_a_key_only_when_one_is_needed(
        serve: Serve) -> None:
    client, _ = await start(serve, plan())
    html = await text(client, "/ui/playground")
    assert '<option value="alpha">alpha (Alpha)</option>' in html
    assert '<option value="beta">beta</option>' in html
    assert 'id="pg-key"' not in html and "<noscript>" in html
    client, _ = await start(serve, plan(apiKeys=("sk-x",)))
    html = await text(client, "/ui/playground", headers={"x-api-key": "sk-x"})
    assert 'id="pg-key"' in html


# -- activity --------------------------------------------------------------------------------


def test_activity_filters_by_model_and_status_newest_first_in_pages() -> None:
    entries = [entry(i, "alpha" if i % 3 else "beta", 200 if i % 4 else 503) for i in range(1, 61)]
    page = ui_activity.paginate(entries, ActivityQuery(model="alpha", limit=10, page=2))
    alpha = [e["id"] for e in reversed(entries) if e["model"] == "alpha"]
    assert [e["id"] for e in page["data"]] == alpha[10:20]
    assert (page["total"], page["total_pages"], page["page"], page["limit"]) == (40, 4, 2, 10)
    failed = ui_activity.paginate(entries, ActivityQuery(status="error", limit=100))
    assert {e["resp_status_code"] for e in failed["data"]} == {503}
    assert failed["total"] == 15
    assert ui_activity.paginate(entries, ActivityQuery(status="4xx"))["total"] == 0


def test_activity_reads_either_api_shape() -> None:
    q = ActivityQuery(limit=2)
    listed = ui_activity.as_page([entry(1), entry(2), entry(3)], q)
    assert [e["id"] for e in listed["data"]] == [3, 2] and listed["total_pages"] == 2
    paged = {"data": [entry(9)], "page": 4, "limit": 2, "total": 7, "total_pages": 4}
    assert ui_activity.as_page(paged, q) is paged


def test_activity_query_parameters_are_validated_and_linked_back() -> None:
    q = parse_query({"model": " a/b ", "status": "bogus", "page": "-3", "limit": "9999"})
    assert q == ActivityQuery(model="a/b", status="", page=1, limit=ui_activity.MAX_LIMIT)
    assert parse_query({"page": "x"}).page == 1
    assert ActivityQuery().link() == "/ui/activity"
    assert ActivityQuery(model="a/b", status="5xx").link(page=3) == (
        "/ui/activity?model=a%2Fb&status=5xx&page=3")


def test_rows_show_unknown_figures_as_dashes_and_the_chart_only_reported_speeds() -> None:
    r = ui_activity.row(entry(2, tps=41.25))
    assert (r["input"], r["cached"], r["prompt_speed"], r["gen_speed"]) == ("3", "–", "–", "41.2")
    assert r["time"] == "10:00:00" and r["has_capture"] and r["ok"]
    assert ui_activity.speed_chart([entry(1), entry(2)]) is None
    chart = ui_activity.speed_chart([entry(1, tps=10), entry(2), entry(3, tps=20)])
    assert chart is not None and chart["count"] == 2 and chart["max"] == "20.0"
    first, second = (p.split(",") for p in chart["points"].split())
    assert float(first[0]) < float(second[0])  # oldest on the left
    assert float(first[1]) > float(second[1])  # the faster one higher up


def test_a_capture_is_shown_with_pretty_json_and_binary_noted() -> None:
    view = ui_activity.capture_view({
        "id": 4, "req_path": "/v1/x", "req_headers": {"b": "2", "a": "1"},
        "req_body": "eyJrIjogWzEsMl19", "resp_headers": None, "resp_body": "//79"})
    assert view["req_headers"] == [("a", "1"), ("b", "2")] and view["resp_headers"] == []
    assert view["req_body"] == '{\n  "k": [\n    1,\n    2\n  ]\n}' and view["req_kind"] == "json"
    assert view["resp_kind"] == "binary" and "3 bytes" in view["resp_body"]


async def test_the_activity_page_pages_filters_and_links_captures(serve: Serve) -> None:
    client, services = await start(serve, plan())
    for i in range(30):
        draft, meter = exchange(services.captures, "/v1/chat/completions", b"{}",
                                b'{"timings": {"predicted_n": 4, "predicted_per_second": 12.5}}',
                                status=200 if i % 10 else 500)
        services.activity.record(started=0.0, duration_ms=5, model="alpha" if i % 2 else "beta",
                                 req_path="/v1/chat/completions", meter=meter,
                                 capture=lambda _id, d=draft: _id == 29 and d.store(_id))
    html = await text(client, "/ui/activity")
    assert "30 requests recorded" in html and "page 1 of 2" in html
    assert 'href="/ui/activity?page=2" rel="next"' in html
    assert '<a class="capture-link" href="/ui/capture?id=29" data-capture="29">view</a>' in html
    assert "<svg" in html and "12.5" in html
    html = await text(client, "/ui/activity?model=alpha&status=error")
    assert "0 requests recorded matching" in html and "No requests yet." in html
    html = await text(client, "/ui/activity?status=5xx")
    assert "3 requests recorded matching" in html
    assert 'data-partial="/ui/activity?status=5xx&amp;partial=1"' in html


async def test_a_capture_page_shows_both_sides_with_credentials_redacted(serve: Serve) -> None:
    client, services = await start(serve, plan())
    headers = CIMultiDict({"Authorization": "Bearer sk-secret", "Content-Type": "application/json"})
    draft, _ = exchange(services.captures, "/v1/chat/completions", b'{"model": "alpha"}',
                        b'{"answer": 42}', req_headers=headers)
    assert draft.store(3)
    html = await text(client, "/ui/capture?id=3")
    assert "<h1>Capture #3</h1>" in html and "sk-secret" not in html
    assert "<tr><th>Authorization</th><td>[REDACTED]</td></tr>" in html
    assert "&#34;answer&#34;: 42" in html and "&#34;model&#34;: &#34;alpha&#34;" in html
    fragment = await text(client, "/ui/capture?id=3&partial=1")  # what the dialog shows
    assert fragment.lstrip().startswith('<section id="capture">') and "<html" not in fragment


async def test_a_missing_capture_says_why(serve: Serve) -> None:
    client, _ = await start(serve, plan())
    html = await text(client, "/ui/capture?id=12")
    assert "No capture 12" in html and "captureBuffer" in html


# -- config ----------------------------------------------------------------------------------


class ReloaderWithWarnings:
    """The config page reads `status()` of runtime/engine/reload.py's Reloader."""

    def status(self) -> dict[str, Any]:
        warning = {"severity": "warning", "file": "/etc/ls/config.yaml", "line": 3, "column": 1,
                   "path": "modles", "message": "unknown key, ignored"}
        return {
            "digest": "sha256:def", "sources": [], "loadedAt": "2026-01-01T00:00:00Z",
            "models": 2, "reloading": False, "reloads": {"applied": 1}, "watching": None,
            "lastError": None, "warnings": [warning],
            "lastReload": {
                "at": "2026-01-01T00:01:00Z", "ok": True, "reason": "SIGHUP", "changed": True,
                "summary": "1 added, 1 restarted", "durationMs": 3.5, "warnings": [warning],
                "diff": {"added": ["beta"], "removed": ["gone"], "changedRestart": ["alpha"],
                         "changedLive": [], "changedFields": {"alpha": ["cmd", "env"]},
                         "settingsChanged": ["logLevel"], "routingChanged": False,
                         "peersChanged": False, "preloadChanged": False},
            },
        }


async def test_the_config_page_shows_the_reload_diff_and_warnings_never_as_no_error(
        serve: Serve) -> None:
    client, _ = await start(serve, plan(), ReloaderWithWarnings())
    html = await text(client, "/ui/config")
    assert "No reload error" not in html
    assert '<p class="verdict warn" id="verdict">Running, with 1 warning' in html
    assert '<code class="where">/etc/ls/config.yaml:3:1</code> <code>modles</code>' in html
    assert '<dd class="added">beta</dd>' in html and '<dd class="removed">gone</dd>' in html
    assert 'alpha <span class="muted">(cmd, env)</span>' in html
    assert "<dd>logLevel</dd>" in html


# -- the UI's own refreshes ------------------------------------------------------------------


class Lines:
    def __init__(self) -> None:
        self.text = ""

    def write(self, data: str) -> None:
        self.text += data


def test_the_ui_refreshes_are_logged_at_debug_only() -> None:
    assert is_ui_refresh("GET", "/ui/models", "partial=1")
    assert is_ui_refresh("GET", "/api/queue", "")
    assert not is_ui_refresh("GET", "/ui/models", "")  # a page a person opened
    assert not is_ui_refresh("POST", "/api/queue", "")
    assert not is_ui_refresh("GET", "/v1/models", "partial=1")
    for level, expected in (("info", 0), ("debug", 1)):
        sink = Lines()
        log = ProxyLog(sink, level)
        log_access(log, "GET", "/ui/queue", (1, 1), CIMultiDict(), "127.0.0.1", 200, 10, 0.0,
                   quiet=True)
        assert sink.text.count("[DEBUG] Request") == expected
