"""Serving a request as an entry of the in-flight list, on the aiohttp front door.

`tracked` registers the request with a `cancel` that cancels the handler's task -- the same
thing a client disconnect does (the app runs with `handler_cancellation=True`), so whatever
the request was doing unwinds the same way: a scheduler wait is withdrawn, a lease is
released, an upstream response is closed (the model server sees the disconnect). What the
client then gets differs: nothing of the answer sent yet -> a 499 `request cancelled`
error; an answer under way -> the connection is closed, the answer cut short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from llama_swap.runtime.core.errors import request_cancelled
from llama_swap.runtime.http.aio.stack import PREPARED
from llama_swap.runtime.http.observe.inflight import InflightTracker
from llama_swap.runtime.http.render.errors import route_error_response


class _Progress:
    """The answer as far as the client got it: the response once prepared."""

    __slots__ = ("_request",)

    def __init__(self, request: web.Request) -> None:
        self._request = request

    def response_headers(self) -> Iterable[tuple[str, str]] | None:
        resp = self._request.get(PREPARED)
        return None if resp is None else resp.headers.items()

    def response_bytes(self) -> int:
        resp = self._request.get(PREPARED)
        if resp is None:
            return 0
        counted = getattr(resp, "body_bytes", None)
        if isinstance(counted, int):
            return counted
        return resp.content_length or 0


async def tracked(
    request: web.Request,
    tracker: InflightTracker,
    model: str,
    req_path: str,
    serve: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """`serve()` while listed in flight as a request for `model` at `req_path`."""
    task = asyncio.current_task()
    assert task is not None
    entry = tracker.add(
        model=model, req_path=req_path, method=request.method, headers=request.headers,
        peer=request.remote or "", cancel=task.cancel,
    )
    entry.progress = _Progress(request)
    try:
        return await serve()
    except asyncio.CancelledError:
        if not entry.cancelled or task.uncancel() > 0:  # the client left (too): as ever
            raise
        prepared: web.StreamResponse | None = request.get(PREPARED)
        if prepared is None:
            return route_error_response(request.headers, request_cancelled())
        if request.transport is not None:
            request.transport.close()  # flush what was relayed, end without a clean EOF
        return prepared
    finally:
        tracker.remove(entry)
