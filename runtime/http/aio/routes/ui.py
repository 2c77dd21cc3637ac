"""The built-in web UI: server-rendered pages under `/ui/`, plus `POST /api/models/load/{model}`.

Why server-rendered: the Go original embeds a React bundle; we want no npm build and
nothing fetched from the internet.  Every page is a jinja2 template
(`runtime/http/aio/ui/templates/`) rendered from the same state the JSON API reads, so
the page is complete without JavaScript.  One small script (`static/app.js`) makes
it live: it listens to `/api/events` and re-fetches the page's live section as a
fragment (`?partial=1`) when a relevant event arrives, streams `/logs/stream/...`
into the log view, and posts the Load/Unload buttons.  It uses same-origin
`fetch`/`EventSource`, so whatever credentials the browser holds (the Basic-auth
prompt that the 401's `WWW-Authenticate` triggers) go along.

The pages: Models (load progress with elapsed time, TTL countdown, in-flight and
queued counts), Queue (the scheduler's queue, loads and collation groups), Playground
(chat streamed through the proxy, embeddings), Activity (filtered pages, a tokens/s
chart, captures), Logs (live, filtered, ANSI colours) and Config (reload diff, warnings,
errors).  What each shows is computed in runtime/http/render/ui_pages.py and
ui_activity.py; this module only routes and renders.

Routes (all behind the API-key check, except the favicon and the static files: a path
whose last segment has a dot is only ever a static file or a 404, never a page, and
runtime/core/auth.py relies on that to leave them open):
- `GET /ui` -> 301 `/ui/` (query kept);
- `GET /ui/` and `/ui/models`, `/ui/queue`, `/ui/playground`, `/ui/activity`, `/ui/logs`,
  `/ui/config` pages, `/ui/capture?id=N` one capture made readable; `?partial=1` gives
  a page's live section alone;
- `GET /ui/<file>` a file from `static/`; a missing path whose last segment contains
  `.` -> 404, any other missing path -> the models page (SPA-style fallback, as the
  original's single-page UI answers);
- `GET /favicon.ico` from `static/`;
- `GET /api/queue`: the scheduler's queue as JSON (runtime/http/render/queue.py);
- `POST /api/models/load/{model...}`: acquires the model through the router (normal
  scheduling: it swaps like a request would) and releases it at once.  Unknown or
  peer-only name -> 404 `model not found`; a failed start -> the router's error.

The page script's own refreshes (`?partial=` fragments, `/api/queue`) are access-logged
at debug level only (runtime/http/observe/access_log.py), so they do not fill the log.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.limits import parse_id
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.observe.activity_db import StoreError
from llama_swap.runtime.http.observe.activity_query import MAX_LIMIT
from llama_swap.runtime.http.observe.activity_query import ActivityQuery as StoreQuery
from llama_swap.runtime.http.render import ui_activity, ui_pages
from llama_swap.runtime.http.render.errors import route_error_response
from llama_swap.runtime.http.render.queue import queue_document
from llama_swap.runtime.http.services import Services

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
STATIC_DIR = UI_DIR / "static"
TEMPLATES_DIR = UI_DIR / "templates"

# path under /ui/ -> page name (its body template is <name>.html)
PAGES: dict[str, str] = {"": "models", "models": "models", "queue": "queue",
                         "playground": "playground", "activity": "activity", "logs": "logs",
                         "config": "config", "capture": "capture"}
NAV = (("models", "Models", "/ui/"), ("queue", "Queue", "/ui/queue"),
       ("playground", "Playground", "/ui/playground"), ("activity", "Activity", "/ui/activity"),
       ("logs", "Logs", "/ui/logs"), ("config", "Config", "/ui/config"))
NOT_FOUND = "404 page not found\n"
MODEL_NOT_FOUND = "model not found"
HTML_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def url_path(name: str) -> str:
    """A model id/alias as a URL path tail (ids may contain `/`, which stays a separator)."""
    return quote(name, safe="/")


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Log text without terminal escapes (the page script renders the colours)."""
    return _ANSI.sub("", text)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["urlpath"] = url_path
    env.filters["ansi"] = strip_ansi
    return env


_ENV = _environment()
BIG_CAPTURE = 1 << 20  # bytes: decoding and pretty-printing bigger captures runs off the loop


# ------------------------------------------------------------------ page contexts


# With a status filter (which the store's query does not have) the page is cut from the
# newest rows of the history, this many.
STATUS_WINDOW = MAX_LIMIT


async def _history(
    state: Services, query: ui_activity.ActivityQuery
) -> tuple[dict[str, Any], list[Any]]:
    """One page of activity from the persistent store (so history from before a restart
    shows), and the rows the speed chart is drawn from.  When the store cannot answer, the
    in-memory log is used as before."""
    models = (query.model,) if query.model else ()
    try:
        page, window = await _from_store(state, query, models)
    except (StoreError, sqlite3.Error):
        entries = state.activity.entries()
        return ui_activity.as_page(entries, query), entries
    for entry in page["data"]:  # captures live in memory, not in the store
        entry["has_capture"] = entry["id"] in state.captures
    return page, window


async def _from_store(
    state: Services, query: ui_activity.ActivityQuery, models: tuple[str, ...]
) -> tuple[dict[str, Any], list[Any]]:
    """Without a status filter the store pages the whole history; with one, the newest
    STATUS_WINDOW rows are filtered and paged here."""
    window = (await state.store.page(StoreQuery(models=models, limit=STATUS_WINDOW)))["data"]
    if query.status:
        return ui_activity.paginate(window, query), window
    page = await state.store.page(StoreQuery(models=models, limit=query.limit, page=query.page))
    return page, window


