"""The activity log and captures of one model-dispatched exchange, over plain values.

POST requests to model routes are recorded in the activity log: the upstream's answer is
shown to a `ResponseMeter` as it is relayed (never delayed), and one entry is appended
when the answer is finished or aborted, and its duration and time to first byte are
observed for `/metrics`.  While `captureBuffer` > 0 the exchange is also
captured, by reference to the bytes and headers already at hand: nothing is copied or
encoded until `/api/captures` asks.  Both front doors record through this, with the
request's headers as whatever case-insensitive mapping they have.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.schedulers.fifo import grant_metadata
from llama_swap.runtime.http.observe.activity import ResponseMeter
from llama_swap.runtime.http.observe.captures import Draft
from llama_swap.runtime.http.request.body import BytesBody, TeeBody
from llama_swap.runtime.http.services import Services


class recording:  # noqa: N801 -- used like a function: `with recording(...) as rec:`
    """Append one activity entry when the block ends (normally or not) if an answer
    started.  When llama-swap answers itself (an error), the block reports that answer
    with `answered`, so it is recorded too.  (A class, not a generator context manager:
    this runs on every request.)"""

    __slots__ = (
        "_services", "_model_id", "_req_path", "_meter", "_wall", "_t0", "_draft", "_selector",
    )

    def __init__(
        self, services: Services, headers: Any, model_id: str, req_path: str,
        meter: ResponseMeter | None, source: Any = None, selector: str | None = None,
    ) -> None:
        """`headers`: the request's; `source`: what holds the request body as forwarded
        (the `Extracted` request, once filtered), captured when captures are on;
        `selector`: the selector the request was routed through, if any (`model_id`
        is then the target it picked)."""
        self._services = services
        self._model_id = model_id
        self._selector = selector
        self._req_path = req_path
        self._meter = meter
        self._draft: Draft | None = None
        if meter is not None:
            store = services.captures
            if store.capacity > 0:  # references only: rendered when /api/captures asks
                self._draft = Draft(store, req_path, headers, lambda: _body_bytes(source), meter)

    def __enter__(self) -> recording:
        if self._meter is not None:
            self._wall = time.time()
            self._t0 = time.monotonic()
        return self

    def answered(self, status: int, headers: Mapping[str, str], body: object) -> None:
        """The answer the block gave, when it is llama-swap's own (an error): recorded
        unless the upstream's answer was already metered.  `body`: bytes when held in
        memory (anything else is not metered)."""
        meter = self._meter
        if meter is not None and meter.status is None:
            meter.start(status, headers)
            if isinstance(body, bytes):
                meter.feed(body)

    def __exit__(self, *exc: object) -> None:
        meter = self._meter
        if meter is None or meter.status is None:  # not metered, or the client left first
            return
        meter.finish()
        services = self._services
        t0 = self._t0
        seconds = time.monotonic() - t0
        services.metrics.request(
            self._model_id, seconds, meter.first_byte - t0 if meter.first_byte else None)
        services.activity.record(
            started=self._wall,
            duration_ms=seconds * 1000,
            model=self._model_id,
            req_path=self._req_path,
            meter=meter,
            capture=None if self._draft is None else self._draft.store,
            metadata=entry_metadata(services.plan, self._model_id, self._selector),
        )


def scheduler_metadata(plan: Plan, model_id: str) -> dict[str, str] | None:
    """The scheduler's notes on a local model's request (fifo: its priority), else None."""
    routing = plan.routing
    if routing.scheduler == "fifo" and model_id in plan.models:
        return grant_metadata(routing.priority, model_id)
    return None


def entry_metadata(plan: Plan, model_id: str, selector: str | None) -> dict[str, str] | None:
    """An activity entry's `metadata`: the scheduler's notes, plus `selector` naming the
    selector a request was routed through, so the log shows both the concrete model (the
    entry's `model`) and the name that picked it.  A profile pin leaves no note: the
    entry's model is the pin's target, as in the Go original."""
    notes = scheduler_metadata(plan, model_id)
    if selector:
        notes = {**notes, "selector": selector} if notes else {"selector": selector}
    return notes


def _body_bytes(source: Any) -> bytes | None:
    """The request body as forwarded when it was held in memory (JSON, forms) or kept
    while streamed (`TeeBody`), else None."""
    body = getattr(source, "body", None)
    if isinstance(body, BytesBody):
        return body.data
    return body.kept() if isinstance(body, TeeBody) else None
