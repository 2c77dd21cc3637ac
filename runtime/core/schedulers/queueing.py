"""The bookkeeping both schedulers keep the same way.

`serial` and `fifo` differ in their decisions (when a queued request may
proceed), not in how they hold the queue, count granted-but-unfinished
requests, refuse requests after shutdown or publish queue positions.  This
component holds that part once; each scheduler owns one and makes its
decisions around it.  Pure like the schedulers: no asyncio, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers.base import Effects, Request


class QueueBookkeeping:
    """The waiting queue, in-flight counts, shutdown error and published positions.

    `queue` is the owning scheduler's to order as its rules say (head first); the
    counts change only through `count_grant`, `count_serve_done` and `adopt_in_flight`.
    """

    def __init__(self, effects: Effects) -> None:
        self._fx = effects
        self.queue: list[Request] = []
        self._in_flight: dict[str, int] = {}
        self.closed: RouteError | None = None  # the shutdown error, once shut down
        self._published: dict[int, int] = {}

    # -- in-flight counts ----------------------------------------------------

    def in_flight(self, model: str) -> int:
        return self._in_flight.get(model, 0)

    def in_flight_counts(self) -> tuple[tuple[str, int], ...]:
        """(model, count) for every model with requests in flight, sorted by model."""
        return tuple(sorted(self._in_flight.items()))

    def any_in_flight(self) -> bool:
        return bool(self._in_flight)

    def serving(self) -> frozenset[str]:
        """The models with requests in flight."""
        return frozenset(self._in_flight)

    def count_grant(self, model: str) -> None:
        """A request of `model` was granted (and delivered): one more in flight."""
        self._in_flight[model] = self.in_flight(model) + 1

    def count_serve_done(self, model: str) -> int:
        """Count one granted request of `model` as finished.  Returns how many were in
        flight before (0: a stray report, nothing counted)."""
        count = self._in_flight.get(model, 0)
        if count > 1:
            self._in_flight[model] = count - 1
        else:
            self._in_flight.pop(model, None)
        return count

    def adopt_in_flight(self, counts: Mapping[str, int]) -> None:
        """See `Scheduler.adopt_in_flight`; zero counts are not recorded, so an empty
        table keeps meaning "nothing in flight"."""
        for model, count in counts.items():
            if count > 0:
                self._in_flight[model] = self.in_flight(model) + count

    # -- the queue -----------------------------------------------------------

    def remove(self, request_id: int) -> bool:
        """Forget a queued request; True if it was queued."""
        before = len(self.queue)
        self.queue = [r for r in self.queue if r.id != request_id]
        return len(self.queue) != before

    def fail_where(
        self,
        condition: Callable[[Request], bool],
        error: RouteError,
        on_fail: Callable[[Request], None] | None = None,
    ) -> None:
        """Remove the queued requests matching `condition` and answer each with `error`
        (then `on_fail(request)`, for a scheduler that holds something per request)."""
        keep: list[Request] = []
        failed: list[Request] = []
        for request in self.queue:
            (failed if condition(request) else keep).append(request)
        self.queue = keep
        for request in failed:
            self._fx.grant_error(request, error)
            if on_fail is not None:
                on_fail(request)

    def publish(self) -> None:
        """Tell `Effects` the 1-based queue positions, when they changed."""
        positions = {r.id: i for i, r in enumerate(self.queue, start=1)}
        if positions != self._published:
            self._published = positions
            self._fx.queue_positions(positions)

    # -- shared steps --------------------------------------------------------

    def refuse_if_closed(self, request: Request) -> bool:
        """After shutdown, answer `request` with the shutdown error; True when it did."""
        if self.closed is None:
            return False
        self._fx.grant_error(request, self.closed)
        return True

    def close(
        self, error: RouteError, on_fail: Callable[[Request], None] | None = None
    ) -> None:
        """Shut down: fail every queued request now and every later one on arrival."""
        self.closed = error
        self.fail_where(lambda r: True, error, on_fail)

    def stop_if_idle(self, model: str, *, in_swap: bool) -> None:
        """TTL expiry: stop `model` if it is READY, serves nothing, no queued request wants
        it and no swap involves it (`in_swap`, the scheduler's own notion)."""
        if (
            self._fx.model_state(model) is ProcessState.READY
            and self.in_flight(model) == 0
            and not in_swap
            and not any(r.model == model for r in self.queue)
        ):
            self._fx.stop_processes((model,))
