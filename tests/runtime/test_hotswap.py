"""Hot swap on the router's run loop, with real model processes (the fake upstream).

Leases stand in for requests in flight (no HTTP needed at this level): holding a
lease is a streaming response in progress; releasing it is the response ending.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from llama_swap.compiler.plan import Budget, Model, Plan, Routing, Settings
from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.router import Router
from tests.e2e.procs import free_port

FAKE = str(Path(sys.executable).parent / "swap-fake-upstream")
WAIT = 20.0


def fake(mid: str, *extra: str, port: int | None = None, **kw: Any) -> Model:
    port = port or free_port()
    return Model(
        id=mid,
        cmd=(FAKE, "--port", str(port), "--model", mid, *extra),
        cmdStop=None,
        proxy=f"http://127.0.0.1:{port}",
        checkEndpoint="/health",
        ttl=0,
        **kw,
    )


def plan_of(*models: Model, scheduler: str = "fifo") -> Plan:
    from llama_swap.compiler.plan import Group

    # One non-swapping group: models may run side by side under fifo.
    groups = {"all": Group("all", tuple(sorted(m.id for m in models)), swap=False, exclusive=False)}
    return Plan(
        settings=Settings(healthCheckTimeout=15),
        routing=Routing(scheduler=scheduler, groups=MappingProxyType(groups)),
        models=MappingProxyType({m.id: m for m in sorted(models, key=lambda m: m.id)}),
    )


@pytest.fixture
async def make_router() -> AsyncIterator[Any]:
    routers: list[Router] = []

    async def make(plan: Plan) -> Router:
        r = Router(plan, upstream_log=LogBuffer("upstream"))
        await r.start()
        routers.append(r)
        return r

    yield make
    for r in routers:
        await r.shutdown(10)


async def wait_until(cond: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_unchanged_model_keeps_its_process_and_lease_while_a_changed_one_restarts(
    make_router: Any,
) -> None:
    a, b = fake("a"), fake("b")
    router = await make_router(plan_of(a, b))
    lease_a = await router.acquire("a")
    lease_b = await router.acquire("b")
    pid_a, pid_b = router.processes["a"].pid, router.processes["b"].pid

    b2 = dataclasses.replace(b, cmd=(*b.cmd, "--tokens", "7"))
    diff = await router.apply_plan(plan_of(a, b2))
    assert diff.kept == ("a",) and diff.changed_restart == ("b",)

    # a: untouched. b: still alive and serving its lease, but no longer grantable.
    assert router.processes["a"].pid == pid_a
    assert router.processes["a"].state is ProcessState.READY
    assert router.processes["b"].pid == pid_b
    assert router.processes["b"].state is ProcessState.STOPPING
    assert lease_b.model.cmd == b.cmd  # the in-flight request keeps its definition

    # A new request for b waits for the old process to finish its work.
    waiting = asyncio.ensure_future(router.acquire("b"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    lease_b.release()
    lease_b2 = await asyncio.wait_for(waiting, WAIT)
    assert lease_b2.model.cmd == b2.cmd
    assert router.processes["b"].pid not in (None, pid_b)
    assert router.processes["a"].pid == pid_a
    lease_b2.release()
    lease_a.release()


async def test_a_changed_model_that_is_idle_is_stopped_at_once(make_router: Any) -> None:
    a = fake("a")
    router = await make_router(plan_of(a))
    (await router.acquire("a")).release()
    old_pid = router.processes["a"].pid
    await router.apply_plan(plan_of(dataclasses.replace(a, env=("X=1",))))
    await wait_until(lambda: router.processes["a"].state is ProcessState.STOPPED, "a stopped")
    assert type(router.processes["a"]).__name__ == "ModelProcess"  # the slot was unwrapped
    lease = await router.acquire("a")
    assert router.processes["a"].pid != old_pid
    assert lease.model.env == ("X=1",)
    lease.release()


async def test_live_changes_apply_without_a_restart(make_router: Any) -> None:
    a = fake("a")
    router = await make_router(plan_of(a))
    (await router.acquire("a")).release()
    pid = router.processes["a"].pid
    diff = await router.apply_plan(plan_of(dataclasses.replace(a, ttl=300, name="Alpha")))
    assert diff.changed_live == ("a",)
    assert router.processes["a"].pid == pid
    assert router.processes["a"].state is ProcessState.READY
    lease = await router.acquire("a")
    assert lease.model.ttl == 300 and lease.model.name == "Alpha"
    lease.release()


async def test_removed_model_fails_its_queued_requests_and_stops_once_idle(
    make_router: Any,
) -> None:
    a = fake("a", concurrencyLimit=1)
    b = fake("b")
    router = await make_router(plan_of(a, b))
    lease = await router.acquire("a")
    pid_a = router.processes["a"].pid
    # With the limit at 1 a second request for a would get 429; under serial it queues.
    router2 = await make_router(plan_of(fake("c"), scheduler="serial"))
    held = await router2.acquire("c")
    queued = asyncio.ensure_future(router2.acquire("c"))
    await asyncio.sleep(0.1)
    await router2.apply_plan(plan_of(fake("d"), scheduler="serial"))
    with pytest.raises(RouteFailure) as failure:
        await asyncio.wait_for(queued, WAIT)
    assert failure.value.error.status == 503
    assert "removed from the configuration" in failure.value.error.message
    assert router2.processes["c"].state is ProcessState.STOPPING  # still serving `held`
    held.release()
    await wait_until(lambda: "c" not in router2.processes, "c forgotten")

    # The first router: removing a busy model keeps it until its request ends.
    diff = await router.apply_plan(plan_of(b))
    assert diff.removed == ("a",)
    assert router.processes["a"].pid == pid_a
    lease.release()
    await wait_until(lambda: "a" not in router.processes, "a forgotten")
    with pytest.raises(RouteFailure) as unknown:
        await router.acquire("a")
    assert unknown.value.error.status == 404


async def test_added_models_are_simply_available(make_router: Any) -> None:
    a = fake("a")
    router = await make_router(plan_of(a))
    await router.apply_plan(plan_of(a, fake("n")))
    lease = await router.acquire("n")
    assert router.processes["n"].state is ProcessState.READY
    lease.release()


async def test_switching_scheduler_keeps_in_flight_counts(make_router: Any) -> None:
    a, b = fake("a"), fake("b")
    router = await make_router(plan_of(a, b, scheduler="fifo"))
    lease_a = await router.acquire("a")
    pid_a = router.processes["a"].pid
    diff = await router.apply_plan(plan_of(a, b, scheduler="serial"))
    assert diff.routing_changed
    assert type(router.scheduler).__name__ == "SerialScheduler"
    assert router.scheduler.in_flight("a") == 1
    # serial serves one request at a time and evicts a before b: b must wait for lease_a.
    waiting_b = asyncio.ensure_future(router.acquire("b"))
    await asyncio.sleep(0.2)
    assert not waiting_b.done()
    assert router.processes["a"].pid == pid_a  # never evicted while busy
    lease_a.release()
    lease_b = await asyncio.wait_for(waiting_b, WAIT)
    assert router.processes["a"].state is ProcessState.STOPPED
    lease_b.release()


async def test_requests_waiting_for_a_start_survive_a_scheduler_rebuild(make_router: Any) -> None:
    a = fake("a", "--start-delay", "0.5")
    router = await make_router(plan_of(a, scheduler="serial"))
    waiting = [asyncio.ensure_future(router.acquire("a")) for _ in range(2)]
    await wait_until(lambda: router.processes["a"].state is ProcessState.STARTING, "a starting")
    await router.apply_plan(plan_of(a, fake("z"), scheduler="fifo"))
    leases = await asyncio.wait_for(asyncio.gather(*waiting), WAIT)
    for lease in leases:
        lease.release()
    assert router.processes["a"].state is ProcessState.READY


async def test_a_model_changed_while_starting_still_serves_its_waiters(make_router: Any) -> None:
    a = fake("a", "--start-delay", "0.3")
    router = await make_router(plan_of(a))
    waiting = asyncio.ensure_future(router.acquire("a"))
    await wait_until(lambda: router.processes["a"].state is ProcessState.STARTING, "a starting")
    a2 = dataclasses.replace(a, env=("GEN=2",))
    await router.apply_plan(plan_of(a2))
    lease = await asyncio.wait_for(waiting, WAIT)
    assert lease.model.env == ()  # routed before the reload: served by the old definition
    old_pid = router.processes["a"].pid
    later = asyncio.ensure_future(router.acquire("a"))
    lease.release()
    lease2 = await asyncio.wait_for(later, WAIT)
    assert lease2.model.env == ("GEN=2",)
    assert router.processes["a"].pid != old_pid
    lease2.release()


async def test_a_plan_the_router_cannot_use_changes_nothing(make_router: Any) -> None:
    a = fake("a")
    router = await make_router(plan_of(a))
    bad = dataclasses.replace(plan_of(a, fake("b")), routing=Routing(router="matrix", matrix=None))
    with pytest.raises(ValueError):
        await router.apply_plan(bad)
    assert set(router.processes) == {"a"}
    assert router.plan.routing.router == "group"


async def test_new_declared_sizes_rebuild_the_budget_without_restarting_the_models(
    make_router: Any,
) -> None:
    def budget_plan(size_b: float) -> Plan:
        a = fake("a", port=ports["a"], resources=MappingProxyType({"vram": 10}))
        b = fake("b", port=ports["b"], resources=MappingProxyType({"vram": size_b}))
        return Plan(
            settings=Settings(healthCheckTimeout=15),
            routing=Routing(
                scheduler="fifo",
                router="budget",
                budget=Budget(resources=MappingProxyType({"vram": 20})),
            ),
            models=MappingProxyType({"a": a, "b": b}),
        )

    ports = {"a": free_port(), "b": free_port()}
    router = await make_router(budget_plan(10))
    for m in ("a", "b"):
        (await router.acquire(m)).release()
    assert router.running_models() == ["a", "b"]  # 10 + 10 fit in 20
    pid_a = router.processes["a"].pid
    diff = await router.apply_plan(budget_plan(15))
    assert diff.changed_live == ("b",) and diff.changed_restart == ()
    assert router.processes["a"].pid == pid_a  # a size is not a reason to restart
    await router.unload(["b"])
    (await router.acquire("a")).release()
    (await router.acquire("b")).release()  # 10 + 15 > 20 now: a makes room
    assert router.running_models() == ["b"]
