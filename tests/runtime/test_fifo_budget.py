"""The fifo scheduler with the budget policy, probes, pins and `maxWait`.

Step by step through `FakeEffects` first, then randomized: for any order of
events the budget's invariants hold (declared sizes of starting and ready
models within every capacity, the count within `maxLoaded`, no serving or
pinned model evicted) and every request is answered; and with `maxWait`, in a
timed simulation, no request waits longer than `maxWait` plus one serve and
the swaps that the overdue rule cannot interrupt.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from types import MappingProxyType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_swap.compiler.plan import Budget, Model
from llama_swap.runtime.core.errors import RouteError, shutting_down
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers import FifoScheduler
from llama_swap.runtime.core.schedulers.base import Request
from llama_swap.runtime.core.swappers import BudgetSwapper
from tests.fakes import FakeEffects, FakeRouter, Grant, GrantError, StartSwap, make_models

READY = ProcessState.READY
LIVE = (ProcessState.STARTING, ProcessState.READY)


def sized(sizes: dict[str, dict[str, float]]) -> dict[str, Model]:
    base = make_models(*sizes)
    return {m: replace(base[m], resources=MappingProxyType(sizes[m])) for m in base}


def make_budget(max_loaded: int = 0, probes: tuple[str, ...] = (), **caps: float) -> Budget:
    return Budget(
        maxLoaded=max_loaded,
        resources=MappingProxyType(caps),
        probes=MappingProxyType({r: "probe" for r in probes}),
    )


def budget_fifo(
    sizes: dict[str, dict[str, float]],
    b: Budget,
    *,
    ready: tuple[str, ...] = (),
    max_wait: float = 0,
) -> tuple[FifoScheduler, FakeEffects]:
    models = sized(sizes)
    fx = FakeEffects(*models, ready=ready)
    s = FifoScheduler(models, fx, BudgetSwapper(b, models), max_wait=max_wait)
    return s, fx


THREE = {"a": {"vram": 10}, "b": {"vram": 10}, "c": {"vram": 10}}


# -- step by step ------------------------------------------------------------------


def test_models_that_fit_run_side_by_side() -> None:
    s, fx = budget_fifo(THREE, make_budget(vram=20), ready=("a",))
    s.on_request(Request(1, "b"))
    assert fx.take() == [StartSwap("b")]


def test_the_least_recently_used_idle_model_makes_room_and_the_reason_is_reported() -> None:
    s, fx = budget_fifo(THREE, make_budget(vram=20), ready=("a", "b"))
    fx.last_used = {"a": 5.0, "b": 2.0}
    fx.now = 30.0
    s.on_request(Request(1, "c"))
    assert fx.take() == [StartSwap("c", evict=("b",))]
    assert [(t, [e.line for e in ev]) for t, ev in fx.evictions] == [
        ("c", ["budget vram 20/20 needs 10: evicting b, idle 28 s"])
    ]


def test_a_serving_model_is_never_evicted_its_idle_neighbour_is() -> None:
    s, fx = budget_fifo(THREE, make_budget(vram=20), ready=("a", "b"))
    fx.last_used = {"a": 1.0, "b": 2.0}  # a is older, but it serves
    s.on_request(Request(1, "a"))
    assert fx.take() == [Grant(1)]
    s.on_request(Request(2, "c"))
    assert fx.take() == [StartSwap("c", evict=("b",))]


def test_when_every_model_that_could_make_room_serves_the_swap_waits_for_them() -> None:
    s, fx = budget_fifo(THREE, make_budget(max_loaded=2), ready=("a", "b"))
    s.on_request(Request(1, "a"))
    s.on_request(Request(2, "b"))
    fx.take()
    s.on_request(Request(3, "c"))
    assert fx.take() == [] and s.queued() == (Request(3, "c"),)
    s.on_serve_done("b")
    assert fx.take() == [StartSwap("c", evict=("b",))]


def test_a_model_with_requests_queued_ahead_is_not_evicted_for_a_later_one() -> None:
    s, fx = budget_fifo(THREE, make_budget(max_loaded=1), ready=("a",))
    s.on_request(Request(1, "a"))  # a serves
    s.on_request(Request(2, "b"))  # waits for a
    fx.take()
    fx.set_state("a", READY)
    s.on_request(Request(3, "c"))  # b is queued ahead; a serves: c waits as well
    assert fx.take() == []
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]


def test_a_target_that_can_never_fit_beside_the_pinned_models_gets_503() -> None:
    s, fx = budget_fifo(THREE, make_budget(max_loaded=1), ready=("a",))
    fx.pinned = {"a"}
    s.on_request(Request(1, "b"))
    [answer] = fx.take()
    assert isinstance(answer, GrantError) and answer.error.status == 503
    assert "does not fit beside the pinned models a" in answer.error.message


def test_unpinning_lets_a_waiting_request_through_on_the_next_conditions_change() -> None:
    s, fx = budget_fifo(THREE, make_budget(vram=20), ready=("a", "b"))
    fx.pinned = {"a", "b"}
    s.on_request(Request(1, "a"))  # a serves; b pinned: c has no room now, but could later
    fx.take()
    s.on_request(Request(2, "c"))
    assert isinstance(fx.take()[0], GrantError)  # a and b pinned: never fits
    fx.pinned = {"a"}
    s.on_request(Request(3, "c"))
    assert fx.take() == [StartSwap("c", evict=("b",))]


def test_a_probed_resource_is_measured_before_the_load_and_its_result_drains_the_queue() -> None:
    s, fx = budget_fifo(THREE, make_budget(vram=30, probes=("vram",)), ready=("a",))
    s.on_request(Request(1, "b"))
    assert fx.take() == [] and fx.probes_asked == [("vram",)]
    fx.free = {"vram": 4.0}  # declared sizes fit (20/30), but only 4 free: a must go
    s.on_conditions_changed()
    assert fx.take() == [StartSwap("b", evict=("a",))]
    assert fx.evictions[0][1][0].reason == "probe:vram"


def test_a_failed_probe_falls_back_to_the_declared_sizes() -> None:
    s, fx = budget_fifo(THREE, make_budget(vram=30, probes=("vram",)), ready=("a",))
    s.on_request(Request(1, "b"))
    fx.free = {"vram": None}
    s.on_conditions_changed()
    assert fx.take() == [StartSwap("b")]


# -- maxWait -------------------------------------------------------------------------


def starving(max_wait: float) -> tuple[FifoScheduler, FakeEffects]:
    """a is loaded and busy; b waits for it; then a keeps getting requests."""
    s, fx = budget_fifo(THREE, make_budget(max_loaded=1), ready=("a",), max_wait=max_wait)
    s.on_request(Request(1, "a", arrived=0.0))
    s.on_request(Request(2, "b", arrived=0.0))
    fx.take()
    return s, fx


def test_without_max_wait_a_busy_loaded_model_keeps_the_waiting_one_out() -> None:
    s, fx = starving(0)
    for rid in range(3, 8):
        fx.now = float(rid * 10)
        s.on_request(Request(rid, "a", arrived=fx.now))
        s.on_serve_done("a")
    assert Request(2, "b", 0.0) in s.queued()  # never served while a is kept busy


def test_with_max_wait_an_overdue_request_is_served_next() -> None:
    s, fx = starving(5)
    fx.now = 3.0
    s.on_request(Request(3, "a", arrived=3.0))  # not overdue yet: batched onto a
    assert fx.take() == [Grant(3)]
    fx.now = 6.0
    s.on_request(Request(4, "a", arrived=6.0))  # b has waited 6 s > 5: a's request queues
    assert fx.take() == []
    s.on_serve_done("a")
    s.on_serve_done("a")
    assert fx.take() == [StartSwap("b", evict=("a",))]
    fx.finish_swap(s, "b")
    assert fx.take() == [Grant(2)]  # 4 waits for b's serve, then swaps back
    s.on_serve_done("b")
    assert fx.take() == [StartSwap("a", evict=("b",))]


# -- randomized: the budget's promises --------------------------------------------------

SIZES = {"a": {"vram": 12, "ram": 1}, "b": {"vram": 8}, "c": {"vram": 8, "ram": 3}, "d": {}}
CAPS = {"vram": 20, "ram": 3}


class BudgetRouter(FakeRouter):
    """FakeRouter plus the router's budget duties: report probes, forget them when a
    process changes state, and check the budget after every step."""

    def __init__(self, s: FifoScheduler, fx: FakeEffects, b: Budget) -> None:
        super().__init__(s, fx, {m: 10 for m in SIZES})
        self.budget = b
        self._probes_seen = 0

    def check_budget(self) -> None:
        live = [m for m, st_ in self.fx.states.items() if st_ in LIVE]
        if self.budget.maxLoaded and len(live) > self.budget.maxLoaded:
            self.violations.append(f"{live} over maxLoaded {self.budget.maxLoaded}")
        for r, cap in self.budget.resources.items():
            used = sum(SIZES[m].get(r, 0) for m in live)
            if used > cap:
                self.violations.append(f"{live} use {used} {r} > {cap}")
        for swap in self.swaps:
            if set(swap.evict) & self.fx.pinned:
                self.violations.append(f"{swap} evicts a pinned model {sorted(self.fx.pinned)}")

    def collect(self) -> None:
        super().collect()
        self.check_budget()

    def report_probe(self, value: float | None) -> None:
        if len(self.fx.probes_asked) > self._probes_seen:
            self._probes_seen = len(self.fx.probes_asked)
            self.fx.free = {"vram": value}
            self.s.on_conditions_changed()
            self.collect()

    def finish_swap(self, index: int, error: RouteError | None) -> None:
        if self.swaps:
            self.fx.free = {}
        super().finish_swap(index, error)

    def finish_stop(self, index: int) -> None:
        if self.stopping:
            self.fx.free = {}
        super().finish_stop(index)

    def settle(self, limit: int = 2000) -> None:
        for _ in range(limit):
            if self.swaps or self.stopping or self.serving:
                super().settle(1)
                self.violations = [v for v in self.violations if v != "did not settle"]
            elif len(self.fx.probes_asked) > self._probes_seen:
                self.report_probe(None)
            elif self.s.queued():  # e.g. waiting for probe results that aged out
                self.fx.free = {}
                self.s.on_conditions_changed()
                self.collect()
                if len(self.fx.probes_asked) == self._probes_seen:
                    self.violations.append(f"stuck: {self.s.queued()}")
                    return
            else:
                return
        self.violations.append("did not settle")


def actions() -> st.SearchStrategy[tuple[str, str | int]]:
    names = st.sampled_from(tuple(SIZES))
    picks = st.integers(0, 9)
    return st.one_of(
        st.tuples(st.just("request"), names),
        st.tuples(st.sampled_from(("swap_ok", "swap_fail", "serve_done", "stop_done", "cancel")), picks),
        st.tuples(st.just("serve_done"), picks),
        st.tuples(st.sampled_from(("crash", "ttl", "unload")), names),
        st.tuples(st.just("probe"), st.sampled_from((0, 5, 9, 40, -1))),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(actions(), max_size=50),
    st.sets(st.sampled_from(tuple(SIZES))),
    st.sets(st.sampled_from(tuple(SIZES)), max_size=2),
    st.sampled_from(["count", "resources", "both", "probed"]),
)
def test_any_event_order_keeps_the_budget_and_answers_everyone(
    steps: list[tuple[str, str | int]], ready: set[str], pinned: set[str], kind: str
) -> None:
    b = {
        "count": make_budget(max_loaded=2),
        "resources": make_budget(**CAPS),
        "both": make_budget(max_loaded=2, **CAPS),
        "probed": make_budget(probes=("vram",), **CAPS),
    }[kind]
    models = sized(SIZES)
    # start from a state the budget allows: the ready models in id order while they fit
    start: list[str] = []
    for m in sorted(ready):
        trial = [*start, m]
        if (not b.maxLoaded or len(trial) <= b.maxLoaded) and all(
            sum(SIZES[x].get(r, 0) for x in trial) <= cap for r, cap in b.resources.items()
        ):
            start = trial
    fx = FakeEffects(*models, ready=start)
    fx.pinned = set(pinned)
    router = BudgetRouter(FifoScheduler(models, fx, BudgetSwapper(b, models)), fx, b)
    for step in steps:
        if step[0] == "probe":
            value = int(step[1])
            router.report_probe(None if value < 0 else float(value))
        else:
            router.play([step])
        assert router.violations == []
    router.settle()
    assert router.violations == []
    assert router.unanswered() == []
    router.s.on_shutdown(shutting_down())


# -- randomized: maxWait in simulated time ----------------------------------------------

SERVE = 1.0  # every granted request is served in this long
SWAP = 2.0  # every swap takes this long
MAX_WAIT = 5.0


def simulate(arrivals: list[tuple[float, str]], max_wait: float) -> dict[int, float]:
    """Play timed arrivals through fifo + budget (one model at a time); each request's wait."""
    models = make_models("a", "b", limits={"a": 1000, "b": 1000})  # no 429 in this traffic
    fx = FakeEffects("a", "b", ready=("a",))
    s = FifoScheduler(models, fx, BudgetSwapper(make_budget(max_loaded=1), models), max_wait=max_wait)
    timeline: list[tuple[float, int, str, str | int]] = []
    seq = 0
    for t, model in arrivals:
        seq += 1
        heapq.heappush(timeline, (t, seq, "arrive", model))
    arrived: dict[int, float] = {}
    waited: dict[int, float] = {}
    seen = 0
    rid = 0
    while timeline:
        t, _, kind, what = heapq.heappop(timeline)
        fx.now = t
        if kind == "arrive":
            rid += 1
            arrived[rid] = t
            s.on_request(Request(rid, str(what), arrived=t))
        elif kind == "served":
            s.on_serve_done(str(what))
        else:
            fx.finish_swap(s, str(what))
        for effect in fx.calls[seen:]:
            seq += 1
            if isinstance(effect, Grant):
                waited[effect.request_id] = t - arrived[effect.request_id]
                model = next(m for i, m in enumerate(r for _, r in arrivals) if i + 1 == effect.request_id)
                heapq.heappush(timeline, (t + SERVE, seq, "served", model))
            elif isinstance(effect, StartSwap):
                heapq.heappush(timeline, (t + SWAP, seq, "swapped", effect.model))
            elif isinstance(effect, GrantError):
                raise AssertionError(f"unexpected {effect}")
        seen = len(fx.calls)
    assert set(waited) == set(arrived), "every request is served"
    return waited


