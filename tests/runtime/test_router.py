"""The router's run loop with real child processes (the fake upstream), driven in-process.

These pin orderings the pure scheduler tests cannot see: what the loop does with events
that arrive back to back, before any slow work (stops, starts) had a chance to run."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest
import pytest_asyncio

from llama_swap.compiler.plan import Group, Plan
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.router import Router
from tests.e2e.conftest import fake_model, make_plan


@pytest_asyncio.fixture
async def router_for() -> AsyncIterator[list[Router]]:
    routers: list[Router] = []
    yield routers
    for router in routers:
        await router.shutdown(10)


async def start_router(routers: list[Router], plan: Plan) -> Router:
    router = Router(plan, upstream_log=LogBuffer("upstream"))
    routers.append(router)
    await router.start()
    return router


async def test_a_request_right_after_an_unload_is_served_by_a_fresh_start(
    router_for: list[Router], tmp_path: Path
) -> None:
    # fifo: the unload releases the first swap; a request posted right behind the unload
    # starts a second swap to the same model.  The first swap's late (aborted) outcome
    # must not be taken for the second's.
    plan = make_plan(
        [fake_model("a", tmp_path / "served.jsonl", "--start-delay", "0.5")], scheduler="fifo"
    )
    router = await start_router(router_for, plan)
    first = asyncio.ensure_future(router.acquire("a"))
    while router.model_state("a") is None or str(router.model_state("a")) != "starting":
        await asyncio.sleep(0.01)
    unload = asyncio.ensure_future(router.unload(["a"]))
    second = asyncio.ensure_future(router.acquire("a"))  # queued right behind the unload
    await unload
    assert first.done() and first.exception() is not None  # released by the unload
    lease = await asyncio.wait_for(second, 20)
    lease.release()
    assert str(router.model_state("a")) == "ready"


async def test_a_swap_released_by_an_unload_cannot_answer_a_swap_of_a_rebuilt_scheduler(
    router_for: list[Router], tmp_path: Path
) -> None:
    # As above, but a reload that rebuilds the scheduler (a model is added) lands between
    # the unload and the next request: the new scheduler never saw the released swap, so
    # that swap's late (aborted) outcome must be dropped before it reaches the new one.
    record = tmp_path / "served.jsonl"
    a = fake_model("a", record, "--start-delay", "0.5")
    router = await start_router(router_for, make_plan([a], scheduler="fifo"))
    first = asyncio.ensure_future(router.acquire("a"))
    while str(router.model_state("a")) != "starting":
        await asyncio.sleep(0.01)
    old_scheduler = router.scheduler
    unload = asyncio.ensure_future(router.unload(["a"]))
    reload = asyncio.ensure_future(
        router.apply_plan(make_plan([a, fake_model("z", record)], scheduler="fifo"))
    )
    second = asyncio.ensure_future(router.acquire("a"))  # routed by the rebuilt scheduler
    await asyncio.gather(unload, reload)
    assert router.scheduler is not old_scheduler
    assert first.done() and first.exception() is not None  # released by the unload
    lease = await asyncio.wait_for(second, 20)
    lease.release()
    assert str(router.model_state("a")) == "ready"


HANGING_STOP = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "time.sleep(60)\n"
)


async def test_shutdown_out_of_time_kills_what_is_left_before_returning(tmp_path: Path) -> None:
    # The model ignores SIGTERM and its cmdStop hangs (ignoring SIGTERM too): the stop
    # cannot finish within the shutdown timeout, so shutdown SIGKILLs the remaining process
    # groups itself instead of leaving them to the parent-death signal and the orphan guard.
    pid_file = tmp_path / "stopper.pid"
    a = dataclasses.replace(
        fake_model("a", tmp_path / "served.jsonl", "--ignore-sigterm"),
        cmdStop=(sys.executable, "-c", HANGING_STOP, str(pid_file)),
    )
    router = Router(make_plan([a]), upstream_log=LogBuffer("upstream"))
    await router.start()
    stopper: psutil.Process | None = None
    try:
        lease = await asyncio.wait_for(router.acquire("a"), 20)
        lease.release()
        model = psutil.Process(router.processes["a"].pid)
        shutdown = asyncio.ensure_future(router.shutdown(1))
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.01)
        stopper = psutil.Process(int(pid_file.read_text()))
        await asyncio.wait_for(shutdown, 20)
        for proc in (model, stopper):
            assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, proc
        assert router.processes["a"].state is ProcessState.SHUTDOWN
    finally:
        await router.shutdown(1)
        if stopper is not None and stopper.is_running():
            stopper.kill()


def wait_until_dead(pid: int, timeout: float = 10.0) -> None:
    """Block (without yielding to the event loop) until `pid` has exited: gone, or a zombie
    nobody reaped yet.  The loop cannot run meanwhile, so it has not seen the exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.001)
    raise AssertionError(f"pid {pid} still alive {timeout}s after SIGKILL")


@pytest.mark.parametrize("scheduler", ["serial", "fifo"])
async def test_a_request_right_after_a_crash_restarts_the_model_instead_of_failing(
    router_for: list[Router], tmp_path: Path, scheduler: str
) -> None:
    # The model dies and a request arrives before the run loop has processed the exit:
    # the router must not grant it to the dead server (the proxy would answer 502
    # "connection refused") but restart the model and serve it.
    router = await start_router(
        router_for, make_plan([fake_model("a", tmp_path / "served.jsonl")], scheduler=scheduler)
    )
    (await asyncio.wait_for(router.acquire("a"), 20)).release()
    old_pid = router.processes["a"].pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    wait_until_dead(old_pid)
    assert router.processes["a"].state is ProcessState.READY  # the loop has not seen the exit

    lease = await asyncio.wait_for(router.acquire("a"), 20)
    async with lease, aiohttp.ClientSession() as session:
        async with session.post(
            f"{lease.model.proxy}/v1/chat/completions",
            json={"model": "a", "messages": [{"role": "user", "content": "hi"}]},
        ) as resp:
            assert resp.status == 200
            await resp.read()
    assert router.processes["a"].pid not in (None, old_pid)


async def test_an_unload_gives_each_model_its_own_unload_timeout_before_sigkill(
    router_for: list[Router], tmp_path: Path
) -> None:
    # Both models ignore SIGTERM, so each is killed when its own unloadTimeout runs out;
    # the log says which window applied.
    a = dataclasses.replace(
        fake_model("a", tmp_path / "a.jsonl", "--ignore-sigterm"), unloadTimeout=1
    )
    b = dataclasses.replace(
        fake_model("b", tmp_path / "b.jsonl", "--ignore-sigterm"), unloadTimeout=2
    )
    log = LogBuffer("upstream")
    together = {"g": Group("g", ("a", "b"), swap=False, exclusive=False)}
    router = Router(make_plan([a, b], scheduler="fifo", groups=together), upstream_log=log)
    router_for.append(router)
    await router.start()
    for model in ("a", "b"):
        lease = await asyncio.wait_for(router.acquire(model), 20)
        lease.release()
    await asyncio.wait_for(router.unload(), 20)
    history = log.history()
    assert "[a] pid" in history and "still alive after 1s: SIGKILL" in history
    assert "still alive after 2s: SIGKILL" in history
    assert router.unload_grace("a") == 1.0 and router.unload_grace("b") == 2.0
