"""The `fifo` scheduler: the Go original's FIFO, with swaps in parallel where safe.

Pure state machine (no asyncio, no clock); the router's run loop feeds events
and implements `Effects`.  Effects must not call back into the scheduler
synchronously: outcomes of slow work come back as later events.

State: `active` (target model -> its evict list and the requests waiting for
it), `in_flight` (model -> granted-but-unfinished count) and `queued` (requests
that could not proceed yet, in priority-then-arrival order).

`on_request` decides, in order (the Go original's FIFO decision order, so the
same requests are served in the same order):

1. unknown model -> 404 error;
2. a swap to the same model is active -> join its waiters (collation:
   A B A B arriving while A loads is served A A B B);
3. `running` = running processes + targets of the other active swaps;
   `evict` = swapper.eviction_for(model, running);
4. fast path: the model is READY, evict is empty and no active swap evicts it
   -> grant (subject to the concurrency limit);
5. collision with an active swap (its target is in our evict list, our target
   is in its evict list, or the evict lists overlap) -> queue;
6. some model in evict has requests in flight -> queue (never stop a server
   that is serving);
7. otherwise start a swap (it may run in parallel with other active swaps).

The queue is re-walked with the same rules ("drain") whenever something that
blocked it may have cleared: a swap finished, a model's in-flight count fell
to 0, an unload, a process stopped.  Entries still blocked keep their relative
order; later entries may overtake blocked ones (this is not head-of-line FIFO).

Every grant checks the model's concurrency limit (`concurrencyLimit`, default
10) against its in-flight count; the excess gets 429 with Retry-After 1.  A
grant the caller did not receive (`grant_serve` -> False) is not in flight.
Queue positions (1-based) are published via `Effects.queue_positions` when
they change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.errors import RouteError, too_many_requests, unknown_model
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers.base import Effects, Request, Swapper
from llama_swap.runtime.core.schedulers.queueing import QueueBookkeeping

log = logging.getLogger("llama_swap.scheduler")

DEFAULT_CONCURRENCY_LIMIT = 10


@dataclass(slots=True)
class _ActiveSwap:
    evict: tuple[str, ...]
    waiters: list[Request] = field(default_factory=list)


def grant_metadata(priority: Mapping[str, int], model: str) -> dict[str, str]:
    """What the fifo scheduler notes on every request it grants or refuses, for the
    activity log (as the original's request metadata): the model's priority."""
    return {"fifo_priority": str(priority.get(model, 0))}


class FifoScheduler:
    """`Scheduler` for `routing.scheduler.use: fifo`."""

    name = "fifo"

    def __init__(
        self,
        models: Mapping[str, Model],
        effects: Effects,
        swapper: Swapper,
        priority: Mapping[str, int] | None = None,
    ) -> None:
        self._fx = effects
        self._book = QueueBookkeeping(effects)
        self._swapper = swapper
        self._priority = dict(priority or {})
        self._limits = {
            mid: m.concurrencyLimit if m.concurrencyLimit > 0 else DEFAULT_CONCURRENCY_LIMIT
            for mid, m in models.items()
        }
        self._active: dict[str, _ActiveSwap] = {}
        # swaps released by an unload whose `on_swap_done` is still to come, per model: the
        # router reports the swaps to one model in the order they were started, so the next
        # report(s) for that model belong to them, not to a swap started after the unload
        self._released: dict[str, int] = {}

    # -- observation ---------------------------------------------------------

    def in_flight(self, model: str) -> int:
        return self._book.in_flight(model)

    def queued(self) -> tuple[Request, ...]:
        """Requests not yet answered, head first (for tests and /running)."""
        return tuple(self._book.queue)

    def adopt_in_flight(self, counts: Mapping[str, int]) -> None:
        self._book.adopt_in_flight(counts)

    def active_swaps(self) -> dict[str, tuple[str, ...]]:
        """Active swap targets -> their evict lists (for tests and /running)."""
        return {model: sw.evict for model, sw in self._active.items()}

    def awaits_swap(self, model: str) -> bool:
        return model in self._active

    def limit(self, model: str) -> int:
        return self._limits.get(model, DEFAULT_CONCURRENCY_LIMIT)

    def priority(self, model: str) -> int:
        return self._priority.get(model, 0)

    # -- events --------------------------------------------------------------

    def on_request(self, request: Request) -> None:
        if self._book.refuse_if_closed(request):
            return
        if not self._decide(request):
            self._enqueue(request)
        self._book.publish()

    def on_cancel(self, request_id: int) -> None:
        self._book.remove(request_id)
        for sw in self._active.values():
            sw.waiters = [w for w in sw.waiters if w.id != request_id]
        # an active swap left without waiters still completes; its result is dropped
        self._book.publish()

    def on_swap_done(self, model: str, error: RouteError | None) -> None:
        released = self._released.get(model, 0)
        if released:  # the outcome of a swap an unload released: dropped
            if released == 1:
                del self._released[model]
            else:
                self._released[model] = released - 1
            return
        sw = self._active.pop(model, None)
        if sw is None:
            return  # released by an unload or shutdown
        for waiter in sw.waiters:
            if error is not None:
                self._fx.grant_error(waiter, error)
            else:
                self._grant(waiter)
        self._drain()

    def on_serve_done(self, model: str) -> None:
        if self._book.count_serve_done(model) <= 1:  # the last one (or a stray report)
            self._drain()

    def on_process_stopped(self, model: str) -> None:
        self._drain()

    def on_ttl_expired(self, model: str) -> None:
        in_swap = model in self._active or any(model in sw.evict for sw in self._active.values())
        self._book.stop_if_idle(model, in_swap=in_swap)

    def on_unload(self, models: tuple[str, ...], error: RouteError) -> None:
        targets = set(models)
        for model in [m for m in self._active if m in targets]:
            self._released[model] = self._released.get(model, 0) + 1
            for waiter in self._active.pop(model).waiters:
                self._fx.grant_error(waiter, error)
        self._book.fail_where(lambda r: r.model in targets, error)
        # in-flight counts stay: the dying requests still report on_serve_done
        self._fx.stop_processes(tuple(models))
        self._drain()

    def on_shutdown(self, error: RouteError) -> None:
        active, self._active = self._active, {}
        for sw in active.values():
            for waiter in sw.waiters:
                self._fx.grant_error(waiter, error)
        self._book.close(error)
        self._book.publish()

    # -- decisions -----------------------------------------------------------

    def _decide(self, request: Request) -> bool:
        """Run the decision tree; False means "keep it queued"."""
        model = request.model
        state = self._fx.model_state(model)
        if state is None:
            self._fx.grant_error(request, unknown_model(model))
            return True
        active = self._active.get(model)
        if active is not None:
            active.waiters.append(request)
            return True
        running = self._running_set(exclude=model)
        evict = tuple(self._swapper.eviction_for(model, running))
        collides = self._collides(model, evict)
        if state is ProcessState.READY and not evict and not collides:
            self._grant(request)
            return True
        if collides or any(self.in_flight(m) > 0 for m in evict):
            return False
        self._active[model] = _ActiveSwap(evict, [request])
        log.info("%s", self._swapper.describe(model, running))
        self._fx.start_swap(model, evict)
        return True

    def _grant(self, request: Request) -> None:
        model = request.model
        if self.in_flight(model) >= self.limit(model):
            self._fx.grant_error(request, too_many_requests())
            return
        if self._fx.grant_serve(request):
            self._book.count_grant(model)

    def _enqueue(self, request: Request) -> None:
        """Insert before the first queued entry of strictly lower priority."""
        p = self.priority(request.model)
        queue = self._book.queue
        index = len(queue)
        for i, queued in enumerate(queue):
            if self.priority(queued.model) < p:
                index = i
                break
        queue.insert(index, request)

    def _drain(self) -> None:
        book = self._book
        pending, book.queue = book.queue, []
        for request in pending:
            if book.closed is not None or not self._decide(request):
                book.queue.append(request)
        book.publish()

    def _running_set(self, exclude: str) -> list[str]:
        running = set(self._fx.running_models())
        running.update(m for m in self._active if m != exclude)
        return sorted(running)

    def _collides(self, target: str, evict: Sequence[str]) -> bool:
        for model, sw in self._active.items():
            if model == target:
                continue
            if model in evict or target in sw.evict or set(evict) & set(sw.evict):
                return True
        return False
