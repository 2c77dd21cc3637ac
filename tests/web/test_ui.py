"""The built-in UI (runtime/routes/ui.py), served in-process by the full app on 127.0.0.1.

Models here never start (their command is `true`); the pages are checked for what
they render from the plan and the router's state, and the static-file rules of
the reference's 5.16.  Loading real models is in tests/e2e/test_surface_ui.py.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from llama_swap.compiler.plan import Peer, Plan
from llama_swap.runtime.http.aio.app import build_app, create_services
from llama_swap.runtime.http.aio.routes.ui import STATIC_DIR
from llama_swap.runtime.http.aio.stack import default_middlewares
from tests.web.conftest import Serve, make_plan, model

PEER = Peer(id="remote", proxy="http://127.0.0.1:1", models=("peer-x", "peer-y"))


def ui_plan(**settings: Any) -> Plan:
    return make_plan(
        model("org/alpha", aliases=("al", "a1"), description="the <first> one", name="Alpha"),
        model("beta", unlisted=True),
        peers=(PEER,),
        **settings,
    )


async def start(serve: Serve, plan: Plan, reloader: Any = None) -> TestClient:
    services = create_services(plan)
    services.reloader = reloader
    return await serve(build_app(services, middlewares=default_middlewares(services)))


async def get(client: TestClient, path: str, **kw: Any) -> tuple[int, dict[str, str], str]:
    resp = await client.get(path, allow_redirects=False, **kw)
    return resp.status, dict(resp.headers), await resp.text(errors="replace")


async def test_models_page_lists_local_and_peer_models(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    status, headers, html = await get(client, "/ui/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<tr data-model="org/alpha" data-state="stopped">' in html
    assert '<tr data-model="beta" data-state="stopped">' in html
    assert "Alpha" in html and "al, a1" in html
    assert "the &lt;first&gt; one" in html  # escaped
    assert ">unlisted<" in html
    assert 'data-post="/api/models/load/org/alpha"' in html
    assert 'data-post="/api/models/unload/org/alpha"' in html
    assert 'data-post="/api/models/unload"' in html  # unload all
    assert '<tr data-peer-model="remote/peer-x"><td class="id">remote/peer-x</td><td>remote</td>' in html
    assert "0 of 2 loaded" in html
    assert '<script src="/ui/app.js"' in html


async def test_models_page_also_at_ui_models_and_as_fragment(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    _, _, full = await get(client, "/ui/models")
    _, _, fragment = await get(client, "/ui/models?partial=1")
    assert "<html" in full and 'data-model="beta"' in full
    assert "<html" not in fragment and fragment.lstrip().startswith('<section id="models"')
    assert 'data-model="beta"' in fragment


async def test_logs_page_offers_proxy_upstream_and_every_model(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    _, _, html = await get(client, "/ui/logs?source=beta")
    for name in ("proxy", "upstream", "org/alpha"):
        assert f'<option value="{name}">' in html
    assert '<option value="beta" selected>' in html
    assert 'data-stream="/logs/stream/" data-source="beta"' in html
    _, _, html = await get(client, "/ui/logs?source=nope")  # unknown source -> proxy
    assert '<option value="proxy" selected>' in html


async def test_activity_page_renders_recorded_entries(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    _, _, html = await get(client, "/ui/activity")
    assert "No requests yet." in html and "0 requests recorded" in html


class StubReloader:
    """What the config page reads of runtime.reload.Reloader: `status()`."""

    def status(self) -> dict[str, Any]:
        return {
            "digest": "sha256:abc123", "sources": [{"path": "/etc/ls/config.yaml", "sha256": "x"}],
            "loadedAt": "2025-01-01T00:00:00Z", "models": 2, "reloading": False,
            "reloads": {"applied": 1, "refused": 1}, "lastReload": None, "watching": None,
            "lastError": {
                "at": "2025-01-01T00:01:00Z", "message": "config.yaml:7:3: models.x.cmd: required",
                "text": "config.yaml:7:3: models.x.cmd: required\n    x:\n    ^",
                "diagnostics": [{"severity": "error", "file": "/etc/ls/config.yaml", "line": 7,
                                 "column": 3, "path": "models.x.cmd", "message": "required"}],
            },
        }


async def test_config_page_shows_the_last_reload_error_with_its_location(serve: Serve) -> None:
    client = await start(serve, ui_plan(), StubReloader())
    _, _, html = await get(client, "/ui/config")
    assert "sha256:abc123" in html and "/etc/ls/config.yaml" in html
    assert "applied: 1, refused: 1" in html
    assert '<code class="where">/etc/ls/config.yaml:7:3</code>' in html
    assert "models.x.cmd" in html and "required" in html
    assert 'data-post="/api/config/reload"' in html


async def test_config_page_without_reload_support(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    _, _, html = await get(client, "/ui/config")
    assert "Config reload is not available" in html and "2 models" in html


async def test_ui_without_slash_redirects_keeping_the_query(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    assert (await get(client, "/ui"))[:2][0] == 301
    status, headers, _ = await get(client, "/ui?source=proxy")
    assert (status, headers["Location"]) == (301, "/ui/?source=proxy")


async def test_static_files_are_served_with_their_type(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    status, headers, body = await get(client, "/ui/app.js")
    assert status == 200 and "javascript" in headers["Content-Type"]
    assert body == (STATIC_DIR / "app.js").read_text()
    status, headers, _ = await get(client, "/ui/style.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    resp = await client.get("/favicon.ico")
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/x-icon"
    assert await resp.read() == (STATIC_DIR / "favicon.ico").read_bytes()


async def test_precompressed_siblings_go_to_clients_that_accept_gzip(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    source = (STATIC_DIR / "app.js").read_bytes()
    gz = await client.get("/ui/app.js", headers={"Accept-Encoding": "gzip"})
    assert gz.status == 200 and gz.headers["Content-Encoding"] == "gzip"
    assert gz.headers["Vary"] == "Accept-Encoding"
    assert "javascript" in gz.headers["Content-Type"]
    assert int(gz.headers["Content-Length"]) == (STATIC_DIR / "app.js.gz").stat().st_size
    assert await gz.read() == source  # (the test client decompresses)
    plain = await client.get("/ui/app.js", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert int(plain.headers["Content-Length"]) == len(source)


def test_every_compressed_sibling_matches_its_source() -> None:
    """scripts/compress_ui.py must be re-run after editing a static file."""
    import gzip

    from scripts.compress_ui import sources

    assert sources(), "no text assets found"
    for path in sources():
        sibling = path.with_name(path.name + ".gz")
        assert sibling.exists(), f"{sibling.name} missing: run scripts/compress_ui.py"
        assert gzip.decompress(sibling.read_bytes()) == path.read_bytes(), (
            f"{sibling.name} is stale: run scripts/compress_ui.py"
        )


async def test_missing_files_404_and_other_paths_fall_back_to_the_models_page(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    for path in ("/ui/missing.js", "/ui/assets/index-123.css", "/ui/a.b/c.d"):
        status, _, body = await get(client, path)
        assert (status, body) == (404, "404 page not found\n"), path
    for path in ("/ui/some/route", "/ui/a.b/c", "/ui/static"):
        status, _, html = await get(client, path)
        assert status == 200 and '<section id="models"' in html, path


async def test_files_outside_the_static_directory_are_never_served(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    for path in ("/ui/%2e%2e/templates/base.html", "/ui/..%2f..%2froutes%2fui.py",
                 "/ui/%2e%2e/%2e%2e/%2e%2e/routes/ui.py"):
        status, _, body = await get(client, path)
        # dot segments are refused before any route (core/limits.py); the client library
        # resolves a "%2e%2e" segment itself, and the path it then sends is no route's
        assert status in (400, 404), path
        assert "{%" not in body and "import" not in body


async def test_ui_pages_require_the_api_key_but_static_files_do_not(serve: Serve) -> None:
    client = await start(serve, ui_plan(apiKeys=("sk-ui",)))
    for path in ("/ui/", "/ui/logs", "/ui/anything", "/ui/x/y"):
        status, headers, _ = await get(client, path)
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="llama-swap"', path
    assert (await get(client, "/ui/app.js"))[0] == 200
    assert (await get(client, "/ui/x.js"))[0] == 404  # a dotted path is a file or a 404
    assert (await client.post("/api/models/load/beta")).status == 401
    assert (await get(client, "/favicon.ico"))[0] == 200
    basic = "Basic " + base64.b64encode(b"anyone:sk-ui").decode()
    status, _, html = await get(client, "/ui/", headers={"Authorization": basic})
    assert status == 200 and 'data-model="org/alpha"' in html
    assert (await get(client, "/ui/app.js", headers={"x-api-key": "sk-ui"}))[0] == 200


async def test_load_of_an_unknown_or_peer_only_model_is_not_found(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    for name in ("nope", "peer-x", ""):
        resp = await client.post(f"/api/models/load/{name}")
        assert resp.status == 404, name
        assert (await resp.json())["error"]["message"] == "model not found"


async def test_ui_routes_are_get_only(serve: Serve) -> None:
    client = await start(serve, ui_plan())
    assert (await client.post("/ui/")).status == 405
    assert (await client.get("/api/models/load/beta")).status == 405


def test_app_serves_the_ui_module() -> None:
    state = create_services(ui_plan())
    app = build_app(state)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/ui", "/ui/{tail}", "/api/models/load/{model}"} <= paths
    assert isinstance(app, web.Application)
