"""The `fifo` scheduler (the Go original's FIFO), specified by the effects it asks for.

Mirrors the Go original's scheduler tests (collation, queueing behind swaps,
eviction of idle models only, concurrency limits, unload and shutdown) plus
our additions (process stopped, TTL expiry, queue positions).  Most tests use
`StubSwapper`, a fixed evict list per target, so each decision is explicit.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap.compiler.plan import Group, Routing
from llama_swap.runtime.core.errors import (
    RouteError,
    model_unloaded,
    shutting_down,
    start_failed,
    too_many_requests,
    unknown_model,
)
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers import FifoScheduler, make_scheduler
from llama_swap.runtime.core.schedulers.base import Request
from llama_swap.runtime.core.swappers import GroupSwapper
from tests.fakes import (
    FakeEffects,
    FakeRouter,
    Grant,
    GrantError,
    StartSwap,
    StopProcesses,
    StubSwapper,
    make_models,
    router_actions,
)

READY = ProcessState.READY
TOO_MANY = too_many_requests()


def fifo(
    *models: str,
    ready: tuple[str, ...] = (),
    evict: dict[str, tuple[str, ...]] | None = None,
    limits: dict[str, int] | None = None,
    priority: dict[str, int] | None = None,
) -> tuple[FifoScheduler, FakeEffects]:
    fx = FakeEffects(*models, ready=ready)
    s = FifoScheduler(make_models(*models, limits=limits), fx, StubSwapper(evict), priority)
    return s, fx


class Ids:
    """Hands out request ids in order: `r("a")` -> Request(1, "a"), then 2, ..."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, model: str) -> Request:
        self.next += 1
        return Request(self.next, model)


@pytest.fixture
def r() -> Ids:
    return Ids()


# -- the decision tree -----------------------------------------------------------


def test_a_ready_model_running_alone_is_granted_without_asking_the_eviction_policy(
    r: Ids,
) -> None:
    """Nothing else runs, so no policy could evict anything: the swapper's view is not built
    (a policy that would still name something to evict is not consulted)."""
    fx = FakeEffects("a", "b", ready=("a",))
    swapper = StubSwapper({"a": ("b",)})
    s = FifoScheduler(make_models("a", "b"), fx, swapper)
    s.on_request(r("a"))
    assert fx.take() == [Grant(1)] and swapper.described == []
    fx.set_state("b", READY)  # now another model runs: the policy decides again
    s.on_serve_done("a")
    s.on_request(r("a"))
    assert swapper.described == [("a", ("a", "b"))]


def test_fast_path_grants_a_ready_model_without_a_swap(r: Ids) -> None:
    s, fx = fifo("a", ready=("a",))
    s.on_request(r("a"))
    assert fx.take() == [Grant(1)]
    assert s.in_flight("a") == 1


def test_unknown_model_is_answered_404_without_a_swap(r: Ids) -> None:
    s, fx = fifo("a")
    s.on_request(r("ghost"))
    assert fx.take() == [GrantError(1, unknown_model("ghost"))]


def test_stopped_model_swaps_then_serves(r: Ids) -> None:
    s, fx = fifo("a")
    s.on_request(r("a"))
    assert fx.take() == [StartSwap("a")]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1)]


def test_requests_join_the_in_flight_swap_for_their_model(r: Ids) -> None:
    s, fx = fifo("a")
    for _ in range(3):
        s.on_request(r("a"))
    assert fx.take() == [StartSwap("a")]
    assert fx.published == []  # joined waiters are not queued
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1), Grant(2), Grant(3)]
    assert s.in_flight("a") == 3


def test_swap_error_fails_every_waiter(r: Ids) -> None:
    s, fx = fifo("a")
    s.on_request(r("a"))
    s.on_request(r("a"))
    err = start_failed("a", "boom")
    fx.finish_swap(s, "a", err)
    assert fx.take() == [StartSwap("a"), GrantError(1, err), GrantError(2, err)]
    assert s.in_flight("a") == 0 and s.active_swaps() == {}


