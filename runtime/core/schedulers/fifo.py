"""The `fifo` scheduler: the Go original's FIFO, with swaps in parallel where safe.

Pure state machine (no asyncio, no clock); the router's run loop feeds events
and implements `Effects`.  Effects must not call back into the scheduler
synchronously: outcomes of slow work come back as later events.

State: `active` (target model -> its evict list and the requests waiting for
it), `in_flight` (model -> granted-but-unfinished count) and `queued` (requests
that could not proceed yet, in priority-then-arrival order).

`on_request` first decides admission: unknown model -> 404; the model's
reserved slots at its concurrency limit (`concurrencyLimit`, default 10) -> 429
with Retry-After 1; otherwise one slot is reserved and the caller is told
(`grant_admission`) before anything else happens, so a front door never opens
a loading-state stream for a request that is then refused.  A slot is held from
admission until the request ends: its serve finishes, it is cancelled while it
waits, it is failed (swap error, unload, shutdown, model gone at a drain) or its
grant finds the caller gone.  Queued requests and swap waiters therefore count
toward the limit, as in the Go original.

Then it decides, in order (the Go original's FIFO decision order, so the
same requests are served in the same order):

1. unknown model (after a plan change, at a drain) -> 404 error;
2. a swap to the same model is active -> join its waiters (collation:
   A B A B arriving while A loads is served A A B B);
3. `running` = running processes + targets of the other active swaps;
   the swapper decides on an `EvictionContext` (running, busy, pinned, last
   uses, probe results); a `refuse` fails the request (503);
4. fast path: the model is READY, evict is empty and no active swap evicts it
   -> grant;
5. the swapper asks for probes -> run them, queue (their results re-drain);
6. the swapper says wait, or collision with an active swap (its target is in
   our evict list, our target is in its evict list, or the evict lists
   overlap) -> queue;
7. some model in evict has requests in flight -> queue (never stop a server
   that is serving);
8. otherwise start a swap (it may run in parallel with other active swaps).

Fairness (`maxWait`, seconds, 0 = off): while a queued request has waited
longer than `maxWait` ("overdue"), nothing else may overtake it: new requests
queue instead of taking the fast path or joining a swap, and a drain decides
the overdue requests first (oldest first) and leaves everything else queued
until none is overdue.  Requests already granted finish and swaps under way
complete, so an overdue request waits at most for those and its own swap.

The queue is re-walked with the same rules ("drain") whenever something that
blocked it may have cleared: a swap finished, a model's in-flight count fell
to 0, an unload, a process stopped.  Entries still blocked keep their relative
order; later entries may overtake blocked ones (this is not head-of-line FIFO).

A grant the caller did not receive (`grant_serve` -> False) is not in flight
and gives its slot back.
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
from llama_swap.runtime.core.schedulers.base import (
    Effects,
    EvictionContext,
    Request,
    Swapper,
)
from llama_swap.runtime.core.schedulers.queueing import QueueBookkeeping
from llama_swap.runtime.core.schedulers.snapshot import LoadingGroup, QueueSnapshot

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
        max_wait: float = 0,
    ) -> None:
        self._fx = effects
        self._max_wait = max_wait
        self._book = QueueBookkeeping(effects)
        self._swapper = swapper
        self._priority = dict(priority or {})
        self._limits = {
            mid: m.concurrencyLimit if m.concurrencyLimit > 0 else DEFAULT_CONCURRENCY_LIMIT
            for mid, m in models.items()
        }
        self._active: dict[str, _ActiveSwap] = {}
        # model -> admitted requests not yet ended (queued, waiting on a swap or in flight)
        self._reserved: dict[str, int] = {}
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
        for model, count in counts.items():  # they end with on_serve_done here, like ours
            if count > 0:
                self._reserved[model] = self.reserved(model) + count

    def reserved(self, model: str) -> int:
        """Admitted requests of `model` that have not ended: what the limit counts."""
        return self._reserved.get(model, 0)

    def active_swaps(self) -> dict[str, tuple[str, ...]]:
        """Active swap targets -> their evict lists (for tests and /running)."""
        return {model: sw.evict for model, sw in self._active.items()}

    def awaits_swap(self, model: str) -> bool:
        return model in self._active

    def snapshot(self) -> QueueSnapshot:
        """The blocked queue in drain order, each active swap with its collation group
        (the waiters it will serve when ready) and the in-flight counts, copied."""
        loading = tuple(LoadingGroup(model, sw.evict, tuple(sw.waiters))
                        for model, sw in self._active.items())
        return QueueSnapshot(self.name, tuple(self._book.queue), loading,
                             self._book.in_flight_counts())

    def limit(self, model: str) -> int:
        return self._limits.get(model, DEFAULT_CONCURRENCY_LIMIT)

    def priority(self, model: str) -> int:
        return self._priority.get(model, 0)

    # -- events --------------------------------------------------------------

    def on_request(self, request: Request) -> None:
        if self._book.refuse_if_closed(request) or not self._admit(request):
            return
        if self._overdue() or not self._decide(request):
            self._enqueue(request)
        self._book.publish()

    def on_cancel(self, request_id: int) -> None:
        for request in [r for r in self._book.queue if r.id == request_id]:
            self._release(request.model)
        self._book.remove(request_id)
        for sw in self._active.values():
            for waiter in [w for w in sw.waiters if w.id == request_id]:
                self._release(waiter.model)
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
                self._fail(waiter, error)
            else:
                self._grant(waiter)
        self._drain()

    def on_serve_done(self, model: str) -> None:
        before = self._book.count_serve_done(model)
        if before > 0:
            self._release(model)
        if before <= 1:  # the last one (or a stray report)
            self._drain()

    def on_process_stopped(self, model: str) -> None:
        self._drain()

    def on_conditions_changed(self) -> None:
        if self._book.queue:
            self._drain()

    def on_ttl_expired(self, model: str) -> None:
        in_swap = model in self._active or any(model in sw.evict for sw in self._active.values())
        self._book.stop_if_idle(model, in_swap=in_swap)

    def on_unload(self, models: tuple[str, ...], error: RouteError) -> None:
        targets = set(models)
        for model in [m for m in self._active if m in targets]:
            self._released[model] = self._released.get(model, 0) + 1
            for waiter in self._active.pop(model).waiters:
                self._fail(waiter, error)
        self._book.fail_where(lambda r: r.model in targets, error, self._release_request)
        # in-flight counts stay: the dying requests still report on_serve_done
        self._fx.stop_processes(tuple(models))
        self._drain()

    def on_shutdown(self, error: RouteError) -> None:
        active, self._active = self._active, {}
        for sw in active.values():
            for waiter in sw.waiters:
                self._fail(waiter, error)
        self._book.close(error, self._release_request)
        self._book.publish()

    # -- admission -----------------------------------------------------------

    def _admit(self, request: Request) -> bool:
        """Refuse (404, 429) or reserve a slot and tell the caller; False: nothing more
        to do for this request (refused, or the caller left before it was admitted)."""
        model = request.model
        if self._fx.model_state(model) is None:
            self._fx.grant_error(request, unknown_model(model))
            return False
        if self.reserved(model) >= self.limit(model):
            self._fx.grant_error(request, too_many_requests())
            return False
        if not self._fx.grant_admission(request):
            return False  # nothing reserved for a caller that is gone
        self._reserved[model] = self.reserved(model) + 1
        return True

    def _release(self, model: str) -> None:
        """An admitted request of `model` ended: its slot is free again."""
        count = self._reserved.get(model, 0)
        if count > 1:
            self._reserved[model] = count - 1
        else:
            self._reserved.pop(model, None)

    def _release_request(self, request: Request) -> None:
        self._release(request.model)

    def _fail(self, request: Request, error: RouteError) -> None:
        """Answer an admitted request with `error` and free its slot."""
        self._fx.grant_error(request, error)
        self._release(request.model)

    # -- decisions -----------------------------------------------------------

    def _decide(self, request: Request) -> bool:
        """Run the decision tree; False means "keep it queued"."""
        model = request.model
        state = self._fx.model_state(model)
        if state is None:
            self._fail(request, unknown_model(model))
            return True
        active = self._active.get(model)
        if active is not None:
            active.waiters.append(request)
            return True
        if state is ProcessState.READY and not self._active and self._alone(model):
            # the common case, decided without building the swapper's view: the target
            # serves and is the only model running, so no policy has anything to evict
            self._grant(request)
            return True
        ctx = self._context(model, state)
        decision = self._swapper.decide(model, ctx)
        if decision.refuse:
            log.warning("%s", self._swapper.explain(model, ctx))
            self._fail(request, RouteError(503, decision.refuse))
            return True
        evict = decision.models
        collides = self._collides(model, evict)
        if state is ProcessState.READY and not evict and not collides and not decision.wait:
            self._grant(request)
            return True
        if decision.probe:
            self._fx.run_probes(decision.probe)
            return False
        if decision.wait or collides or any(self.in_flight(m) > 0 for m in evict):
            return False
        self._active[model] = _ActiveSwap(evict, [request])
        log.info("%s", self._swapper.explain(model, ctx))
        if decision.evict:
            self._fx.evicting(model, decision.evict)
        self._fx.start_swap(model, evict)
        return True

    def _context(self, model: str, state: ProcessState) -> EvictionContext:
        """What the swapper sees when it decides for `model` (see EvictionContext)."""
        running = self._running_set(exclude=model)
        busy = self._book.serving()
        if self._book.queue or self._active:
            more = set(busy)
            more.update(r.model for r in self._book.queue)  # queued ahead of this request
            more.update(self._active)
            for sw in self._active.values():  # starting, and being stopped by a swap
                more.update(sw.evict)
            busy = frozenset(more)
        # A model stopping outside a swap (TTL, unload) stays a candidate: evicting it only
        # makes the swap wait for its exit, and its memory is counted until then.
        seen = self._fx.observe()
        return EvictionContext(
            running=tuple(running),
            target_loaded=state in (ProcessState.READY, ProcessState.STARTING),
            busy=busy,
            pinned=seen.pinned,
            last_used=seen.last_used,
            free=seen.free,
            now=seen.now,
        )

    def _is_overdue(self, request: Request, now: float) -> bool:
        return self._max_wait > 0 and now - request.arrived > self._max_wait

    def _overdue(self) -> bool:
        """True while a queued request has waited longer than maxWait."""
        if self._max_wait <= 0 or not self._book.queue:
            return False
        now = self._fx.observe().now
        return any(self._is_overdue(r, now) for r in self._book.queue)

    def _grant(self, request: Request) -> None:
        """Hand an admitted request to its model; its slot stays taken until serve-done,
        or is given back at once when the caller is gone."""
        if self._fx.grant_serve(request):
            self._book.count_grant(request.model)
        else:
            self._release(request.model)

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
        if self._max_wait > 0 and pending:
            now = self._fx.observe().now
            late = sorted((r for r in pending if self._is_overdue(r, now)), key=lambda r: r.id)
            if late:
                late_ids = {r.id for r in late}
                self._drain_overdue(late, [r for r in pending if r.id not in late_ids])
                return
        for request in pending:
            if book.closed is not None or not self._decide(request):
                book.queue.append(request)
        book.publish()

    def _drain_overdue(self, late: list[Request], rest: list[Request]) -> None:
        """Decide the overdue requests (oldest first); the rest waits until none is left
        blocked, then is decided as usual."""
        book = self._book
        blocked: list[Request] = []
        for request in late:
            if book.closed is not None or not self._decide(request):
                blocked.append(request)
                book.queue.append(request)
        if blocked:
            book.queue.extend(rest)  # everything else stays queued behind them, in its order
        else:
            for request in rest:
                if book.closed is not None or not self._decide(request):
                    book.queue.append(request)
        book.publish()

    def _running_set(self, exclude: str) -> list[str]:
        running = set(self._fx.running_models())
        running.update(m for m in self._active if m != exclude)
        return sorted(running)

    def _alone(self, model: str) -> bool:
        """`model` is the only model running (or starting, or stopping)."""
        running = self._fx.running_models()
        return len(running) == 1 and running[0] == model

    def _collides(self, target: str, evict: Sequence[str]) -> bool:
        for model, sw in self._active.items():
            if model == target:
                continue
            if model in evict or target in sw.evict or set(evict) & set(sw.evict):
                return True
        return False
