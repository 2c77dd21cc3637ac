"""The scheduler's queue as a JSON document: `GET /api/queue` and the UI's Queue view.

Both read the same document so the page without JavaScript and the live view agree.
Shape (times in milliseconds, waits measured by the router since each arrival):

    {"scheduler": "serial" | "fifo",
     "queued":  [{"id", "model", "position", "waitMs"}],      # head first, position 1-based
     "loading": [{"model", "evict": [...], "waiters": [{"id", "model", "waitMs"}]}],
     "inFlight": [{"model", "count"}],
     "waiting": <queued + loading waiters>}

Under `serial` the head (position 1) is the request the one load in progress is for,
and `loading[].waiters` is empty; under `fifo` each loading entry lists its collation
group (the requests served together when that model is ready), and `queued` holds the
requests blocked behind a collision or a busy model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llama_swap.runtime.core.schedulers.base import Request
from llama_swap.runtime.core.schedulers.snapshot import QueueSnapshot

Waited = Callable[[int], float | None]


def _wait_ms(waited: Waited, request: Request) -> int | None:
    seconds = waited(request.id)
    return None if seconds is None else int(seconds * 1000)


def queue_document(snapshot: QueueSnapshot, waited: Waited) -> dict[str, Any]:
    queued = [
        {"id": r.id, "model": r.model, "position": i, "waitMs": _wait_ms(waited, r)}
        for i, r in enumerate(snapshot.queued, start=1)
    ]
    loading = [
        {
            "model": group.model,
            "evict": list(group.evict),
            "waiters": [
                {"id": r.id, "model": r.model, "waitMs": _wait_ms(waited, r)} for r in group.waiters
            ],
        }
        for group in snapshot.loading
    ]
    return {
        "scheduler": snapshot.scheduler,
        "queued": queued,
        "loading": loading,
        "inFlight": [{"model": m, "count": n} for m, n in snapshot.in_flight],
        "waiting": len(queued) + sum(len(g["waiters"]) for g in loading),
    }