def test_request_evicting_the_loading_model_waits_for_its_swap_and_its_serve(r: Ids) -> None:
    s, fx = fifo("a", "b", evict={"b": ("a",)})
    s.on_request(r("a"))
    s.on_request(r("b"))  # collides: a is the target of an active swap
    assert fx.take() == [StartSwap("a")]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1)]  # b would now evict a busy model
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]


def test_disjoint_swaps_run_in_parallel(r: Ids) -> None:
    s, fx = fifo("a", "b")
    s.on_request(r("a"))
    s.on_request(r("b"))
    assert fx.take() == [StartSwap("a"), StartSwap("b")]
    assert s.active_swaps() == {"a": (), "b": ()}


def test_overlapping_evict_sets_do_not_run_in_parallel(r: Ids) -> None:
    s, fx = fifo("a", "b", "x", ready=("x",), evict={"a": ("x",), "b": ("x",)})
    s.on_request(r("a"))
    s.on_request(r("b"))
    assert fx.take() == [StartSwap("a", evict=("x",))]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1), StartSwap("b", evict=("x",))]


def test_a_swap_that_would_evict_our_target_blocks_even_the_fast_path(r: Ids) -> None:
    s, fx = fifo("a", "b", ready=("a",), evict={"b": ("a",)})
    fx.set_state("b", ProcessState.STOPPED)
    s.on_request(r("b"))  # starts: evicts idle a
    s.on_request(r("a"))  # a is still READY, but the active swap is evicting it
    assert fx.take() == [StartSwap("b", evict=("a",))]
    assert [q.id for q in s.queued()] == [2]


def test_one_swap_completion_promotes_several_queued_requests(r: Ids) -> None:
    s, fx = fifo("a", "b", "c", evict={"a": ("b", "c")})
    s.on_request(r("a"))
    s.on_request(r("b"))
    s.on_request(r("c"))
    assert fx.take() == [StartSwap("a", evict=("b", "c"))]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1), StartSwap("b"), StartSwap("c")]


def test_collation_a_b_c_a_b_c_is_served_a_a_b_b_c_c(r: Ids) -> None:
    everyone_else = {"a": ("b", "c"), "b": ("a", "c"), "c": ("a", "b")}
    s, fx = fifo("a", "b", "c", evict=everyone_else)
    for model in "abcabc":
        s.on_request(r(model))
    for model in "abc":
        fx.finish_swap(s, model)
        s.on_serve_done(model)
        s.on_serve_done(model)
    swaps = [c.model for c in fx.calls if isinstance(c, StartSwap)]
    grants = [c.request_id for c in fx.calls if isinstance(c, Grant)]
    assert swaps == ["a", "b", "c"]
    assert grants == [1, 4, 2, 5, 3, 6]


def test_no_swap_while_the_evicted_model_is_serving(r: Ids) -> None:
    s, fx = fifo("a", "b", ready=("a",), evict={"b": ("a",)})
    s.on_request(r("a"))
    s.on_request(r("a"))
    s.on_request(r("b"))
    s.on_serve_done("a")
    assert fx.take() == [Grant(1), Grant(2)]
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]


def test_grant_to_a_gone_caller_does_not_leak_in_flight(r: Ids) -> None:
    s, fx = fifo("a", "b", evict={"b": ("a",)})
    fx.gone.add(1)
    s.on_request(r("a"))
    fx.finish_swap(s, "a")
    assert s.in_flight("a") == 0
    s.on_request(r("b"))
    assert fx.take() == [StartSwap("a"), Grant(1, delivered=False), StartSwap("b", evict=("a",))]


def test_later_queued_entries_may_overtake_blocked_ones(r: Ids) -> None:
    s, fx = fifo("a", "b", "c", ready=("a",), evict={"b": ("a",)})
    s.on_request(r("a"))  # a busy
    s.on_request(r("b"))  # blocked: would evict busy a
    s.on_request(r("c"))  # free to go
    assert fx.take() == [Grant(1), StartSwap("c")]
    assert [q.id for q in s.queued()] == [2]


