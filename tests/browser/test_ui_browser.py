"""The built-in UI in a real browser, against a real proxy and real fake-upstream models.

What a person would do: load a model and watch it become ready, chat in the playground,
watch a request wait in the Queue view, open a capture from the Activity page, filter a
live log, unload.  Waits are Playwright's (the element or text appears); nothing is
timed.  Screenshots land in test-results/browser/.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from llama_swap.compiler.plan import Model
from tests.browser.conftest import DESKTOP, PHONE
from tests.e2e.conftest import FAKE, Proxy, fake_model, make_plan

KEY = "sk-browser-test"
Shot = Callable[[Any, str], Path]


def post_json(url: str, body: dict[str, Any], key: str | None = None, timeout: float = 60) -> bytes:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def in_background(work: Callable[[], object]) -> threading.Thread:
    """Run a blocking request on a thread; errors surface when the test joins it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported by join_ok
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def join_ok(thread: threading.Thread) -> None:
    thread.join(60)
    assert not thread.is_alive(), "background request did not finish"
    assert not thread.errors, thread.errors  # type: ignore[attr-defined]


def with_loading_state(model: Model) -> Model:
    return replace(model, sendLoadingState=True)


def test_load_a_model_see_it_ready_then_unload(proxy: Callable[..., Proxy], record_file: Path,
                                                 browser: Any, shot: Shot) -> None:
    p = proxy(make_plan([fake_model("slow", record_file, "--start-delay", "3", "--timings", ttl=600),
                         fake_model("other", record_file)]))
    page = browser(DESKTOP).new_page()
    page.goto(p.url + "/ui/")
    row = page.locator('tr[data-model="slow"]')
    assert row.get_attribute("data-state") == "stopped"
    row.get_by_role("button", name="Load", exact=True).click()
    starting = page.locator('tr[data-model="slow"][data-state="starting"]')
    starting.wait_for()
    assert starting.locator(".load progress").is_visible()
    assert "of up to 15 s" in starting.inner_text()
    shot(page, "starting")
    ready = page.locator('tr[data-model="slow"][data-state="ready"]')
    ready.wait_for()
    assert "unloads in" in ready.locator("td.ttl").inner_text()  # TTL countdown while idle
    shot(page, "ready")

    phone = browser(PHONE).new_page()
    phone.goto(p.url + "/ui/")
    phone_row = phone.locator('tr[data-model="slow"][data-state="ready"]')
    phone_row.wait_for()
    shot(phone, "ready-360px")
    # every button of the row is on screen: nothing falls off a narrow window
    phone.wait_for_function(
        "() => Array.from(document.querySelectorAll('tr[data-model=\"slow\"] button')).every("
        "b => { const r = b.getBoundingClientRect(); return r.width > 0 && r.right <= innerWidth; })")

    page.locator('tr[data-model="slow"]').get_by_role("button", name="Unload", exact=True).click()
    page.locator('tr[data-model="slow"][data-state="stopped"]').wait_for()
    shot(page, "unloaded")


def test_playground_streams_a_reply_after_showing_load_progress(
        proxy: Callable[..., Proxy], record_file: Path, browser: Any, shot: Shot) -> None:
    slow = with_loading_state(fake_model("chatty", record_file, "--start-delay", "2.5", "--tokens",
                                         "12", "--token-delay", "0.05", "--timings"))
    p = proxy(make_plan([slow, fake_model("vectors", record_file)]))
    page = browser(PHONE).new_page()
    page.goto(p.url + "/ui/playground")
    page.select_option("#pg-model", "chatty")
    page.fill("#pg-input", "hello there")
    page.click("#pg-send")
    progress = page.locator("#pg-progress")
    progress.get_by_text("Loading chatty").wait_for()
    shot(page, "loading")
    reply = page.locator(".msg.assistant .text").last
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('.msg.assistant .text'); "
        "return r.length && r[r.length - 1].textContent.includes('tok11'); }")
    assert reply.inner_text().startswith("tok0 tok1")
    assert "llama-swap loading model" not in reply.inner_text()  # progress is not the answer
    page.locator("#pg-stats").get_by_text("tokens/s").wait_for()
    assert progress.is_hidden()
    shot(page, "answered")

    page.select_option("#pg-mode", "embeddings")
    page.select_option("#pg-model", "vectors")
    page.fill("#pg-input", "embed me")
    page.click("#pg-send")
    page.locator(".msg.embedding").get_by_text("dimensions").wait_for()
    shot(page, "embeddings")


