"""What dashboards watch live: the `/api/events` hub, the in-flight counter, model status.

`EventHub` fans messages out to SSE subscribers (1024-message buffer each;
overflow dropped, never blocking the publisher).  Frames are
`event:message\\ndata:{"type":T,"data":"<json string>"}\\n\\n` with T one of
modelStatus, logData, metrics, inflight (and budget, under the budget router:
capacities and what the loaded models use).  A new subscriber first gets the
burst (proxy history, upstream history, modelStatus, metrics, inflight), then
live messages.  `StreamCloser` ends every open stream at shutdown so the
server does not wait for long-lived clients.

The aiohttp handlers serving these (and the log streams) are in runtime/http/aio/live.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.http.render.models_list import capability_flags

EVENT_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Content-Type-Options": "nosniff",
    "X-Accel-Buffering": "no",
}
LOG_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "X-Content-Type-Options": "nosniff",
    "X-Accel-Buffering": "no",
}
INVALID_LOGGER = "invalid logger. Use 'proxy', 'upstream' or a model's ID"


def sse_frame(kind: str, data: Any) -> bytes:
    inner = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return b"event:message\ndata:" + json.dumps({"type": kind, "data": inner}).encode() + b"\n\n"


class EventHub:
    """Publish/subscribe for /api/events; publishing never blocks."""

    def __init__(self, buffer: int = 1024):
        self._buffer = buffer
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self.dropped = 0

    def has_subscribers(self) -> bool:
        return bool(self._subscribers)

    def publish(self, kind: str, data: Any) -> None:
        if not self._subscribers:
            return
        frame = sse_frame(kind, data)
        for queue in tuple(self._subscribers):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.dropped += 1

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[bytes | None]]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(self._buffer)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every subscriber's stream."""
        for queue in tuple(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)


class InflightCounter:
    """Requests currently being served by model-dispatched routes; changes go to the hub."""

    def __init__(self, hub: EventHub | None = None):
        self.total = 0
        self.hub = hub

    def track(self) -> _Tracked:
        """`with counter.track():` counts the block as one request in flight."""
        return _Tracked(self)

    def change(self, delta: int) -> None:
        self.total += delta
        hub = self.hub
        if hub is not None and hub._subscribers:
            hub.publish("inflight", {"total": self.total})


class _Tracked:
    __slots__ = ("_counter",)

    def __init__(self, counter: InflightCounter) -> None:
        self._counter = counter

    def __enter__(self) -> None:
        self._counter.change(+1)

    def __exit__(self, *exc: object) -> None:
        self._counter.change(-1)


class StreamCloser:
    """Tracks the tasks serving long-lived streams so shutdown can end them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    def close_all(self) -> None:
        self.closed = True
        for task in tuple(self._tasks):
            task.cancel()


def model_status(plan: Plan, states: Mapping[str, ProcessState]) -> list[dict[str, Any]]:
    """The modelStatus payload: local models by id (state default stopped), then peers' models
    (state "")."""
    out: list[dict[str, Any]] = []
    for model_id, m in plan.models.items():
        rec: dict[str, Any] = {
            "id": model_id,
            "name": m.name,
            "description": m.description,
            "state": str(states.get(model_id, ProcessState.STOPPED)),
            "unlisted": m.unlisted,
            "peerID": "",
        }
        if m.aliases:
            rec["aliases"] = list(m.aliases)
        if flags := capability_flags(m.capabilities):
            rec["capabilities"] = sorted(flags)
        if m.resources:  # declared sizes (budget router)
            rec["resources"] = dict(m.resources)
        out.append(rec)
    for peer_id, peer in plan.peers.items():  # every field, empty, as Go's struct encodes them
        for name in peer.models:
            out.append({"id": name, "name": "", "description": "", "state": "", "unlisted": False,
                        "peerID": peer_id})
    return out