# -- shutdown and unload ------------------------------------------------------------


def test_shutdown_fails_every_waiter_and_queued_request(r: Ids) -> None:
    s, fx = fifo("a", "b", "c", evict={"c": ("a", "b")})
    for model in "aabbc":
        s.on_request(r(model))
    fx.take()
    err = shutting_down()
    s.on_shutdown(err)
    assert sorted(c.request_id for c in fx.take() if isinstance(c, GrantError)) == [1, 2, 3, 4, 5]
    s.on_request(r("a"))
    s.on_swap_done("a", None)
    assert fx.take() == [GrantError(6, err)]
    assert fx.positions == {}


def test_unload_releases_swap_waiters_and_stops_the_model(r: Ids) -> None:
    s, fx = fifo("a")
    s.on_request(r("a"))
    s.on_request(r("a"))
    err = model_unloaded("a")
    s.on_unload(("a",), err)
    assert fx.take() == [StartSwap("a"), GrantError(1, err), GrantError(2, err), StopProcesses(("a",))]
    fx.finish_swap(s, "a")  # the released swap's outcome is dropped
    assert fx.take() == []


def test_a_swap_released_by_unload_does_not_answer_a_later_swap_to_the_same_model(
    r: Ids,
) -> None:
    s, fx = fifo("a")
    s.on_request(r("a"))
    err = model_unloaded("a")
    s.on_unload(("a",), err)
    fx.set_state("a", ProcessState.STOPPED)
    s.on_request(r("a"))  # arrives after the unload: a swap of its own
    assert fx.take() == [StartSwap("a"), GrantError(1, err), StopProcesses(("a",)), StartSwap("a")]
    aborted = RouteError(503, "[a] aborted")
    s.on_swap_done("a", aborted)  # the released swap ends first (its start was aborted)
    assert fx.take() == []  # not request 2's answer
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(2)]


def test_unload_drops_queued_requests_which_never_start(r: Ids) -> None:
    s, fx = fifo("a", "b", evict={"b": ("a",)})
    s.on_request(r("a"))
    s.on_request(r("b"))
    err = model_unloaded("b")
    s.on_unload(("b",), err)
    fx.finish_swap(s, "a")
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("a"), GrantError(2, err), StopProcesses(("b",)), Grant(1)]


def test_unload_keeps_in_flight_counts_until_serve_done(r: Ids) -> None:
    s, fx = fifo("a", "b", ready=("a",), evict={"b": ("a",)})
    s.on_request(r("a"))
    s.on_request(r("b"))
    s.on_unload(("a",), model_unloaded("a"))
    assert s.in_flight("a") == 1
    assert fx.take() == [Grant(1), StopProcesses(("a",))]  # b still waits for the dying serve
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]


# -- priority ------------------------------------------------------------------------


def test_queue_is_ordered_by_descending_priority_then_arrival(r: Ids) -> None:
    models = ("z", "A", "B", "C", "D")
    blocked_by_z = {m: ("z",) for m in "ABCD"}
    s, fx = fifo(*models, evict=blocked_by_z, priority={"A": 10, "B": 5, "C": 5, "D": 1})
    s.on_request(r("z"))  # loading
    for model in "BDCA":
        s.on_request(r(model))
    assert [q.model for q in s.queued()] == ["A", "B", "C", "D"]
    assert fx.positions == {5: 1, 2: 2, 4: 3, 3: 4}


def test_priority_comes_from_the_routing_through_make_scheduler(r: Ids) -> None:
    routing = Routing(scheduler="fifo", priority=MappingProxyType({"b": 3}))
    fx = FakeEffects("x", "a", "b")
    s = make_scheduler(routing, make_models("x", "a", "b"), fx, StubSwapper({"a": ("x",), "b": ("x",)}))
    assert isinstance(s, FifoScheduler)
    s.on_request(r("x"))
    s.on_request(r("a"))
    s.on_request(r("b"))
    assert [q.model for q in s.queued()] == ["b", "a"]


# -- cancellation ------------------------------------------------------------------


