"""Model servers that fail to start or to stop, and what a client sees of it.

- one that never becomes healthy: 503 once healthCheckTimeout has passed, and its
  process is gone by the time the answer arrives;
- one that exits while starting: 502 at once (not after the health timeout), quoting its
  last output;
- one that ignores SIGTERM: an unload SIGKILLs it after the stop grace and then returns;
  nothing is left.
"""

from __future__ import annotations

import dataclasses
import time

import aiohttp

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.engine.router import STOP_GRACE
from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.test_serial import post_chat
from tests.faults.conftest import Site, gone, running


def plan_of(model: Model, *, health_timeout: int) -> Plan:
    """A one-model plan whose upstream log is echoed on stdout too."""
    plan = make_plan([model], health_timeout=health_timeout)
    return dataclasses.replace(
        plan, settings=dataclasses.replace(plan.settings, logToStdout="both")
    )


async def test_a_model_that_never_becomes_healthy_gets_503_after_the_timeout_and_is_gone(
    site: Site,
) -> None:
    p = site.proxy(plan_of(fake_model("a", site.record, "--fail", "never-healthy"), health_timeout=15))
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        status, body = await post_chat(s, p.url, "a")
        elapsed = time.monotonic() - t0
        assert status == 503, body
        assert "health check timed out after 15s" in body["error"]["message"]  # (15 s: the minimum)
        assert 15.0 <= elapsed < 15.0 + STOP_GRACE, elapsed
        assert p.children() == []
        assert await running(s, p.url) == []


async def test_a_model_that_exits_while_starting_gets_502_at_once_with_its_last_output(
    site: Site,
) -> None:
    p = site.proxy(plan_of(fake_model("a", site.record, "--fail", "exit-on-start"), health_timeout=60))
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        status, body = await post_chat(s, p.url, "a")
        elapsed = time.monotonic() - t0
        assert status == 502, body
        assert "exited prematurely with code 1" in body["error"]["message"]
        assert "failed to load the model (exit-on-start)" in body["error"]["message"]
        assert elapsed < 10, elapsed  # its exit ended the start, not the 60 s health timeout
        assert p.children() == []
        assert await running(s, p.url) == []


async def test_a_model_ignoring_sigterm_is_killed_after_the_grace_and_unload_returns(
    site: Site,
) -> None:
    """An unload waits the model's unloadTimeout (here 3 s, not the default) for the
    process to exit, then kills it."""
    grace = 3
    model = dataclasses.replace(fake_model("a", site.record, "--ignore-sigterm"), unloadTimeout=grace)
    p = site.proxy(plan_of(model, health_timeout=15))
    async with aiohttp.ClientSession() as s:
        status, body = await post_chat(s, p.url, "a")
        assert status == 200, body
        pid = body["fake"]["pid"]

        t0 = time.monotonic()
        async with s.post(f"{p.url}/api/models/unload") as resp:
            assert resp.status == 200
        elapsed = time.monotonic() - t0
        assert grace - 0.5 <= elapsed, elapsed  # it was given its grace
        assert gone(pid)
        assert p.children() == []
        assert await running(s, p.url) == []
    log = p.log_text()
    assert "fake upstream: ignoring SIGTERM" in log
    assert f"pid {pid} still alive after {grace:g}s: SIGKILL" in log
