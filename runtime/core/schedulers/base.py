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
from typing import TYPE_CHECKING, Protocol

from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.process_state import ProcessState

if TYPE_CHECKING:
    from llama_swap.runtime.core.schedulers.snapshot import QueueSnapshot


@dataclass(frozen=True, slots=True)
class Request:
    """A request waiting for a local model. `id` is unique for the runtime's life."""

    id: int
    model: str  # resolved local model id


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


class Swapper(Protocol):
    """An eviction policy (group or matrix): pure, no state of its own."""

    def eviction_for(self, target: str, running: Sequence[str]) -> tuple[str, ...]:
        """Which of `running` must stop before `target` may run (in `running` order)."""

    def describe(self, target: str, running: Sequence[str]) -> str:
        """One log line explaining the decision (for the swap-start log)."""


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
