"""When a client connection has waited too long, as one rule both front doors apply.

Why: without read timeouts a client that sends a request head one byte at a time
(slowloris), stops in the middle of a body, or opens connections and sends nothing
holds a connection -- a file descriptor and buffers -- for as long as it likes, and
enough of them exhaust the process.  Each connection is, at any moment, in one phase:

- HEAD: waiting for a complete request head; measured from the first byte of the
  head (or from the accept, for a connection that has sent nothing yet);
- BODY: waiting for more body bytes of a request whose head is in, while the server is
  reading; measured from the last byte received (a gap, not a total: uploads may be
  large and slow, but they must keep moving);
- IDLE: between requests on a kept-alive connection; measured from the end of the
  last response;
- BUSY: a request is being served (its body is in, or the server stopped reading to
  apply back-pressure).  Never timed: answers may wait minutes for a model to load.

When the connection limit is reached, a new connection may take the place of the
connection that has been waiting longest for a request head, then of the one idle the
longest; connections serving a request are never closed for another.  The defaults
are argued in docs/security.md.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar


class Phase(enum.Enum):
    HEAD = "head"
    BODY = "body"
    IDLE = "idle"
    BUSY = "busy"


DEFAULT_HEAD_TIMEOUT = 30.0
DEFAULT_BODY_IDLE_TIMEOUT = 60.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
DEFAULT_MAX_CONNECTIONS = 512


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Seconds per phase (0 turns that timeout off) and the connection limit (0: none)."""

    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    body_idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def timeout(self, phase: Phase) -> float:
        """The timeout of `phase`, 0 when it is not timed."""
        if phase is Phase.HEAD:
            return self.head_timeout
        if phase is Phase.BODY:
            return self.body_idle_timeout
        if phase is Phase.IDLE:
            return self.keepalive_timeout
        return 0.0

    def overdue(self, phase: Phase, since: float, now: float) -> bool:
        """Whether a connection in `phase` since `since` must be closed at `now`."""
        limit = self.timeout(phase)
        return limit > 0 and now - since >= limit

    def sweep_interval(self) -> float:
        """How often connections are checked: a quarter of the shortest timeout (a
        connection is closed at most 25 % late), between 50 ms and 5 s."""
        timed = [t for t in (self.head_timeout, self.body_idle_timeout,
                             self.keepalive_timeout) if t > 0]
        return min(5.0, max(0.05, min(timed) / 4)) if timed else 5.0


T = TypeVar("T")

# Which connections may make room for a new one, most expendable first.
_EVICTABLE = (Phase.HEAD, Phase.IDLE)


def make_room(connections: Iterable[tuple[T, Phase, float]]) -> T | None:
    """The connection to close so a new one can be accepted at the limit: the one
    waiting longest for a request head, else the one idle the longest, else None
    (every connection is serving a request: the new one is refused)."""
    best: dict[Phase, tuple[float, T]] = {}
    for conn, phase, since in connections:
        if phase in _EVICTABLE:
            held = best.get(phase)
            if held is None or since < held[0]:
                best[phase] = (since, conn)
    for phase in _EVICTABLE:
        if phase in best:
            return best[phase][1]
    return None