async def activity_context(request: web.Request) -> dict[str, Any]:
    state = request.app[STATE]
    query = ui_activity.parse_query(request.query)
    page, window = await _history(state, query)
    models = sorted({str(e.get("model", "")) for e in window} | set(state.plan.models))
    return {
        "rows": [ui_activity.row(e) for e in page["data"]],
        "pager": page, "query": query, "models": [m for m in models if m],
        "statuses": ui_activity.STATUS_FILTERS,
        "chart": ui_activity.speed_chart(ui_activity.matching(window, query)),
    }


async def capture_context(request: web.Request) -> dict[str, Any]:
    raw = request.query.get("id", "")
    capture_id = parse_id(raw) if raw.isdigit() else None
    found = None if capture_id is None else request.app[STATE].captures.get(capture_id)
    view = None
    if found is not None:
        if found.size > BIG_CAPTURE:
            view = await asyncio.to_thread(lambda: ui_activity.capture_view(found.render()))
        else:
            view = ui_activity.capture_view(found.render())
    return {"capture": view, "requested": raw}


async def page_context(request: web.Request, page: str) -> dict[str, Any]:
    state = request.app[STATE]
    if page == "models":
        return ui_pages.models_context(state)
    if page == "queue":
        return ui_pages.queue_context(state)
    if page == "playground":
        return ui_pages.playground_context(state)
    if page == "logs":
        source = request.query.get("source", "proxy")
        buffer = {"proxy": state.proxy_log, "upstream": state.upstream_log}.get(source)
        proc = state.router.processes.get(source)
        if buffer is None and proc is not None:
            buffer = proc.log
        history = buffer.history() if buffer is not None else ""
        return ui_pages.logs_context(state, source, history)
    if page == "activity":
        return await activity_context(request)
    if page == "capture":
        return await capture_context(request)
    return ui_pages.config_context(state)


# ------------------------------------------------------------------ handlers


async def render_page(request: web.Request, page: str) -> web.Response:
    state = request.app[STATE]
    ctx = await page_context(request, page)
    body = f"{page}.html"
    if "partial" in request.query:
        html = _ENV.get_template(body).render(ctx)
    else:
        html = _ENV.get_template("base.html").render(
            ctx, page=page, body=body, nav=NAV, version=state.version
        )
    return web.Response(text=html, content_type="text/html", headers=HTML_HEADERS)


def static_file(tail: str) -> Path | None:
    """The file `tail` names inside static/, or None (missing, a directory, or outside)."""
    if not tail or "\x00" in tail:
        return None
    root = STATIC_DIR.resolve()
    try:
        found = (root / tail).resolve()
    except (OSError, ValueError):
        return None
    if not found.is_relative_to(root) or not found.is_file():
        return None
    return found


def file_response(path: Path) -> web.StreamResponse:
    """A static file; aiohttp's FileResponse serves a pre-compressed `.br`, then `.gz`,
    sibling when the client accepts it (with Content-Encoding and Vary), as the
    original's UI does (scripts/compress_ui.py writes the siblings)."""
    kind, _ = mimetypes.guess_type(path.name)
    if path.suffix == ".ico":
        kind = "image/x-icon"
    return web.FileResponse(path, headers={
        "Cache-Control": "no-cache", "Content-Type": kind or "application/octet-stream",
    })


def not_found() -> web.Response:
    return web.Response(status=404, text=NOT_FOUND, headers={"X-Content-Type-Options": "nosniff"})


async def ui_redirect(request: web.Request) -> web.Response:
    qs = request.rel_url.raw_query_string
    raise web.HTTPMovedPermanently("/ui/" + ("?" + qs if qs else ""))


async def ui(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["tail"]
    page = PAGES.get(tail.rstrip("/"))
    if page is not None:
        return await render_page(request, page)
    found = static_file(tail)
    if found is not None:
        return file_response(found)
    if "." in tail.rsplit("/", 1)[-1]:
        return not_found()
    return await render_page(request, "models")  # SPA-style fallback


async def favicon(request: web.Request) -> web.StreamResponse:
    found = static_file("favicon.ico")
    return file_response(found) if found is not None else not_found()


async def load_model(request: web.Request) -> web.Response:
    """Load one model the way a request would (swapping others out), then release it."""
    state = request.app[STATE]
    name = request.match_info["model"].removeprefix("/")
    model_id = state.plan.resolve(name)
    if model_id is None or model_id not in state.router.processes:
        return route_error_response(request.headers, RouteError(404, MODEL_NOT_FOUND))
    lease = await state.router.acquire(model_id)  # RouteFailure -> rendered by the stack
    async with lease:
        pass
    return web.Response(text="OK")


async def queue(request: web.Request) -> web.Response:
    """`GET /api/queue`: the scheduler's queue, loads and in-flight counts
    (runtime/http/render/queue.py has the shape)."""
    router = request.app[STATE].router
    return web.json_response(queue_document(router.queue_snapshot(), router.waited))


def register(app: web.Application, services: Services) -> None:
    app.router.add_get("/api/queue", queue)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/ui", ui_redirect)
    app.router.add_get("/ui/{tail:.*}", ui)
    app.router.add_post("/api/models/load/{model:.*}", load_model)  # "" -> model not found
