"""The `serial` scheduler, specified by the effects it asks for.

One global queue in arrival order, at most one request granted-and-unfinished,
and before a model serves every other model has been stopped.  Each test feeds
events to the pure state machine and compares the recorded effects.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap.compiler.plan import Group, Routing
from llama_swap.runtime.core.errors import (
    RouteError,
    health_timeout,
    model_unloaded,
    shutting_down,
    start_failed,
    unknown_model,
)
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers import SerialScheduler, make_scheduler
from llama_swap.runtime.core.schedulers.base import Request
from llama_swap.runtime.core.swappers import GroupSwapper
from tests.fakes import (
    FakeEffects,
    FakeRouter,
    Grant,
    GrantError,
    StartSwap,
    StopProcesses,
    make_models,
    router_actions,
)

READY = ProcessState.READY


def serial(*models: str, ready: tuple[str, ...] = ()) -> tuple[SerialScheduler, FakeEffects]:
    fx = FakeEffects(*models, ready=ready)
    return SerialScheduler(make_models(*models), fx), fx


def req(rid: int, model: str) -> Request:
    return Request(rid, model)


# -- single requests ---------------------------------------------------------


def test_unknown_model_is_answered_404_and_never_queued() -> None:
    s, fx = serial("a")
    s.on_request(req(1, "nope"))
    assert fx.take() == [GrantError(1, unknown_model("nope"))]
    assert s.queued() == () and fx.published == []


def test_ready_model_that_runs_alone_is_granted_without_a_swap() -> None:
    s, fx = serial("a", "b", ready=("a",))
    s.on_request(req(1, "a"))
    assert fx.take() == [Grant(1)]
    assert s.in_flight("a") == 1


def test_stopped_model_is_swapped_in_then_granted() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    assert fx.take() == [StartSwap("a", evict=())]
    assert s.swapping == "a" and s.in_flight("a") == 0
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1)]
    assert s.swapping is None and s.in_flight("a") == 1


def test_every_other_running_model_is_evicted_before_the_head_serves() -> None:
    s, fx = serial("a", "b", "c", "d", ready=("a", "b"))
    fx.set_state("c", ProcessState.STARTING)
    s.on_request(req(1, "a"))  # a is ready but not alone
    assert fx.take() == [StartSwap("a", evict=("b", "c"))]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1)]
    assert fx.running_models() == ["a"]


def test_a_model_still_stopping_is_started_through_a_swap() -> None:
    s, fx = serial("a")
    fx.set_state("a", ProcessState.STOPPING)  # e.g. a TTL stop in progress
    s.on_request(req(1, "a"))
    assert fx.take() == [StartSwap("a", evict=())]


# -- admission --------------------------------------------------------------------


def test_every_request_for_a_known_model_is_admitted_on_arrival_even_when_it_queues() -> None:
    s, fx = serial("a", "b")
    for rid, model in enumerate(("a", "b", "a", "a"), start=1):
        s.on_request(req(rid, model))
    assert fx.admitted == [1, 2, 3, 4]
    assert fx.take() == [StartSwap("a", evict=())]


def test_an_unknown_model_is_not_admitted() -> None:
    s, fx = serial("a")
    s.on_request(req(1, "nope"))
    assert fx.admitted == []


def test_a_caller_gone_before_admission_is_dropped_without_a_load() -> None:
    s, fx = serial("a")
    fx.left_before_admission.add(1)
    s.on_request(req(1, "a"))
    assert fx.take() == [] and s.queued() == ()


# -- order and the single in-flight request -----------------------------------


def test_same_model_requests_are_never_batched() -> None:
    s, fx = serial("a", ready=("a",))
    s.on_request(req(1, "a"))
    s.on_request(req(2, "a"))
    s.on_request(req(3, "a"))
    assert fx.take() == [Grant(1)]
    assert s.in_flight("a") == 1 and [r.id for r in s.queued()] == [2, 3]
    s.on_serve_done("a")
    assert fx.take() == [Grant(2)]
    s.on_serve_done("a")
    assert fx.take() == [Grant(3)]
    s.on_serve_done("a")
    assert fx.take() == [] and s.in_flight("a") == 0


def test_interleaved_models_are_served_in_exact_arrival_order() -> None:
    s, fx = serial("a", "b", ready=("a",))
    for rid, model in enumerate(["a", "b", "a", "b"], start=1):
        s.on_request(req(rid, model))
    assert fx.take() == [Grant(1)]  # request 3 (a, ready) does not overtake request 2
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]
    fx.finish_swap(s, "b")
    assert fx.take() == [Grant(2)]
    s.on_serve_done("b")
    assert fx.take() == [StartSwap("a", evict=("b",))]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(3)]
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]
    fx.finish_swap(s, "b")
    assert fx.take() == [Grant(4)]
    s.on_serve_done("b")
    assert fx.take() == [] and s.queued() == ()


def test_at_most_one_request_is_in_flight_across_all_models() -> None:
    s, fx = serial("a", "b", "c")
    models = ["a", "b", "c", "a", "c", "b", "b"]
    for rid, model in enumerate(models, start=1):
        s.on_request(req(rid, model))
    served: list[int] = []
    for _ in range(50):
        effects = fx.take()
        for effect in effects:
            if isinstance(effect, StartSwap):
                fx.finish_swap(s, effect.model)
            elif isinstance(effect, Grant):
                served.append(effect.request_id)
                assert sum(s.in_flight(m) for m in ("a", "b", "c")) == 1
                assert len(fx.running_models()) == 1
                s.on_serve_done(models[effect.request_id - 1])
        if not effects:
            break
    assert served == [1, 2, 3, 4, 5, 6, 7]


def test_requests_arriving_during_a_swap_wait_behind_the_head() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "b"))
    s.on_request(req(3, "a"))
    assert fx.take() == [StartSwap("a", evict=())]  # one swap at a time
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1)]
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]


def test_serve_done_without_a_grant_is_ignored() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    fx.take()
    s.on_serve_done("b")
    assert fx.take() == [] and s.in_flight("b") == 0


# -- failures ------------------------------------------------------------------


def test_failed_start_fails_the_head_and_fast_fails_queued_same_model_requests() -> None:
    s, fx = serial("a", "b")
    for rid, model in enumerate(["a", "b", "a", "a"], start=1):
        s.on_request(req(rid, model))
    assert fx.take() == [StartSwap("a", evict=())]
    err = start_failed("a", "exit status 1")
    fx.finish_swap(s, "a", err)
    assert fx.take() == [
        GrantError(1, err),
        GrantError(3, err),
        GrantError(4, err),
        StartSwap("b", evict=()),
    ]
    assert [r.id for r in s.queued()] == [2]


def test_a_request_arriving_after_the_failure_tries_again() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "b"))
    fx.finish_swap(s, "a", health_timeout("a", 120))
    s.on_request(req(3, "a"))  # arrives after the failure: queued behind b, not failed
    fx.take()
    fx.finish_swap(s, "b")
    assert fx.take() == [Grant(2)]
    s.on_serve_done("b")
    assert fx.take() == [StartSwap("a", evict=("b",))]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(3)]


def test_failure_still_fast_fails_the_queue_when_the_head_was_cancelled() -> None:
    s, fx = serial("a")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "a"))
    s.on_cancel(1)
    err = health_timeout("a", 5)
    fx.finish_swap(s, "a", err)
    assert fx.take() == [StartSwap("a", evict=()), GrantError(2, err)]


def test_a_stale_swap_done_is_ignored() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    fx.take()
    s.on_swap_done("b", start_failed("b", "x"))
    assert fx.take() == [] and s.swapping == "a"


# -- callers that go away ---------------------------------------------------------


def test_cancel_while_queued_never_triggers_a_load() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "b"))
    s.on_cancel(2)
    fx.finish_swap(s, "a")
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("a", evict=()), Grant(1)]
    assert StartSwap("b", evict=("a",)) not in fx.calls


def test_cancelled_head_lets_its_swap_finish_then_the_next_head_proceeds() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "a"))
    s.on_request(req(3, "b"))
    s.on_cancel(1)
    assert fx.take() == [StartSwap("a", evict=())]  # no second swap while one runs
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(2)]


def test_cancel_after_grant_changes_nothing() -> None:
    s, fx = serial("a", ready=("a",))
    s.on_request(req(1, "a"))
    s.on_cancel(1)
    s.on_cancel(99)
    assert fx.take() == [Grant(1)] and s.in_flight("a") == 1


def test_grant_to_a_gone_caller_is_not_in_flight_and_the_next_head_proceeds() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "b"))
    fx.gone.add(1)
    fx.finish_swap(s, "a")
    assert fx.take() == [StartSwap("a", evict=()), Grant(1, delivered=False), StartSwap("b", evict=("a",))]
    assert s.in_flight("a") == 0


def test_gone_callers_in_a_row_are_skipped_until_one_is_delivered() -> None:
    s, fx = serial("a", ready=("a",))
    fx.gone.update({1, 2})
    s.on_request(req(1, "a"))
    s.on_request(req(2, "a"))
    s.on_request(req(3, "a"))
    assert fx.take() == [Grant(1, delivered=False), Grant(2, delivered=False), Grant(3)]
    assert s.in_flight("a") == 1


# -- crashes, TTL -----------------------------------------------------------------


def test_crash_while_serving_waits_for_serve_done_then_restarts() -> None:
    s, fx = serial("a", ready=("a",))
    s.on_request(req(1, "a"))
    s.on_request(req(2, "a"))
    fx.stop(s, "a")  # crashed under request 1
    assert fx.take() == [Grant(1)]
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("a", evict=())]


def test_ttl_stops_an_idle_ready_model() -> None:
    s, fx = serial("a", ready=("a",))
    s.on_ttl_expired("a")
    assert fx.take() == [StopProcesses(("a",))]


@pytest.mark.parametrize("situation", ["serving", "queued", "swapping", "stopped", "starting"])
def test_ttl_is_ignored_while_the_model_is_used_awaited_or_not_ready(situation: str) -> None:
    s, fx = serial("a", "b", ready=("a",))
    if situation == "serving":
        s.on_request(req(1, "a"))
    elif situation == "queued":
        s.on_request(req(1, "a"))
        s.on_request(req(2, "a"))
    elif situation == "swapping":
        fx.set_state("a", ProcessState.STOPPED)
        s.on_request(req(1, "a"))
        fx.set_state("a", READY)
    elif situation == "stopped":
        fx.set_state("a", ProcessState.STOPPED)
    else:
        fx.set_state("a", ProcessState.STARTING)
    fx.take()
    s.on_ttl_expired("a")
    assert fx.take() == []


# -- unload and shutdown -------------------------------------------------------------


def test_unload_fails_queued_requests_for_the_unloaded_models_and_stops_them() -> None:
    s, fx = serial("a", "b", "c", ready=("a",))
    s.on_request(req(1, "a"))  # granted
    s.on_request(req(2, "b"))
    s.on_request(req(3, "c"))
    s.on_request(req(4, "b"))
    fx.take()
    err = model_unloaded("b")
    s.on_unload(("b",), err)
    assert fx.take() == [GrantError(2, err), GrantError(4, err), StopProcesses(("b",))]
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("c", evict=("a",))]


def test_unload_of_the_swapping_head_fails_it_and_discards_the_swap_outcome() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "b"))
    fx.take()
    err = model_unloaded("a")
    s.on_unload(("a",), err)
    assert fx.take() == [GrantError(1, err), StopProcesses(("a",))]  # b waits for the swap to end
    fx.finish_swap(s, "a", RouteError(503, "[a] aborted"))
    assert fx.take() == [StartSwap("b", evict=())]



def test_unload_while_serving_lets_the_serve_finish() -> None:
    s, fx = serial("a", "b", ready=("a",))
    s.on_request(req(1, "a"))
    s.on_request(req(2, "b"))
    s.on_unload(("a",), model_unloaded("a"))
    assert fx.take() == [Grant(1), StopProcesses(("a",))]
    fx.stop(s, "a")
    assert fx.take() == [] and s.in_flight("a") == 1
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=())]


def test_shutdown_fails_everything_queued_and_later_requests() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "b"))
    s.on_request(req(3, "a"))
    fx.take()
    err = shutting_down()
    s.on_shutdown(err)
    assert fx.take() == [GrantError(1, err), GrantError(2, err), GrantError(3, err)]
    s.on_request(req(4, "a"))
    fx.finish_swap(s, "a")
    assert fx.take() == [GrantError(4, err)]
    assert fx.positions == {}


# -- queue positions ----------------------------------------------------------------


def test_queue_positions_are_published_after_every_change() -> None:
    s, fx = serial("a", "b", ready=("a",))
    s.on_request(req(1, "a"))  # granted at once: nothing queued, nothing to publish
    s.on_request(req(2, "b"))
    s.on_request(req(3, "a"))
    s.on_cancel(2)
    s.on_serve_done("a")
    assert fx.published == [{2: 1}, {2: 1, 3: 2}, {3: 1}, {}]


def test_the_head_waiting_for_its_swap_keeps_position_one() -> None:
    s, fx = serial("a", "b")
    s.on_request(req(1, "a"))
    s.on_request(req(2, "b"))
    assert fx.positions == {1: 1, 2: 2}
    fx.finish_swap(s, "a")
    assert fx.positions == {2: 1}


# -- what serial ignores --------------------------------------------------------------


def test_serial_ignores_groups_and_priority() -> None:
    groups = MappingProxyType(
        {"all": Group("all", ("a", "b"), swap=False, exclusive=False, persistent=True)}
    )
    routing = Routing(scheduler="serial", priority=MappingProxyType({"b": 100}), groups=groups)
    fx = FakeEffects("a", "b", ready=("a",))
    s = make_scheduler(routing, make_models("a", "b"), fx, GroupSwapper(groups, ("a", "b")))
    assert isinstance(s, SerialScheduler)
    s.on_request(req(1, "a"))
    s.on_request(req(2, "a"))
    s.on_request(req(3, "b"))  # highest priority, still last
    assert fx.take() == [Grant(1)]
    s.on_serve_done("a")
    assert fx.take() == [Grant(2)]
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]  # the group says keep a; serial evicts


def test_make_scheduler_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler(Routing(scheduler="lifo"), make_models("a"), FakeEffects("a"), GroupSwapper({}))


# -- randomized: the promises hold for any event order -----------------------------------

MODELS = ("a", "b", "c")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(router_actions(MODELS), max_size=40), st.sets(st.sampled_from(MODELS)))
def test_any_event_order_keeps_one_request_one_model_and_answers_everyone(
    actions: list[tuple[str, str | int]], ready: set[str]
) -> None:
    fx = FakeEffects(*MODELS, ready=sorted(ready))
    router = FakeRouter(SerialScheduler(make_models(*MODELS), fx), fx, {}, exclusive=True)
    router.play(actions)
    assert router.violations == []
    router.settle()
    assert router.violations == []
    assert router.unanswered() == []  # nobody is left waiting once the work is done
    assert router.s.queued() == () and all(router.s.in_flight(m) == 0 for m in MODELS)
    router.request("a")
    router.s.on_shutdown(shutting_down())
    router.collect()
    assert router.violations == [] and router.unanswered() == []


# -- what a hot reload asks of the scheduler ----------------------------------------------


def test_awaits_swap_names_only_the_swap_in_progress() -> None:
    s, fx = serial("a", "b")
    assert not s.awaits_swap("a")
    s.on_request(req(1, "a"))
    assert s.awaits_swap("a") and not s.awaits_swap("b")
    fx.finish_swap(s, "a")
    assert not s.awaits_swap("a")


def test_adopted_in_flight_requests_hold_back_the_next_head_until_they_finish() -> None:
    s, fx = serial("a", "b", ready=("a",))
    s.adopt_in_flight({"a": 1, "b": 0})
    assert s.in_flight("a") == 1 and s.in_flight("b") == 0
    s.on_request(req(1, "b"))
    assert fx.take() == []  # one request at a time: a's adopted request first
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]
