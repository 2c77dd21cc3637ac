"""Whether the upstream already closed an idle pooled connection, asked of the kernel.

Why: real llama-server closes its connection right after every streamed answer, and
the close reaches us a fraction of a millisecond after the answer's last byte.  A
client that fires its next request at once can find that connection back in the pool
before the event loop has read the upstream's EOF; the request would then be written
into a connection nobody reads, fail, and -- a POST may never be sent twice -- come
back as a 502.  The kernel already holds the EOF by then, so asking it whether the
idle socket is readable tells a dead connection from a live one before anything is
written: an idle pooled connection has nothing to read unless the peer closed it (or
sent bytes nobody asked for, which makes it unusable too).  It is one `poll` system
call with a zero timeout per reuse, on the transport's descriptor (nothing is read, no
descriptor or socket object is made).

A connection idle for less than `PEEK_AFTER_IDLE` is not asked: under load a pooled
connection is taken again within microseconds, and the peek would then cost every
request a few microseconds to guard against an upstream that closes right after an
answer without saying so -- which llama-server does only after chunked answers, and
those connections are never pooled (runtime/core/forwarding.py).  The connections the
peek is for, closed by the upstream's keep-alive timeout, have been idle far longer.
"""

from __future__ import annotations

import select
from typing import Protocol

# Readable, urgent data, or the peer's half of the connection closed; errors and a full
# hang-up are always reported.
_EVENTS = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0)
PEEK_AFTER_IDLE = 0.001  # seconds a pooled connection was idle before it is peeked at


class HasExtraInfo(Protocol):
    """An asyncio transport, as far as this module needs one."""

    def get_extra_info(self, name: str, default: object = None) -> object: ...


def peer_closed(transport: HasExtraInfo | None) -> bool:
    """True when the connection cannot carry a new request: no socket, the peer's EOF or
    an error is waiting, or the peer sent bytes nobody asked for.  False when the socket
    is open and quiet."""
    if transport is None:
        return True
    return descriptor_closed(socket_fd(transport))


def socket_fd(transport: HasExtraInfo) -> int | None:
    """The transport's descriptor; None when it is not a socket we can ask (a test double).
    A connection's descriptor stays the same while it is open, so callers may keep it."""
    fileno = getattr(transport.get_extra_info("socket"), "fileno", None)
    return fileno() if fileno is not None else None


def descriptor_closed(fd: int | None) -> bool:
    """`peer_closed` for a descriptor from `socket_fd`: None trusts the loop's view (open),
    a negative one (the transport closed its socket) is closed."""
    if fd is None:
        return False
    if fd < 0:
        return True
    probe = select.poll()
    probe.register(fd, _EVENTS)
    try:
        return bool(probe.poll(0))
    except InterruptedError:
        return False
