"""Recording fakes for the pure scheduling core (no unittest.mock).

`FakeEffects` implements `runtime.schedulers.base.Effects`.  Every effect the
scheduler asks for is recorded as a frozen value in `calls`, so tests read as
specifications::

    assert fx.take() == [StartSwap("b", evict=("a",)), Grant(1)]

Outcomes are scripted: model states (`set_state`, `ready=`), callers that are
gone (`gone`), and `finish_swap` plays the router's part when a swap ends
(evicted models stopped, the target ready, or stopped on error) before
delivering `on_swap_done`.  Published queue positions are kept apart from
`calls` in `published` (every publication) and `positions` (the newest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from compiler.plan import Model
from runtime.errors import RouteError
from runtime.process_state import ProcessState
from runtime.schedulers.base import Request, Scheduler


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

    def grant_serve(self, request: Request) -> bool:
        delivered = request.id not in self.gone
        self.calls.append(Grant(request.id, delivered))
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

    def eviction_for(self, target: str, running: Sequence[str]) -> tuple[str, ...]:
        return self.evict.get(target, ())

    def describe(self, target: str, running: Sequence[str]) -> str:
        self.described.append((target, tuple(running)))
        return f"stub: model={target} evict={list(self.eviction_for(target, running))}"