gaps = st.lists(
    st.tuples(st.sampled_from((0.0, 0.25, 0.5, 1.0, 3.0)), st.sampled_from(("a", "a", "a", "b"))),
    min_size=1,
    max_size=60,
)


def timed(steps: list[tuple[float, str]]) -> list[tuple[float, str]]:
    t = 0.0
    out = []
    for gap, model in steps:
        t += gap
        out.append((t, model))
    return out


@settings(max_examples=300, deadline=None)
@given(gaps)
def test_with_max_wait_no_request_waits_longer_than_max_wait_plus_a_serve_and_the_swaps(
    steps: list[tuple[float, str]],
) -> None:
    waited = simulate(timed(steps), MAX_WAIT)
    # overdue, it waits at most for: serves already granted, a swap already under way
    # and the serve of its waiters, then its own swap
    assert max(waited.values()) <= MAX_WAIT + SERVE + 2 * SWAP


def test_without_max_wait_the_same_traffic_can_starve_a_request() -> None:
    # a steady stream of overlapping a requests keeps a busy; b's lone request waits for all of it
    steps = [(0.0, "a"), (0.1, "b")] + [(0.5, "a")] * 60
    waited = simulate(timed(steps), 0)
    assert waited[2] > MAX_WAIT + SERVE + 2 * SWAP
    assert max(simulate(timed(steps), MAX_WAIT).values()) <= MAX_WAIT + SERVE + 2 * SWAP