def test_queue_view_shows_a_request_waiting_behind_a_stream_under_serial(
        proxy: Callable[..., Proxy], record_file: Path, browser: Any, shot: Shot) -> None:
    p = proxy(make_plan([fake_model("streamer", record_file, "--tokens", "40", "--token-delay", "0.25"),
                         fake_model("next", record_file)], scheduler="serial"))
    page = browser(DESKTOP).new_page()
    page.goto(p.url + "/ui/queue")
    streaming = in_background(lambda: post_json(
        p.url + "/v1/chat/completions", {"model": "streamer", "stream": True}))
    page.locator('tr[data-busy-model="streamer"]').wait_for()  # in flight
    waiting = in_background(lambda: post_json(p.url + "/v1/chat/completions", {"model": "next"}))
    queued = page.locator('table.queued tr[data-model="next"]')
    queued.wait_for()
    assert queued.get_attribute("data-position") == "1"
    assert "head" in queued.inner_text()
    assert page.locator(".waiting").inner_text() == "1 waiting"
    shot(page, "waiting")
    phone = browser(PHONE).new_page()
    phone.goto(p.url + "/ui/queue")
    phone.locator('table.queued tr[data-model="next"]').wait_for()
    shot(phone, "waiting-360px")
    join_ok(streaming)
    join_ok(waiting)
    page.get_by_text("No request is waiting.").wait_for()
    # the page's own refreshes are in the log at debug level only (this plan logs debug)
    refreshes = [line for line in p.log_text().splitlines() if '"GET /ui/queue HTTP' in line]
    assert len(refreshes) > 2  # the first page load, then the refreshes
    assert sum("[INFO]" in line for line in refreshes) == 2  # the two pages opened
    assert all("[DEBUG]" in line or "[INFO]" in line for line in refreshes)


def test_activity_row_opens_its_capture_with_credentials_redacted(
        proxy: Callable[..., Proxy], record_file: Path, browser: Any, shot: Shot) -> None:
    p = proxy(make_plan([fake_model("m", record_file, "--tokens", "6", "--token-delay", "0.01",
                                    "--timings")]), api_key=KEY)
    for i in range(3):
        post_json(p.url + "/v1/chat/completions",
                  {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]}, KEY)
    context = browser(DESKTOP, http_credentials={"username": "ui", "password": KEY})
    page = context.new_page()
    page.goto(p.url + "/ui/activity")
    assert page.locator("table.activity tr[data-id]").count() == 3
    assert page.locator("figure.chart svg .dot").count() == 3  # tokens/s over time
    gen = page.locator("table.activity tr[data-id] td.gen").first.inner_text()
    assert gen not in ("", "–") and float(gen) > 0
    shot(page, "activity")
    page.locator("table.activity tr[data-id]").first.locator("a[data-capture]").click()
    dialog = page.locator("#capture-dialog[open]")
    dialog.locator(".request pre.body").get_by_text("question 2").wait_for()
    headers = dialog.locator(".request table.headers").inner_text()
    assert "Authorization" in headers and "[REDACTED]" in headers and KEY not in headers
    assert '"timings"' in dialog.locator(".response pre.body").inner_text()
    shot(page, "capture")
    page.keyboard.press("Escape")
    page.select_option("select[name=status]", "error")  # filters apply on change
    page.get_by_text("No requests yet.").wait_for()
    assert "status=error" in page.url


def test_log_view_renders_colours_and_filters_lines(
        proxy: Callable[..., Proxy], record_file: Path, browser: Any, shot: Shot) -> None:
    script = (r"printf '\033[31mred alert\033[0m plain tail\n'; "
              f"exec {FAKE} --port ${{PORT}} --model colour --record {record_file}")
    colour = fake_model("colour", record_file, cmd=("sh", "-c", script))
    p = proxy(make_plan([colour]))
    post_json(p.url + "/api/models/load/colour", {})
    page = browser(PHONE).new_page()
    page.goto(p.url + "/ui/logs?source=colour")
    red = page.locator("#log .line .a-31")
    red.wait_for()
    assert red.inner_text() == "red alert"
    page.locator("#log .line").get_by_text("listening on").wait_for()
    total = page.locator("#log .line").count()
    assert total >= 2
    shot(page, "colours")
    page.fill("#log-filter", "LISTENING")  # case does not matter
    page.wait_for_function("() => document.querySelectorAll('#log .line').length === 1")
    assert "'colour' pid" in page.locator("#log .line").inner_text()
    assert page.locator("#log .a-31").count() == 0
    assert "1 of" in page.locator("#log-count").inner_text()
    shot(page, "filtered")
    page.fill("#log-filter", "")
    page.wait_for_function(f"() => document.querySelectorAll('#log .line').length >= {total}")


