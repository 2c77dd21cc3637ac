"""Recording fakes for the pure scheduling core (no unittest.mock).

`FakeEffects` implements `runtime.core.schedulers.base.Effects`.  Every effect the
scheduler asks for is recorded as a frozen value in `calls`, so tests read as
specifications::

    assert fx.take() == [StartSwap("b", evict=("a",)), Grant(1)]

Outcomes are scripted: model states (`set_state`, `ready=`), callers that are
gone (`gone`), and `finish_swap` plays the router's part when a swap ends
(evicted models stopped, the target ready, or stopped on error) before
delivering `on_swap_done`.  What only a router knows is scripted too: `now`,
`last_used` (kept up to date on grants and swap completions like the router
does), `pinned` and probe results (`free`).  Probes asked for are recorded in
`probes_asked`, eviction reasons in `evictions`; neither is in `calls`.
Published queue positions are kept apart from
`calls` in `published` (every publication) and `positions` (the newest);
admissions likewise in `admitted` (request ids, in order).  A caller in
`left_before_admission` is gone when its admission is announced; one in `gone`
only when it is granted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from hypothesis import strategies as st

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers.base import (
    Evicted,
    Eviction,
    EvictionContext,
    Observed,
    Request,
    Scheduler,
)


@dataclass(frozen=True, slots=True)
class StartSwap:
    model: str
    evict: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Grant:
    """`grant_serve` was called; `delivered=False` when the caller was gone."""

    request_id: int
    delivered: bool = True


@dataclass(frozen=True, slots=True)
class GrantError:
    request_id: int
    error: RouteError


@dataclass(frozen=True, slots=True)
class StopProcesses:
    models: tuple[str, ...]


Effect = StartSwap | Grant | GrantError | StopProcesses


class FakeEffects:
    """A scriptable, recording `Effects`.  Models not named at construction are unknown."""

    def __init__(self, *models: str, ready: Iterable[str] = ()) -> None:
        self.states: dict[str, ProcessState] = {m: ProcessState.STOPPED for m in models}
        for m in ready:
            self.states[m] = ProcessState.READY
        self.calls: list[Effect] = []
        self.published: list[dict[int, int]] = []
        self.gone: set[int] = set()
        self.left_before_admission: set[int] = set()
        self.admitted: list[int] = []
        self.now = 0.0
        self.last_used: dict[str, float] = {}
        self.pinned: set[str] = set()
        self.free: dict[str, float | None] = {}
        self.probes_asked: list[tuple[str, ...]] = []
        self.evictions: list[tuple[str, tuple[Evicted, ...]]] = []
        self._taken = 0

    # -- scripting -----------------------------------------------------------

    def set_state(self, model: str, state: ProcessState) -> None:
        self.states[model] = state

    def take(self) -> list[Effect]:
        """The effects recorded since the previous `take` (for step-by-step tests)."""
        new = self.calls[self._taken :]
        self._taken = len(self.calls)
        return new

    @property
    def positions(self) -> dict[int, int]:
        return self.published[-1] if self.published else {}

    def swaps(self) -> list[StartSwap]:
        return [c for c in self.calls if isinstance(c, StartSwap)]

    def finish_swap(
        self, scheduler: Scheduler, model: str, error: RouteError | None = None
    ) -> None:
        """Complete the newest swap to `model` as the router would, then report it."""
        swap = next(s for s in reversed(self.swaps()) if s.model == model)
        for evicted in swap.evict:
            self.states[evicted] = ProcessState.STOPPED
        self.states[model] = ProcessState.STOPPED if error else ProcessState.READY
        if not error:
            self.last_used[model] = self.now
        scheduler.on_swap_done(model, error)

    def stop(self, scheduler: Scheduler, model: str) -> None:
        """A process reached stopped outside a swap (stop finished, crash)."""
        self.states[model] = ProcessState.STOPPED
        scheduler.on_process_stopped(model)

    # -- Effects -------------------------------------------------------------

    def model_state(self, model: str) -> ProcessState | None:
        return self.states.get(model)

    def running_models(self) -> Sequence[str]:
        return sorted(m for m, s in self.states.items() if s.occupies_memory)

    def start_swap(self, model: str, evict: tuple[str, ...]) -> None:
        self.calls.append(StartSwap(model, tuple(evict)))
        for evicted in evict:
            self.states[evicted] = ProcessState.STOPPING
        if self.states.get(model) is ProcessState.STOPPED:
            self.states[model] = ProcessState.STARTING

    def grant_admission(self, request: Request) -> bool:
        if request.id in self.left_before_admission:
            return False
        self.admitted.append(request.id)
        return True

    def grant_serve(self, request: Request) -> bool:
        delivered = request.id not in self.gone
        self.calls.append(Grant(request.id, delivered))
        if delivered:
            self.last_used[request.model] = self.now
        return delivered

    def grant_error(self, request: Request, error: RouteError) -> None:
        self.calls.append(GrantError(request.id, error))

    def stop_processes(self, models: tuple[str, ...]) -> None:
        self.calls.append(StopProcesses(tuple(models)))
        for m in models:
            if self.states.get(m, ProcessState.STOPPED).occupies_memory:
                self.states[m] = ProcessState.STOPPING

    def queue_positions(self, positions: Mapping[int, int]) -> None:
        self.published.append(dict(positions))

    def observe(self) -> Observed:
        return Observed(
            now=self.now,
            last_used=MappingProxyType(dict(self.last_used)),
            pinned=frozenset(self.pinned),
            free=MappingProxyType(dict(self.free)),
        )

    def run_probes(self, resources: tuple[str, ...]) -> None:
        self.probes_asked.append(tuple(resources))

    def evicting(self, target: str, evicted: tuple[Evicted, ...]) -> None:
        self.evictions.append((target, tuple(evicted)))


def make_models(*ids: str, limits: Mapping[str, int] | None = None) -> Mapping[str, Model]:
    """Minimal plan models keyed by id; `limits` sets `concurrencyLimit` per model."""
    limits = limits or {}
    return MappingProxyType(
        {
            mid: Model(
                id=mid,
                cmd=("fake-server", mid),
                cmdStop=None,
                proxy=f"http://127.0.0.1:{5800 + i}",
                checkEndpoint="/health",
                ttl=0,
                concurrencyLimit=limits.get(mid, 10),
            )
            for i, mid in enumerate(ids)
        }
    )


class StubSwapper:
    """A `Swapper` with a fixed evict list per target (ignores what runs), for scheduler tests."""

    def __init__(self, evict: Mapping[str, Sequence[str]] | None = None) -> None:
        self.evict = {k: tuple(v) for k, v in (evict or {}).items()}
        self.described: list[tuple[str, tuple[str, ...]]] = []

    def decide(self, target: str, ctx: EvictionContext) -> Eviction:
        self.described.append((target, tuple(ctx.running)))
        evict = self.evict.get(target, ())
        return Eviction(
            tuple(Evicted(m, "stub", f"stub: evicting {m}") for m in evict),
            line=f"stub: model={target} evict={list(evict)}",
        )


class FakeRouter:
    """Plays the router's part around a scheduler, for randomized (hypothesis) tests.

    It keeps the books a real run loop keeps — swaps under way, stops under
    way, granted requests not yet finished — completes slow work when told to,
    and checks the scheduler's promises as it goes (`violations`).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        fx: FakeEffects,
        limits: Mapping[str, int],
        *,
        exclusive: bool = False,
    ) -> None:
        self.s = scheduler
        self.exclusive = exclusive  # serial: a granted model must be the only one running
        self.fx = fx
        self.limits = limits
        self.next_id = 0
        self.requests: dict[int, str] = {}
        self.cancelled: set[int] = set()
        self.answers: dict[int, list[Effect]] = {}
        self.serving: list[Request] = []  # granted, delivered, not yet done
        self.swaps: list[StartSwap] = []  # started, not yet reported
        self.stopping: list[str] = []
        self.violations: list[str] = []
        self._seen = 0

    # -- actions --------------------------------------------------------------

    def request(self, model: str) -> None:
        self.next_id += 1
        self.requests[self.next_id] = model
        self.s.on_request(Request(self.next_id, model))
        self.collect()

    def cancel(self, index: int) -> None:
        waiting = [rid for rid in self.requests if rid not in self.answers and rid not in self.cancelled]
        if waiting:
            rid = waiting[index % len(waiting)]
            self.cancelled.add(rid)
            self.fx.gone.add(rid)
            self.s.on_cancel(rid)
            self.collect()

    def finish_swap(self, index: int, error: RouteError | None) -> None:
        if self.swaps:
            # any model's swap may end first, but swaps to one model report in the order
            # they were started (the router runs them one after another)
            model = self.swaps[index % len(self.swaps)].model
            swap = self.swaps.pop(next(i for i, sw in enumerate(self.swaps) if sw.model == model))
            for evicted in swap.evict:
                self.fx.states[evicted] = ProcessState.STOPPED
            self.fx.states[swap.model] = ProcessState.STOPPED if error else ProcessState.READY
            self.s.on_swap_done(swap.model, error)
            self.collect()

    def serve_done(self, index: int) -> None:
        if self.serving:
            request = self.serving.pop(index % len(self.serving))
            self.s.on_serve_done(request.model)
            self.collect()

    def finish_stop(self, index: int) -> None:
        if self.stopping:
            model = self.stopping.pop(index % len(self.stopping))
            if self.fx.states[model] is ProcessState.STOPPING:
                self.fx.states[model] = ProcessState.STOPPED
            self.s.on_process_stopped(model)
            self.collect()

    def crash(self, model: str) -> None:
        if self.fx.states.get(model) is ProcessState.READY:
            self.fx.states[model] = ProcessState.STOPPED
            self.s.on_process_stopped(model)
            self.collect()

    def ttl(self, model: str) -> None:
        self.s.on_ttl_expired(model)
        self.collect()

    def unload(self, models: tuple[str, ...], error: RouteError) -> None:
        self.s.on_unload(models, error)
        self.collect()

    def play(self, actions: Iterable[tuple[str, str | int]]) -> None:
        """Run `router_actions()` values, stopping at the first broken promise."""
        for action, arg in actions:
            if action == "request":
                self.request(str(arg))
            elif action == "cancel":
                self.cancel(int(arg))
            elif action == "swap_ok":
                self.finish_swap(int(arg), None)
            elif action == "swap_fail":
                self.finish_swap(int(arg), RouteError(502, "boom"))
            elif action == "serve_done":
                self.serve_done(int(arg))
            elif action == "stop_done":
                self.finish_stop(int(arg))
            elif action == "crash":
                self.crash(str(arg))
            elif action == "ttl":
                self.ttl(str(arg))
            elif action == "unload":
                self.unload((str(arg),), RouteError(503, f"[{arg}] unloaded"))
            if self.violations:
                return

    def settle(self, limit: int = 1000) -> None:
        """Finish every swap, stop and serve until nothing moves."""
        for _ in range(limit):
            if self.swaps:
                self.finish_swap(0, None)
            elif self.stopping:
                self.finish_stop(0)
            elif self.serving:
                self.serve_done(0)
            else:
                return
        self.violations.append("did not settle")

    # -- bookkeeping and checks ---------------------------------------------------

    def unanswered(self) -> list[int]:
        return [rid for rid in self.requests if rid not in self.answers and rid not in self.cancelled]

    def collect(self) -> None:
        """Check and record the effects asked for since the last call (call it after
        driving the scheduler directly, as the actions above do)."""
        for effect in self.fx.calls[self._seen :]:
            if isinstance(effect, StartSwap):
                busy = {r.model for r in self.serving}
                if busy & set(effect.evict):
                    self.violations.append(f"{effect} evicts a serving model {sorted(busy)}")
                self.swaps.append(effect)
            elif isinstance(effect, StopProcesses):
                self.stopping.extend(effect.models)
            elif isinstance(effect, Grant | GrantError):
                rid = effect.request_id
                self.answers.setdefault(rid, []).append(effect)
                if len(self.answers[rid]) > 1:
                    self.violations.append(f"request {rid} answered twice: {self.answers[rid]}")
                if isinstance(effect, Grant) and rid not in self.fx.admitted:
                    self.violations.append(f"request {rid} granted without admission")
                if isinstance(effect, Grant) and effect.delivered:
                    model = self.requests[rid]
                    if self.fx.states.get(model) is not ProcessState.READY:
                        self.violations.append(f"request {rid} granted while {model} not ready")
                    if self.exclusive and list(self.fx.running_models()) != [model]:
                        self.violations.append(
                            f"request {rid} granted while {list(self.fx.running_models())} run"
                        )
                    if self.exclusive and self.serving:
                        self.violations.append(f"request {rid} granted while {self.serving} serve")
                    self.serving.append(Request(rid, model))
                    count = sum(1 for r in self.serving if r.model == model)
                    if count > self.limits.get(model, 10):
                        self.violations.append(f"{model} over its limit: {count}")
        self._seen = len(self.fx.calls)


def router_actions(models: Sequence[str]) -> st.SearchStrategy[tuple[str, str | int]]:
    """Hypothesis strategy of single `FakeRouter.play` actions over `models` (+ an unknown one)."""
    picks = st.integers(0, 9)
    names = st.sampled_from(tuple(models))
    return st.one_of(
        st.tuples(st.just("request"), st.sampled_from((*models, "ghost"))),
        st.tuples(st.just("request"), names),
        st.tuples(st.sampled_from(("cancel", "swap_ok", "swap_fail", "serve_done", "stop_done")), picks),
        st.tuples(st.just("serve_done"), picks),
        st.tuples(st.sampled_from(("crash", "ttl", "unload")), names),
    )
