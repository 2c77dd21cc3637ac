"""The events the router's run loop consumes, and the lease a granted request holds.

Everything that changes routing state is posted to the router's run loop as
one of these frozen values, so the run loop is the only code that touches the
scheduler.  Callers (HTTP handlers, swap tasks, stop tasks, the TTL ticker,
process callbacks) only *post*; they never call the scheduler themselves.

A few events carry an `asyncio.Future` the loop resolves when it has handled
them (the future's identity, not its value, is what makes them unique).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.plan_diff import PlanDiff
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers.base import Request

if TYPE_CHECKING:
    from types import TracebackType


@dataclass(frozen=True, slots=True)
class RequestArrived:
    """A caller waits for `request.model`; the loop answers through `future`."""

    request: Request
    future: asyncio.Future[Lease] = field(compare=False)
    on_position: Callable[[int], None] | None = field(default=None, compare=False)
    # called once the scheduler admitted the request (it can no longer get 404 or 429)
    on_admitted: Callable[[], None] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class RequestCancelled:
    """The caller of `request_id` went away before it was answered."""

    request_id: int


@dataclass(frozen=True, slots=True)
class SwapDone:
    """A swap task finished: `model` is ready (error None) or could not start."""

    model: str
    error: RouteError | None


@dataclass(frozen=True, slots=True)
class ServeDone:
    """A granted request's response finished or was aborted (posted once per lease)."""

    model: str


@dataclass(frozen=True, slots=True)
class ProcessStopped:
    """A process reached `stopped` outside a swap (unload, TTL, crash)."""

    model: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A process changed state (posted from ModelProcess.on_state_change)."""

    model: str
    old: ProcessState
    new: ProcessState


@dataclass(frozen=True, slots=True)
class TtlTick:
    """Time to look for models idle longer than their ttl (posted about once a second)."""


@dataclass(frozen=True, slots=True)
class UnloadRequested:
    """Fail waiters for `models` and stop them; `done` resolves once the scheduler acted."""

    models: tuple[str, ...]
    error: RouteError
    done: asyncio.Future[None] = field(compare=False)


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    """Fail every waiter and leave the loop; `done` resolves when the loop has exited."""

    error: RouteError
    done: asyncio.Future[None] = field(compare=False)


@dataclass(frozen=True, slots=True)
class PlanApplied:
    """Replace the plan on the loop (a hot reload); `done` gets the diff applied."""

    plan: Plan
    done: asyncio.Future[PlanDiff] = field(compare=False)


@dataclass(frozen=True, slots=True)
class ProbesDone:
    """Budget probes reported: resource -> free amount now (None: the probe failed)."""

    results: tuple[tuple[str, float | None], ...]


@dataclass(frozen=True, slots=True)
class PinsChanged:
    """The models pinned from outside the plan (e.g. the active profile's) changed."""

    models: frozenset[str]


Event = (
    RequestArrived
    | RequestCancelled
    | SwapDone
    | ServeDone
    | ProcessStopped
    | StateChanged
    | TtlTick
    | UnloadRequested
    | ShutdownRequested
    | PlanApplied
    | ProbesDone
    | PinsChanged
)


class Lease:
    """A granted request: the model to proxy to, and the duty to report serve-done once.

    Use as `async with lease:` around the proxying, or call `release()`; a
    second release is a no-op, so in-flight counts stay exact whatever path
    (finished, aborted, cancelled) the handler takes.
    """

    __slots__ = ("model", "_post", "_released")

    def __init__(self, model: Model, post: Callable[[Event], None]) -> None:
        self.model = model
        self._post = post
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._post(ServeDone(self.model.id))

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