def test_cancelled_queued_request_never_triggers_a_load(r: Ids) -> None:
    s, fx = fifo("a", "b", evict={"b": ("a",)})
    s.on_request(r("a"))
    s.on_request(r("b"))
    s.on_cancel(2)
    fx.finish_swap(s, "a")
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("a"), Grant(1)]
    assert fx.published == [{2: 1}, {}]


def test_cancelled_swap_waiter_is_not_granted(r: Ids) -> None:
    s, fx = fifo("a")
    s.on_request(r("a"))
    s.on_request(r("a"))
    s.on_cancel(1)
    fx.finish_swap(s, "a")
    assert fx.take() == [StartSwap("a"), Grant(2)]


def test_swap_left_without_waiters_completes_and_is_discarded(r: Ids) -> None:
    s, fx = fifo("a")
    s.on_request(r("a"))
    s.on_cancel(1)
    fx.finish_swap(s, "a")
    assert fx.take() == [StartSwap("a")]
    assert s.active_swaps() == {}


def test_cancel_of_a_granted_or_unknown_request_does_nothing(r: Ids) -> None:
    s, fx = fifo("a", ready=("a",))
    s.on_request(r("a"))
    s.on_cancel(1)
    s.on_cancel(42)
    assert fx.take() == [Grant(1)] and s.in_flight("a") == 1 and fx.published == []


# -- concurrency limit -----------------------------------------------------------------


def test_limit_one_rejects_the_second_request_with_429_until_serve_done(r: Ids) -> None:
    s, fx = fifo("a", ready=("a",), limits={"a": 1})
    s.on_request(r("a"))
    s.on_request(r("a"))
    assert fx.take() == [Grant(1), GrantError(2, TOO_MANY)]
    assert TOO_MANY == RouteError(429, "Too many requests", retry_after=1)
    s.on_serve_done("a")
    s.on_request(r("a"))
    assert fx.take() == [Grant(3)]


def test_default_limit_is_ten(r: Ids) -> None:
    s, fx = fifo("a", ready=("a",))
    for _ in range(11):
        s.on_request(r("a"))
    assert fx.take() == [Grant(i) for i in range(1, 11)] + [GrantError(11, TOO_MANY)]


def test_custom_limit_is_honoured(r: Ids) -> None:
    s, fx = fifo("a", ready=("a",), limits={"a": 2})
    for _ in range(3):
        s.on_request(r("a"))
    assert fx.take() == [Grant(1), Grant(2), GrantError(3, TOO_MANY)]


def test_zero_limit_means_the_default(r: Ids) -> None:
    s, _ = fifo("a", limits={"a": 0})
    assert s.limit("a") == 10


def test_swap_waiters_count_so_the_excess_is_refused_at_admission(r: Ids) -> None:
    s, fx = fifo("a", limits={"a": 2})
    for _ in range(4):
        s.on_request(r("a"))
    assert fx.take() == [StartSwap("a"), GrantError(3, TOO_MANY), GrantError(4, TOO_MANY)]
    assert fx.admitted == [1, 2]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(1), Grant(2)]


# -- admission: the answer a caller gets before it waits ---------------------------------


def test_a_request_is_admitted_before_it_waits_for_its_swap(r: Ids) -> None:
    s, fx = fifo("a")
    s.on_request(r("a"))
    assert fx.admitted == [1] and fx.take() == [StartSwap("a")]


def test_an_unknown_model_is_refused_with_404_and_never_admitted(r: Ids) -> None:
    s, fx = fifo("a")
    s.on_request(r("ghost"))
    assert fx.admitted == [] and fx.take() == [GrantError(1, unknown_model("ghost"))]


def test_queued_requests_count_toward_the_limit(r: Ids) -> None:
    # b is loading and evicts a, so a request for a queues behind it
    s, fx = fifo("a", "b", evict={"a": ("b",), "b": ("a",)}, limits={"a": 1})
    s.on_request(r("b"))
    s.on_request(r("a"))
    s.on_request(r("a"))
    assert fx.take() == [StartSwap("b", evict=("a",)), GrantError(3, TOO_MANY)]
    assert s.queued() == (Request(2, "a"),) and fx.admitted == [1, 2]


