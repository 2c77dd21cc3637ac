"""What the router observes for the budget policy: probes (real subprocesses), the
freshness of their results, pins set from outside, and eviction counts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
import pytest_asyncio

from llama_swap.compiler.plan import Budget, Group, Plan, Routing
from llama_swap.runtime.core.schedulers.base import Evicted
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.observed import (
    PROBE_MAX_AGE,
    Observations,
    parse_probe_output,
    run_probe,
)
from llama_swap.runtime.engine.router import Router
from tests.e2e.conftest import fake_model, make_plan


def test_the_first_number_printed_is_the_probe_result() -> None:
    assert parse_probe_output("23456\n") == 23456.0
    assert parse_probe_output("free: 1200.5 MiB\nfree: 99 MiB") == 1200.5  # one GPU per line: the first
    assert parse_probe_output("no memory info") is None


async def test_a_probe_runs_through_the_shell() -> None:
    assert await run_probe("vram", "echo 12; echo 99") == 12.0


async def test_a_failing_probe_is_logged_and_gives_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llama_swap.router"):
        assert await run_probe("vram", "echo 12; exit 3") is None
        assert await run_probe("vram", "echo nothing") is None
    assert "budget probe vram failed (exit 3" in caplog.text


async def test_a_probe_that_hangs_is_killed_at_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llama_swap.router"):
        assert await run_probe("vram", "sleep 30", timeout=0.2) is None
    assert "budget probe vram timed out" in caplog.text


def test_probe_results_are_fresh_until_a_state_change_or_their_age() -> None:
    now = [100.0]
    obs = Observations(lambda: now[0])
    obs.store((("vram", 500.0), ("ram", None)))
    assert dict(obs.observe({}, frozenset()).free) == {"vram": 500.0, "ram": None}
    now[0] += PROBE_MAX_AGE + 0.1
    assert dict(obs.observe({}, frozenset()).free) == {}
    obs.store((("vram", 7.0),))
    obs.forget_probes()
    assert dict(obs.observe({}, frozenset()).free) == {}


def test_pins_are_the_plans_and_the_ones_set_from_outside() -> None:
    obs = Observations(lambda: 0.0)
    obs.pinned = frozenset({"p"})
    assert obs.observe({}, frozenset({"g"})).pinned == frozenset({"p", "g"})


def test_evictions_are_counted_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    obs = Observations(lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="llama_swap.router"):
        obs.note_evictions("c", (Evicted("b", "vram", "budget vram 20/20 needs 10: evicting b, idle 3 s"),))
        obs.note_evictions("d", (Evicted("a", "vram", "x"), Evicted("c", "maxLoaded", "y")))
    assert obs.evictions == {"vram": 2, "maxLoaded": 1}
    assert "budget vram 20/20 needs 10: evicting b, idle 3 s" in caplog.text


@pytest_asyncio.fixture
async def routers() -> AsyncIterator[list[Router]]:
    out: list[Router] = []
    yield out
    for router in out:
        await router.shutdown(10)


async def test_set_pinned_reaches_the_scheduler_through_the_loop(
    routers: list[Router], tmp_path: Path
) -> None:
    plan = make_plan([fake_model("a", tmp_path / "r.jsonl")], scheduler="fifo")
    plan = replace(
        plan,
        routing=replace(
            plan.routing,
            groups=MappingProxyType({"keep": Group("keep", ("a",), persistent=True)}),
        ),
    )
    router = Router(plan, upstream_log=LogBuffer("upstream"))
    routers.append(router)
    await router.start()
    assert router.observe().pinned == frozenset({"a"})  # the plan's persistent group
    router.set_pinned(frozenset({"x", "y"}))
    for _ in range(100):
        if router.observe().pinned == frozenset({"a", "x", "y"}):
            break
        await asyncio.sleep(0.01)
    assert router.observe().pinned == frozenset({"a", "x", "y"})


async def test_the_router_runs_the_plans_probe_and_keeps_its_result(
    routers: list[Router], tmp_path: Path
) -> None:
    plan = Plan(
        routing=Routing(
            scheduler="fifo",
            router="budget",
            budget=Budget(resources=MappingProxyType({"vram": 100}), probes=MappingProxyType({"vram": "echo 42"})),
        )
    )
    router = Router(plan, upstream_log=LogBuffer("upstream"))
    routers.append(router)
    await router.start()
    router.run_probes(("vram",))
    for _ in range(300):
        if router.observe().free:
            break
        await asyncio.sleep(0.01)
    assert dict(router.observe().free) == {"vram": 42.0}
