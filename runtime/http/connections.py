"""Every client connection of one server, whichever front door holds it: the sweeper
that closes connections past their phase's timeout and the connection limit.

Why one table: a connection starts on the fast path and may be handed to aiohttp, and
the limit counts both.  A connection registers when accepted and leaves when lost; the
handoff moves it from the fast path's entry to the aiohttp guard's without leaving.
The rule (phases, timeouts, which connection makes room) is runtime/core/connections.py;
this module only keeps the set and the timer.  Per request it costs nothing: the
connections stamp times, the sweeper reads them every `sweep_interval`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from llama_swap.runtime.core.connections import ConnectionLimits, Phase, make_room

log = logging.getLogger("llama_swap.connections")


class Tracked(Protocol):
    """A client connection as the table sees it."""

    def phase(self) -> tuple[Phase, float]:
        """The phase and when it started (time.monotonic())."""
        ...

    def expire(self, phase: Phase) -> None:
        """Close the connection: it waited too long in `phase` (or makes room)."""
        ...


class ConnectionTable:
    """The live client connections of one server."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._live: set[Tracked] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.refused = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._live)

    def admit(self, conn: Tracked) -> bool:
        """Register a new connection; at the limit, close the most expendable one to make
        room, or refuse (False: the caller closes the new connection at once)."""
        limit = self.limits.max_connections
        if limit and len(self._live) >= limit:
            victim = make_room((c, *c.phase()) for c in self._live)
            if victim is None:
                self.refused += 1
                return False
            self._live.discard(victim)
            victim.expire(Phase.HEAD)
        self._live.add(conn)
        if self._sweeper is None:
            self._schedule()
        return True

    def replace(self, old: Tracked, new: Tracked) -> None:
        """`new` takes `old`'s place (a fast-path connection handed to aiohttp)."""
        if old in self._live:
            self._live.discard(old)
            self._live.add(new)

    def remove(self, conn: Tracked) -> None:
        self._live.discard(conn)

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self.limits.sweep_interval(), self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        overdue = self.limits.overdue
        for conn in tuple(self._live):
            phase, since = conn.phase()
            if overdue(phase, since, now):
                self._live.discard(conn)
                self.expired += 1
                log.debug("closing a client connection: %s timeout", phase.value)
                conn.expire(phase)
        if self._live:
            self._schedule()

    def close(self) -> None:
        """Shutdown: stop the sweeper (the connections are closed by their owners)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