def test_a_cancelled_queued_request_gives_its_slot_back(r: Ids) -> None:
    s, fx = fifo("a", limits={"a": 1})
    s.on_request(r("a"))
    s.on_cancel(1)
    s.on_request(r("a"))
    assert fx.admitted == [1, 2]
    fx.finish_swap(s, "a")
    assert fx.take() == [StartSwap("a"), Grant(2)]


def test_a_failed_swap_gives_its_waiters_slots_back(r: Ids) -> None:
    s, fx = fifo("a", limits={"a": 1})
    s.on_request(r("a"))
    fx.finish_swap(s, "a", RouteError(502, "boom"))
    s.on_request(r("a"))
    assert fx.admitted == [1, 2]
    assert fx.take() == [StartSwap("a"), GrantError(1, RouteError(502, "boom")), StartSwap("a")]


def test_a_grant_to_a_gone_caller_gives_its_slot_back(r: Ids) -> None:
    s, fx = fifo("a", limits={"a": 1})
    fx.gone.add(1)
    s.on_request(r("a"))
    fx.finish_swap(s, "a")
    s.on_request(r("a"))
    assert fx.take() == [StartSwap("a"), Grant(1, delivered=False), Grant(2)]


def test_a_caller_gone_before_admission_is_dropped_and_reserves_nothing(r: Ids) -> None:
    s, fx = fifo("a", limits={"a": 1})
    fx.left_before_admission.add(1)
    s.on_request(r("a"))
    s.on_request(r("a"))
    assert fx.admitted == [2] and fx.take() == [StartSwap("a")]
    fx.finish_swap(s, "a")
    assert fx.take() == [Grant(2)]


def test_unload_and_shutdown_give_slots_back(r: Ids) -> None:
    s, fx = fifo("a", limits={"a": 1})
    s.on_request(r("a"))
    s.on_unload(("a",), RouteError(503, "unloaded"))
    fx.stop(s, "a")
    s.on_request(r("a"))
    assert fx.admitted == [1, 2]
    s.on_shutdown(shutting_down())
    assert GrantError(2, shutting_down()) in fx.take()


def test_the_slot_of_a_served_request_is_held_until_serve_done(r: Ids) -> None:
    s, fx = fifo("a", ready=("a",), limits={"a": 1})
    s.on_request(r("a"))
    s.on_request(r("a"))
    s.on_serve_done("a")
    s.on_request(r("a"))
    assert fx.admitted == [1, 3]
    assert fx.take() == [Grant(1), GrantError(2, TOO_MANY), Grant(3)]


def test_gone_callers_do_not_use_up_the_limit(r: Ids) -> None:
    s, fx = fifo("a", ready=("a",), limits={"a": 1})
    fx.gone.add(1)
    s.on_request(r("a"))
    s.on_request(r("a"))
    assert fx.take() == [Grant(1, delivered=False), Grant(2)]


# -- our additions: process stopped, TTL, positions -----------------------------------------


def test_process_stopped_outside_a_swap_drains_the_queue(r: Ids) -> None:
    fx = FakeEffects("a", "b", ready=("a",))
    s = FifoScheduler(make_models("a", "b"), fx, GroupSwapper({}, ("a", "b")))
    s.on_request(r("a"))
    s.on_request(r("b"))  # would evict busy a
    assert fx.take() == [Grant(1)]
    fx.stop(s, "a")  # a crashed under request 1: nothing left to evict
    assert fx.take() == [StartSwap("b")]


def test_ttl_stops_an_idle_ready_model(r: Ids) -> None:
    s, fx = fifo("a", ready=("a",))
    s.on_ttl_expired("a")
    assert fx.take() == [StopProcesses(("a",))]


