"""Schedulers: pure state machines that decide when a request may reach its model.

`make_scheduler` picks the one named by `routing.scheduler` ("serial", the
default, or "fifo").  The contract (events in, effects out) is in `base.py`;
how each decides is in docs/schedulers.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from llama_swap.compiler.plan import Model, Routing
from llama_swap.runtime.core.schedulers.base import Effects, Request, Scheduler, Swapper
from llama_swap.runtime.core.schedulers.fifo import FifoScheduler
from llama_swap.runtime.core.schedulers.serial import SerialScheduler

__all__ = [
    "Effects",
    "FifoScheduler",
    "Request",
    "Scheduler",
    "SerialScheduler",
    "Swapper",
    "make_scheduler",
]

SCHEDULERS = ("serial", "fifo")


def make_scheduler(
    routing: Routing, models: Mapping[str, Model], effects: Effects, swapper: Swapper
) -> Scheduler:
    """Build the scheduler `routing.scheduler` names.

    `serial` ignores `swapper`, `routing.priority` and `routing.maxWait` (it always
    evicts every other model and serves in arrival order); `fifo` uses them all.
    """
    use = routing.scheduler or "serial"
    if use == "serial":
        return SerialScheduler(models, effects)
    if use == "fifo":
        return FifoScheduler(models, effects, swapper, routing.priority, routing.maxWait)
    raise ValueError(f"unknown scheduler {use!r} (valid: {', '.join(SCHEDULERS)})")
