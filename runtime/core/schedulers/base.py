"""The scheduler contract: a pure state machine, events in, effects out.

A scheduler owns the request queue, the active swaps and the in-flight counts.
It imports no asyncio, no sockets, no clock.  The router's run loop (the only
caller) feeds it one event at a time and implements `Effects`, through which
the scheduler acts.  Slow work requested through Effects (`start_swap`,
`stop_processes`) runs elsewhere; its outcome comes back as a later event
(`on_swap_done`, `on_process_stopped`).

Invariants every scheduler keeps:
- a request for a known model that is not refused at once (404, 429, shutdown)
  is announced through `grant_admission` before it queues or waits for a swap,
  so a front door may commit to a long answer (the loading-state stream) only
  once the request can no longer be refused for being over a limit;
- a request is answered exactly once: `grant_serve` (True) or `grant_error`;
  a request whose `grant_serve` returned False (caller gone) is dropped and is
  NOT counted as in flight;
- a model with in-flight requests is never evicted;
- `on_serve_done` is called once for every grant that returned True.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple, Protocol

from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.process_state import ProcessState

if TYPE_CHECKING:
    from llama_swap.runtime.core.schedulers.snapshot import QueueSnapshot


@dataclass(frozen=True, slots=True)
class Request:
    """A request waiting for a local model. `id` is unique for the runtime's life;
    `arrived` is the router's clock when it arrived (fifo's `maxWait` measures from it)."""

    id: int
    model: str  # resolved local model id
    arrived: float = 0.0


NO_TIMES: Mapping[str, float] = MappingProxyType({})
NO_PROBES: Mapping[str, float | None] = MappingProxyType({})


class Observed(NamedTuple):
    """What only the router can know, handed to the scheduler as a value when it decides.

    The scheduler has no clock and does no I/O: the time, when each model was last
    used, which models are pinned and what the probes measured come from here.
    `free` holds fresh probe results by resource: a number (the free amount now) or
    None (the probe failed: use the declared sizes alone); a resource with no fresh
    result is absent.

    A NamedTuple rather than a frozen dataclass, like `EvictionContext`: one is built
    for every request decided, and a frozen dataclass costs several microseconds to
    construct there; a NamedTuple is just as immutable at a tenth of that.
    """

    now: float = 0.0
    last_used: Mapping[str, float] = NO_TIMES
    pinned: frozenset[str] = frozenset()
    free: Mapping[str, float | None] = NO_PROBES


class EvictionContext(NamedTuple):
    """Everything an eviction policy may look at, built by the scheduler for each decision.

    `running`: models holding or about to hold memory (running processes and the
    targets of active swaps), the target excluded, sorted.  `target_loaded`: the
    target itself is starting or ready.  `busy`: models that must not be evicted now
    (serving, with requests queued ahead or waiting on their swap, starting, or
    being evicted by another swap).  `pinned`: never evicted where the
    policy has a choice.  `last_used`, `free`, `now`: as in `Observed`.

    group and matrix read `running` and `pinned` only; budget reads everything.
    """

    running: tuple[str, ...]
    target_loaded: bool = False
    busy: frozenset[str] = frozenset()
    pinned: frozenset[str] = frozenset()
    last_used: Mapping[str, float] = NO_TIMES
    free: Mapping[str, float | None] = NO_PROBES
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Evicted:
    """One model a policy evicts and why: `reason` is a short label (metrics), `line`
    the log line (e.g. `budget vram 22000/24000 needs 5000: evicting small, idle 41 s`)."""

    model: str
    reason: str
    line: str


@dataclass(frozen=True, slots=True)
class Eviction:
    """A policy's answer for one target.

    - `evict`: stop these first (in order), then start the target;
    - `wait`: the target cannot be placed now (models it would need gone are busy):
      the scheduler defers it, as it defers a swap that would evict a busy model;
    - `probe`: run these resources' probes first; the target waits for their results;
    - `refuse`: the target can never be placed as things are (e.g. beside the pinned
      models): the request fails with 503 and this message.

    No log text here: most decisions are fast-path grants nobody logs, so the line
    describing a decision is built only when needed (`Swapper.explain`).
    """

    evict: tuple[Evicted, ...] = ()
    wait: bool = False
    probe: tuple[str, ...] = ()
    refuse: str = ""

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(e.model for e in self.evict)


NOTHING = Eviction()  # start the target (or serve it), evicting nothing


class Effects(Protocol):
    """What a scheduler may observe and do. Implemented by the router run loop (and test fakes)."""

    def model_state(self, model: str) -> ProcessState | None:
        """The model's process state, or None when no such local model exists."""

    def running_models(self) -> Sequence[str]:
        """Models whose process is not stopped (starting, ready, stopping), sorted by id."""

    def start_swap(self, model: str, evict: tuple[str, ...]) -> None:
        """Begin (asynchronously): stop `evict` and wait until they exited, then start `model`
        and wait until healthy.  The outcome arrives later as `on_swap_done(model, error)`;
        swaps to the same model report in the order they were started."""

    def grant_admission(self, request: Request) -> bool:
        """Tell the caller its request was accepted and will be served or fail later (a
        swap error, unload, shutdown), never with 404 or 429.  False if the caller is gone:
        the scheduler then drops the request, which holds nothing."""

    def grant_serve(self, request: Request) -> bool:
        """Hand the request to its model; False if the caller is gone (nothing was granted)."""

    def grant_error(self, request: Request, error: RouteError) -> None:
        """Answer the request with an error (no-op if the caller is gone)."""

    def stop_processes(self, models: tuple[str, ...]) -> None:
        """Begin stopping these processes; each completion arrives as `on_process_stopped`."""

    def queue_positions(self, positions: Mapping[int, int]) -> None:
        """Publish 1-based queue positions by request id (shown by sendLoadingState)."""

    def observe(self) -> Observed:
        """The time, last uses, pins and fresh probe results, as of now."""

    def run_probes(self, resources: tuple[str, ...]) -> None:
        """Begin (off the loop) measuring the free amount of `resources`; the results
        arrive in later `observe()` values, followed by `on_conditions_changed`."""

    def evicting(self, target: str, evicted: tuple[Evicted, ...]) -> None:
        """A swap to `target` is about to stop `evicted`: log each reason, count it."""


