"""A real headless Chromium driving the built-in UI of a real `llama-swap` subprocess.

The browser is Debian's `chromium` package driven by Playwright for Python through
`executable_path` (browsers are never downloaded: `playwright install` is not used).
scripts/test.sh installs both and exports CHROMIUM_BIN, which makes these tests fail,
rather than skip, when the browser is missing.  Each test saves PNG screenshots under
`test-results/browser/` (git-ignored) so a person can look at the pages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llama_swap.compiler.plan import Plan, plan_to_json
from tests.e2e.conftest import LLAMA_SWAP, Proxy, launch

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parents[2] / "test-results" / "browser"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}

try:
    from playwright.sync_api import BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None


def _available() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if sync_playwright is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    """Playwright's driver for one test module: its sync API keeps an event loop running
    while it is started, so it must be stopped before asyncio tests of other modules run."""
    missing = _available()
    if missing is not None:
        if os.environ.get("CHROMIUM_BIN"):
            pytest.fail(missing)
        pytest.skip(missing)
    assert sync_playwright is not None
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright_driver: Any, tmp_path: Path) -> Iterator[Callable[..., BrowserContext]]:
    """Factory: a fresh Chromium (its own user-data-dir) with the given viewport and
    HTTP credentials; closed after the test."""
    opened: list[BrowserContext] = []

    def open_browser(viewport: dict[str, int] = DESKTOP, **kw: Any) -> BrowserContext:
        profile = tmp_path / f"chromium-{len(opened)}"
        context = playwright_driver.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport=viewport, **kw,
        )
        context.set_default_timeout(30_000)
        opened.append(context)
        return context

    yield open_browser
    for context in opened:
        context.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """`shot(page, label)`: a full-page PNG named after the test and the label."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def take(page: Page, label: str) -> Path:
        path = RESULTS / f"{base}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def record_file(tmp_path: Path) -> Path:
    return tmp_path / "served.jsonl"


@pytest.fixture
def proxy(tmp_path: Path, record_file: Path) -> Iterator[Callable[..., Proxy]]:
    """`proxy(plan, api_key=None)`: llama-swap on that plan, listening on a free port."""
    started: list[Proxy] = []

    def start(plan: Plan, api_key: str | None = None) -> Proxy:
        if api_key:
            plan = replace(plan, settings=replace(plan.settings, apiKeys=(api_key,)))
        path = tmp_path / f"plan{len(started)}.json"
        path.write_text(plan_to_json(plan))
        argv = [LLAMA_SWAP, "--plan", str(path), "--listen", "127.0.0.1:0"]
        return launch(argv, record_file, started)

    yield start
    for p in started:
        p.stop()