def test_pages_read_without_javascript_and_the_dark_theme_is_kept(
        proxy: Callable[..., Proxy], record_file: Path, browser: Any, shot: Shot) -> None:
    p = proxy(make_plan([fake_model("m", record_file, "--timings")]))
    post_json(p.url + "/api/models/load/m", {})
    post_json(p.url + "/v1/chat/completions", {"model": "m"})
    plain = browser(DESKTOP, java_script_enabled=False).new_page()
    plain.goto(p.url + "/ui/logs?source=m")
    assert "listening on" in plain.locator("#log").inner_text()  # the history, server-rendered
    plain.goto(p.url + "/ui/")
    assert plain.locator('tr[data-model="m"]').get_attribute("data-state") == "ready"
    plain.goto(p.url + "/ui/activity")
    assert plain.locator("table.activity tr[data-id]").count() == 1
    assert plain.locator("#theme").is_hidden()  # a button that needs the script is not offered
    shot(plain, "activity-without-js")

    page = browser(DESKTOP, color_scheme="light").new_page()
    page.goto(p.url + "/ui/activity")
    toggle = page.locator("#theme")
    assert toggle.inner_text() == "theme: auto"
    while toggle.inner_text() != "theme: dark":
        toggle.click()
    background = "() => getComputedStyle(document.body).backgroundColor"
    assert page.evaluate(background) == "rgb(21, 25, 29)"
    page.reload()
    assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
    assert page.evaluate(background) == "rgb(21, 25, 29)"
    assert page.locator("#profile-box").is_hidden()  # no profiles API here: no drop-down
    shot(page, "dark")


def test_the_profile_drop_down_switches_profiles_and_cancel_ends_a_request_in_flight(
        proxy: Callable[..., Proxy], record_file: Path, browser: Any, shot: Shot) -> None:
    """The header's profile drop-down lists the plan's profiles and switches the active one
    through `PUT /api/profiles/active`; a streaming request shows in the in-flight list and
    its Cancel button ends it (the client's stream is cut short)."""
    from types import MappingProxyType

    from llama_swap.compiler.plan import Profile

    plan = make_plan([fake_model("m", record_file, "--tokens", "400", "--token-delay", "0.1")])
    profiles = {
        "coding": Profile(id="coding", description="Coding setup",
                          pins=MappingProxyType({"llm": "m"})),
        "chat": Profile(id="chat", description="", pins=MappingProxyType({"llm": ""})),
    }
    p = proxy(replace(plan, profiles=MappingProxyType(profiles)))
    page = browser(DESKTOP).new_page()
    page.goto(p.url + "/ui/queue")
    select = page.locator("#profile")
    select.wait_for()
    assert page.locator("#profile option").all_inner_texts() == ["none", "chat", "coding"]
    select.select_option("coding")
    page.wait_for_function("() => document.querySelector('#profile').value === 'coding'")
    with urllib.request.urlopen(p.url + "/api/profiles", timeout=10) as resp:
        assert json.loads(resp.read())["active"] == "coding"

    received: list[bytes] = []

    def stream() -> None:
        req = urllib.request.Request(
            p.url + "/v1/chat/completions",
            json.dumps({"model": "llm", "stream": True}).encode(),
            {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                while chunk := resp.read(256):
                    received.append(chunk)
        except (OSError, http.client.IncompleteRead):  # the cut connection, as a client
            pass  # sees it: a reset, or a chunked body that stops before its last chunk

    streaming = in_background(stream)
    row = page.locator("#inflight-box tr[data-inflight]")
    row.wait_for()
    assert "POST /v1/chat/completions" in row.inner_text()
    shot(page, "profile-and-inflight")
    row.get_by_role("button", name="Cancel").click()
    join_ok(streaming)  # 400 tokens at 0.1 s would take 40 s: it ended because it was cancelled
    body = b"".join(received)
    assert b"data: [DONE]" not in body
    page.locator("#inflight-box tr[data-inflight]").wait_for(state="detached")
