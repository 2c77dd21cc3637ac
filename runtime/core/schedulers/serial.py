"""The `serial` scheduler (the default): one request at a time, one model in memory.

Pure state machine (no asyncio, no clock): the router's run loop feeds events,
the scheduler acts through `Effects`.  Its rules:

- one global queue of local-model requests in exact arrival order; the head is
  the only request that may make progress;
- at most ONE request is granted-and-unfinished across all local models: the
  next head waits for `on_serve_done`, even when it wants the same model (no
  batching, no reordering);
- before the head's model serves, every other model is stopped and has exited:
  the head's model is granted directly only when it is READY and is the only
  running model, otherwise `start_swap(head_model, evict=<all other running>)`
  (the swap stops them first); at most one swap runs at a time;
- groups, matrix, persistent groups and priority are ignored (no swapper);
- a request cancelled while queued is removed and never triggers a load; if
  the head is cancelled while its swap runs, the swap completes and the next
  head proceeds;
- a failed swap fails the head AND every request queued for the same model at
  that moment (they would only wait out another health-check timeout); later
  arrivals try again;
- a grant to a caller that is gone (`grant_serve` -> False) is not in flight:
  the next head proceeds at once;
- unload fails queued requests for the unloaded models; shutdown fails all;
- every request for a known model is admitted on arrival (serial has no limit
  to refuse it for).

Queue positions (1-based, head = 1, by request id) are published through
`Effects.queue_positions` whenever they change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.errors import RouteError, unknown_model
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers.base import Effects, Request
from llama_swap.runtime.core.schedulers.queueing import QueueBookkeeping
from llama_swap.runtime.core.schedulers.snapshot import LoadingGroup, QueueSnapshot

log = logging.getLogger("llama_swap.scheduler")


@dataclass(slots=True)
class _Swap:
    """The one swap in progress; `discarded` once unload/shutdown released its head."""

    model: str
    evict: tuple[str, ...]
    discarded: bool = False


class SerialScheduler:
    """`Scheduler` for `routing.scheduler.use: serial`."""

    name = "serial"

    def __init__(self, models: Mapping[str, Model], effects: Effects) -> None:
        # `models`: the constructor shape every scheduler shares; serial needs no per-model setting
        self._fx = effects
        self._book = QueueBookkeeping(effects)
        self._swap: _Swap | None = None

    # -- observation ---------------------------------------------------------

    def in_flight(self, model: str) -> int:
        return self._book.in_flight(model)

    def queued(self) -> tuple[Request, ...]:
        """Requests not yet answered, head first (for tests and /running)."""
        return tuple(self._book.queue)

    def adopt_in_flight(self, counts: Mapping[str, int]) -> None:
        self._book.adopt_in_flight(counts)

    @property
    def swapping(self) -> str | None:
        """The target of the swap in progress, if any."""
        return self._swap.model if self._swap else None

    def awaits_swap(self, model: str) -> bool:
        return self.swapping == model

    def snapshot(self) -> QueueSnapshot:
        """The queue (head first: the head is the request the running swap is for),
        the swap in progress and the in-flight counts, copied."""
        swap = self._swap
        loading = () if swap is None else (LoadingGroup(swap.model, swap.evict, ()),)
        return QueueSnapshot(self.name, tuple(self._book.queue), loading,
                             self._book.in_flight_counts())

    # -- events --------------------------------------------------------------

    def on_request(self, request: Request) -> None:
        if self._book.refuse_if_closed(request):
            return
        if self._fx.model_state(request.model) is None:
            self._fx.grant_error(request, unknown_model(request.model))
            return
        if not self._fx.grant_admission(request):
            return  # the caller left already: it never queues, never triggers a load
        self._book.queue.append(request)
        self._advance()

    def on_cancel(self, request_id: int) -> None:
        if self._book.remove(request_id):
            self._advance()

    def on_swap_done(self, model: str, error: RouteError | None) -> None:
        swap = self._swap
        if swap is None or swap.model != model:
            return  # stale: not the swap we are waiting for
        self._swap = None
        if error is not None and not swap.discarded:
            self._book.fail_where(lambda r: r.model == model, error)
        self._advance()

    def on_serve_done(self, model: str) -> None:
        if self._book.count_serve_done(model) > 0:
            self._advance()

    def on_process_stopped(self, model: str) -> None:
        self._advance()

    def on_ttl_expired(self, model: str) -> None:
        self._book.stop_if_idle(model, in_swap=self.swapping == model)

    def on_conditions_changed(self) -> None:
        """Nothing to do: serial's decisions depend on its events alone."""

    def on_unload(self, models: tuple[str, ...], error: RouteError) -> None:
        targets = set(models)
        if self._swap is not None and self._swap.model in targets:
            self._swap.discarded = True
        self._book.fail_where(lambda r: r.model in targets, error)
        self._fx.stop_processes(tuple(models))
        self._advance()

    def on_shutdown(self, error: RouteError) -> None:
        if self._swap is not None:
            self._swap.discarded = True
        self._book.close(error)
        self._book.publish()

    # -- the pump ------------------------------------------------------------

    def _advance(self) -> None:
        """Move the head forward as far as it can go now, then publish positions."""
        book = self._book
        while book.closed is None and book.queue and self._swap is None and not book.any_in_flight():
            head = book.queue[0]
            state = self._fx.model_state(head.model)
            if state is None:
                book.queue.pop(0)
                self._fx.grant_error(head, unknown_model(head.model))
                continue
            others = tuple(m for m in self._fx.running_models() if m != head.model)
            if state is ProcessState.READY and not others:
                book.queue.pop(0)
                if self._fx.grant_serve(head):
                    book.count_grant(head.model)
                continue  # granted (loop stops: in flight) or caller gone (next head)
            self._swap = _Swap(head.model, others)
            log.info("serial: model=%s evict=[%s]", head.model, " ".join(others))
            self._fx.start_swap(head.model, others)
        book.publish()
