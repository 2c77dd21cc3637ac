"""What a scheduler holds right now, as one frozen value (the UI's Queue view, `/api/queue`).

Why a value: the scheduler's state belongs to the router's run loop; an HTTP handler
may read it between two events (same thread, nothing is half-updated), but must not
keep references into lists the scheduler mutates.  `snapshot()` copies what it holds
into these tuples, so the reader can render at leisure.  No clock here: how long a
request has waited is the router's to add (it stamps arrivals).
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_swap.runtime.core.schedulers.base import Request


@dataclass(frozen=True, slots=True)
class LoadingGroup:
    """A start in progress: its target, the models it stops first, and the requests
    that will be served by it when it is ready (fifo's collation group; empty under
    serial, whose waiting head stays at the front of `queued`)."""

    model: str
    evict: tuple[str, ...]
    waiters: tuple[Request, ...]


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """`queued`: requests that cannot proceed yet, in the order the scheduler will
    consider them (head first); `loading`: starts in progress; `in_flight`: granted and
    unfinished requests per model (model, count), sorted by model."""

    scheduler: str
    queued: tuple[Request, ...]
    loading: tuple[LoadingGroup, ...]
    in_flight: tuple[tuple[str, int], ...]
