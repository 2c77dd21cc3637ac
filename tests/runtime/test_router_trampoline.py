"""The router's run loop is a trampoline: an event is handled on the stack of whoever
posts it, unless one is being handled already, in which case it waits in order.

What these pin: events are handled one at a time and whole (an event posted during
the handling of another is not handled inside it), in the order they were posted,
before the outer `post` returns; nothing is handled before `start()`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.core.schedulers.base import Request
from llama_swap.runtime.engine.events import Lease, RequestArrived
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.router import Router
from tests.e2e.conftest import fake_model, make_plan


@pytest_asyncio.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    r = Router(make_plan([fake_model("a", tmp_path / "served.jsonl")], scheduler="fifo"),
               upstream_log=LogBuffer("upstream"))
    yield r
    await r.shutdown(10)


def arrival(rid: int, model: str, **callbacks: object) -> tuple[RequestArrived, asyncio.Future[Lease]]:
    future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
    return RequestArrived(Request(rid, model), future, **callbacks), future  # type: ignore[arg-type]


def status_of(future: asyncio.Future[Lease]) -> int:
    error = future.exception()
    assert isinstance(error, RouteFailure)
    return error.error.status


async def test_an_event_is_handled_before_post_returns(router: Router) -> None:
    await router.start()
    event, future = arrival(1001, "nope")
    router.post(event)
    assert future.done() and status_of(future) == 404  # no task switch in between


async def test_nothing_is_handled_before_start_then_everything_in_order(router: Router) -> None:
    answered: list[int] = []
    futures = []
    for rid in (1001, 1002, 1003):
        event, future = arrival(rid, "nope")
        future.add_done_callback(lambda _, rid=rid: answered.append(rid))
        router.post(event)
        futures.append(future)
    await asyncio.sleep(0)
    assert not any(f.done() for f in futures)
    await router.start()
    assert all(f.done() and status_of(f) == 404 for f in futures)
    await asyncio.sleep(0)  # done callbacks run in the order the futures were answered
    assert answered == [1001, 1002, 1003]


async def test_events_posted_while_one_is_handled_wait_for_it_then_run_in_order(
    router: Router,
) -> None:
    await router.start()
    inner = [arrival(2001, "nope"), arrival(2002, "nope")]
    seen_inside: list[bool] = []
    answered: list[int] = []
    for (_, future), rid in zip(inner, (2001, 2002), strict=True):
        future.add_done_callback(lambda _, rid=rid: answered.append(rid))

    def admitted() -> None:  # called while the outer arrival is being handled
        for event, _ in inner:
            router.post(event)
        seen_inside.append(any(f.done() for _, f in inner))

    outer, granted = arrival(2000, "a", on_admitted=admitted)
    router.post(outer)
    assert seen_inside == [False]  # queued, not handled inside the outer event
    assert all(f.done() and status_of(f) == 404 for _, f in inner)  # ...but before post returned
    await asyncio.sleep(0)
    assert answered == [2001, 2002]
    lease = await asyncio.wait_for(granted, 20)  # the outer request is served normally
    lease.release()
    assert router.in_flight("a") == 0


async def test_a_request_refused_at_once_never_suspends_its_caller(router: Router) -> None:
    await router.start()
    waiting = asyncio.ensure_future(router.acquire("nope"))
    await asyncio.sleep(0)  # one step of the task: it posts, is answered, and raises
    assert waiting.done()
    with pytest.raises(RouteFailure):
        waiting.result()
