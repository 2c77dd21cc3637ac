"""Router and reload events, fanned out to whoever subscribed.

Its own module (not `services`) so the installed build can compile it (runtime/native.py):
every request posts two events through it, and `services` holds a dataclass whose field
types are only imported for the type checker, which compiled code cannot have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
EventListener = Callable[[Event], None]


class EventListeners:
    """Router and reload events, fanned out to every subscriber (the /api/events hub,
    the preload-after-reload hook, a caller's own)."""

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []

    def add(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def __call__(self, event: Event) -> None:
        for listener in tuple(self._listeners):  # a listener may add another
            listener(event)