class Swapper(Protocol):
    """An eviction policy (group, matrix or budget): pure, no state of its own."""

    def decide(self, target: str, ctx: EvictionContext) -> Eviction:
        """What must happen before `target` may run, given `ctx` (see `Eviction`)."""

    def explain(self, target: str, ctx: EvictionContext) -> str:
        """One log line describing `decide(target, ctx)` (logged when a swap starts)."""


class Scheduler(Protocol):
    """The events a scheduler consumes. All methods run on the router's run loop."""

    def on_request(self, request: Request) -> None: ...

    def on_cancel(self, request_id: int) -> None:
        """The caller went away before being answered: forget the request."""

    def on_swap_done(self, model: str, error: RouteError | None) -> None: ...

    def on_serve_done(self, model: str) -> None:
        """A granted request finished (response complete or aborted)."""

    def on_process_stopped(self, model: str) -> None:
        """A process reached `stopped` outside a swap (unload, TTL, crash): re-plan."""

    def on_ttl_expired(self, model: str) -> None:
        """The model has been idle for its ttl: stop it if nothing uses or awaits it."""

    def on_conditions_changed(self) -> None:
        """Something decisions depend on besides scheduler events changed (pins, probe
        results, time passing): re-walk whatever waits.  The router calls it after a
        probe reports, when pins change and on every tick."""

    def on_unload(self, models: tuple[str, ...], error: RouteError) -> None:
        """Fail queued requests and swap waiters for `models` with `error`, then stop them."""

    def on_shutdown(self, error: RouteError) -> None:
        """Fail every queued request and swap waiter with `error`."""

    def in_flight(self, model: str) -> int:
        """Granted-but-unfinished requests for `model` (for /running and TTL)."""

    def snapshot(self) -> QueueSnapshot:
        """What waits, what loads and what is in flight now, as a frozen copy (read by
        the UI's Queue view between two events; never changes the scheduler)."""

    def awaits_swap(self, model: str) -> bool:
        """True while a swap to `model` this scheduler started has not reported back.

        A hot reload asks this: requests waiting for that start are owed its outcome, so
        the old process keeps serving them even when the model's definition changed."""

    def adopt_in_flight(self, counts: Mapping[str, int]) -> None:
        """Count requests another scheduler granted as in flight here.

        Called on a fresh scheduler that a hot reload installs in place of a running one:
        those requests end with `on_serve_done` on this scheduler, and until then their
        models must not be evicted (and `serial` must not grant another request)."""