@pytest.mark.parametrize("situation", ["serving", "queued", "swap target", "being evicted", "stopped"])
def test_ttl_is_ignored_while_the_model_is_used_or_awaited(r: Ids, situation: str) -> None:
    s, fx = fifo("a", "b", "y", ready=("a", "y"), evict={"a": ("y",), "b": ("a",)})
    if situation == "serving":
        s.on_request(r("a"))
    elif situation == "queued":
        s.on_request(r("y"))  # y busy
        s.on_request(r("a"))  # a is idle, but this request waits to evict busy y
        assert [q.model for q in s.queued()] == ["a"] and s.in_flight("a") == 0
    elif situation == "swap target":
        fx.set_state("a", ProcessState.STOPPED)
        s.on_request(r("a"))
        fx.set_state("a", READY)
    elif situation == "being evicted":
        s.on_request(r("b"))
        fx.set_state("a", READY)
    else:
        fx.set_state("a", ProcessState.STOPPED)
    fx.take()
    s.on_ttl_expired("a")
    assert fx.take() == []


def test_queue_positions_follow_enqueue_drain_and_cancel(r: Ids) -> None:
    s, fx = fifo("a", "b", "c", evict={"b": ("a",), "c": ("a",)})
    s.on_request(r("a"))
    s.on_request(r("b"))
    s.on_request(r("c"))
    s.on_cancel(2)
    fx.finish_swap(s, "a")
    s.on_serve_done("a")
    assert fx.published == [{2: 1}, {2: 1, 3: 2}, {3: 1}, {}]


def test_swap_start_is_described_by_the_swapper(r: Ids) -> None:
    swapper = StubSwapper({"b": ("a",)})
    fx = FakeEffects("a", "b", ready=("a",))
    s = FifoScheduler(make_models("a", "b"), fx, swapper)
    s.on_request(r("b"))
    assert swapper.described == [("b", ("a",))]


# -- randomized: the promises hold for any event order -----------------------------------

MODELS = ("a", "b", "c")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(router_actions(MODELS), max_size=40),
    st.sets(st.sampled_from(MODELS)),
    st.sampled_from(["one at a time", "a and b together", "never evict"]),
)
def test_any_event_order_keeps_the_promises_and_answers_everyone(
    actions: list[tuple[str, str | int]], ready: set[str], policy: str
) -> None:
    if policy == "one at a time":
        sw = GroupSwapper({}, MODELS)
    elif policy == "a and b together":
        sw = GroupSwapper(
            MappingProxyType({"ab": Group("ab", ("a", "b"), swap=False), "c": Group("c", ("c",))}),
            MODELS,
        )
    else:
        sw = GroupSwapper(MappingProxyType({"all": Group("all", MODELS, swap=False)}), MODELS)
    limits = {"a": 1, "b": 2, "c": 10}
    fx = FakeEffects(*MODELS, ready=sorted(ready))
    router = FakeRouter(FifoScheduler(make_models(*MODELS, limits=limits), fx, sw), fx, limits)
    router.play(actions)
    assert router.violations == []
    router.settle()
    assert router.violations == []
    assert router.unanswered() == []
    assert router.s.queued() == () and all(router.s.in_flight(m) == 0 for m in MODELS)
    router.request("a")
    router.s.on_shutdown(shutting_down())
    router.collect()
    assert router.violations == [] and router.unanswered() == []


# -- what a hot reload asks of the scheduler ----------------------------------------------


def test_awaits_swap_names_the_active_swaps(r: Ids) -> None:
    s, fx = fifo("a", "b")
    s.on_request(r("a"))
    assert s.awaits_swap("a") and not s.awaits_swap("b")
    fx.finish_swap(s, "a")
    assert not s.awaits_swap("a")


def test_a_model_with_adopted_in_flight_requests_is_not_evicted(r: Ids) -> None:
    s, fx = fifo("a", "b", ready=("a",), evict={"b": ("a",)})
    s.adopt_in_flight({"a": 2})
    assert s.in_flight("a") == 2
    s.on_request(r("b"))
    assert fx.take() == []  # queued: a still serves what the old scheduler granted
    s.on_serve_done("a")
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]
