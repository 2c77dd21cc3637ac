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

Routes (all behind the API-key check, except the favicon and the static files: a path
whose last segment has a dot is only ever a static file or a 404, never a page, and
runtime/core/auth.py relies on that to leave them open):
- `GET /ui` -> 301 `/ui/` (query kept);
- `GET /ui/` and `/ui/models` models, `/ui/logs`, `/ui/activity`, `/ui/config` pages;
- `GET /ui/<file>` a file from `static/`; a missing path whose last segment contains
  `.` -> 404, any other missing path -> the models page (SPA-style fallback, as the
  original's single-page UI answers);
- `GET /favicon.ico` from `static/`;
- `POST /api/models/load/{model...}`: acquires the model through the router (normal
  scheduling: it swaps like a request would) and releases it at once.  Unknown or
  peer-only name -> 404 `model not found`; a failed start -> the router's error.
"""

from __future__ import annotations

import mimetypes
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.http.aio.app import STATE
from llama_swap.runtime.http.observe.events import model_status
from llama_swap.runtime.http.render.errors import route_error_response
from llama_swap.runtime.http.services import Services

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
STATIC_DIR = UI_DIR / "static"
TEMPLATES_DIR = UI_DIR / "templates"

# path under /ui/ -> (page name, body template)
PAGES: dict[str, str] = {"": "models", "models": "models", "logs": "logs",
                         "activity": "activity", "config": "config"}
NAV = (("models", "Models", "/ui/"), ("logs", "Logs", "/ui/logs"),
       ("activity", "Activity", "/ui/activity"), ("config", "Config", "/ui/config"))
NOT_FOUND = "404 page not found\n"
MODEL_NOT_FOUND = "model not found"
HTML_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def url_path(name: str) -> str:
    """A model id/alias as a URL path tail (ids may contain `/`, which stays a separator)."""
    return quote(name, safe="/")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["urlpath"] = url_path
    return env


_ENV = _environment()


# ------------------------------------------------------------------ page contexts


def models_context(state: Services) -> dict[str, Any]:
    states = {mid: proc.state for mid, proc in state.router.processes.items()}
    rows = model_status(state.plan, states)
    local = [{**r, "inFlight": state.router.in_flight(r["id"])} for r in rows if not r["peerID"]]
    return {
        "models": local,
        "peers": [r for r in rows if r["peerID"]],
        "loaded": sum(1 for r in local if r["state"] not in ("stopped", "shutdown")),
    }


def logs_context(state: Services, source: str) -> dict[str, Any]:
    sources = ["proxy", "upstream", *state.plan.models]
    if source not in sources:
        source = "proxy"
    return {"sources": sources, "source": source}


def _number(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float) or value < 0:
        return "–"
    return f"{value:.{digits}f}" if digits else str(int(value))


def _when(stamp: Any) -> str:
    try:
        return datetime.fromisoformat(str(stamp)).strftime("%H:%M:%S")
    except ValueError:
        return str(stamp)


def activity_context(request: web.Request) -> dict[str, Any]:
    entries = request.app[STATE].activity.entries()
    rows = []
    for e in reversed(entries):  # newest first
        tokens = e.get("tokens") or {}
        rows.append({
            "id": e.get("id"),
            "time": _when(e.get("timestamp")),
            "timestamp": e.get("timestamp"),
            "model": e.get("model", ""),
            "path": e.get("req_path", ""),
            "status": e.get("resp_status_code", ""),
            "input": _number(tokens.get("input_tokens")),
            "output": _number(tokens.get("output_tokens")),
            "cached": _number(tokens.get("cache_tokens")),
            "prompt_speed": _number(tokens.get("prompt_per_second"), 1),
            "gen_speed": _number(tokens.get("tokens_per_second"), 1),
            "duration": _number(e.get("duration_ms")),
            "error": e.get("error_msg") or "",
        })
    return {"entries": rows, "available": True}


def _locate(diag: dict[str, Any]) -> str:
    """`file:line:column` of a diagnostic, as much of it as is known."""
    where = str(diag.get("file") or "")
    if diag.get("line"):
        where += f":{diag['line']}"
        if diag.get("column"):
            where += f":{diag['column']}"
    return where


def config_context(state: Services) -> dict[str, Any]:
    reloader = state.reloader
    status = reloader.status() if reloader is not None else None
    error = status.get("lastError") if status else None
    diagnostics = []
    if error:
        for d in error.get("diagnostics") or ():
            diagnostics.append({**d, "where": _locate(d)})
    return {"status": status, "error": error, "diagnostics": diagnostics,
            "plan_models": sorted(state.plan.models), "scheduler": state.plan.routing.scheduler}


# ------------------------------------------------------------------ handlers


def render_page(request: web.Request, page: str) -> web.Response:
    state = request.app[STATE]
    if page == "models":
        ctx = models_context(state)
    elif page == "logs":
        ctx = logs_context(state, request.query.get("source", "proxy"))
    elif page == "activity":
        ctx = activity_context(request)
    else:
        ctx = config_context(state)
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
        return render_page(request, page)
    found = static_file(tail)
    if found is not None:
        return file_response(found)
    if "." in tail.rsplit("/", 1)[-1]:
        return not_found()
    return render_page(request, "models")  # SPA-style fallback


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


def register(app: web.Application, services: Services) -> None:
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/ui", ui_redirect)
    app.router.add_get("/ui/{tail:.*}", ui)
    app.router.add_post("/api/models/load/{model:.*}", load_model)  # "" -> model not found
