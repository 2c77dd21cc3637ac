"""Live views for dashboards, as aiohttp handlers: `GET /api/events` (SSE), `GET /logs`,
`GET /logs/stream[/{id}]`.  A HEAD to a stream is answered with its headers and ends
there: a stream never ends by itself, and a HEAD answer has no body.

The handlers are built by factories taking the objects they read (the hub, log buffers),
so they do not depend on the router's module; `StreamCloser` (observe/events.py) ends
every open stream at shutdown so the server does not wait for long-lived clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from aiohttp import web

from llama_swap.runtime.http.aio.proxy import CountingResponse
from llama_swap.runtime.http.observe.events import (
    EVENT_HEADERS,
    INVALID_LOGGER,
    LOG_HEADERS,
    EventHub,
    StreamCloser,
    sse_frame,
)
from llama_swap.runtime.http.render.errors import error_response


class LogSource(Protocol):
    """What the log endpoints need of runtime.engine.logs.LogBuffer."""

    def history(self) -> str: ...

    def subscribe(self, maxsize: int = 1024) -> Any: ...


def close_on_shutdown(closer: StreamCloser) -> Callable[[web.Application], Any]:
    """For `app.on_shutdown`: end the streams before the server waits for handlers."""

    async def on_shutdown(_app: web.Application) -> None:
        closer.close_all()

    return on_shutdown


def make_events_handler(
    hub: EventHub,
    burst: Callable[[], list[tuple[str, Any]]],
    closer: StreamCloser | None = None,
) -> Callable[[web.Request], Any]:
    """`GET /api/events`: `burst()` gives the initial (type, data) messages."""

    async def events(request: web.Request) -> web.StreamResponse:
        resp = CountingResponse(headers=EVENT_HEADERS)
        if request.method == "HEAD":  # the headers are the whole answer
            await resp.prepare(request)
            return resp
        with hub.subscribe() as queue, (closer.track() if closer else contextlib.nullcontext()):
            await resp.prepare(request)
            try:
                for kind, data in burst():
                    await resp.write(sse_frame(kind, data))
                while True:
                    frame = await queue.get()
                    if frame is None:
                        break
                    await resp.write(frame)
            except ConnectionError:
                pass
            except asyncio.CancelledError:
                if closer is None or not closer.closed:
                    raise
        return resp

    return events


def make_logs_handler(mux: Callable[[], LogSource]) -> Callable[[web.Request], Any]:
    """`GET /logs`: the mux history as text/plain; browsers are sent to the UI."""

    async def logs(request: web.Request) -> web.StreamResponse:
        if "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPFound("/ui/")
        return web.Response(text=mux().history(), content_type="text/plain")

    return logs


async def _iterate(subscription: Any) -> AsyncIterator[str]:
    async for chunk in subscription:
        yield chunk


def make_log_stream_handler(
    resolve: Callable[[str], LogSource | None],
    closer: StreamCloser | None = None,
) -> Callable[[web.Request], Any]:
    """`GET /logs/stream[/{id}]`: history (unless `no-history`) then live output.

    `resolve("")` is the mux, "proxy"/"upstream" their buffers, a model id or alias that
    model's own log; None -> 400.
    """

    async def log_stream(request: web.Request) -> web.StreamResponse:
        source = resolve(request.match_info.get("id", ""))
        if source is None:
            return error_response(request.headers, 400, INVALID_LOGGER)
        resp = CountingResponse(headers=LOG_HEADERS)
        resp.enable_chunked_encoding()
        if request.method == "HEAD":  # the headers are the whole answer
            await resp.prepare(request)
            return resp
        subscription = source.subscribe(10)
        try:
            with closer.track() if closer else contextlib.nullcontext():
                await resp.prepare(request)
                if "no-history" not in request.rel_url.query:
                    history = source.history()
                    if history:
                        await resp.write(history.encode())
                async for chunk in _iterate(subscription):
                    await resp.write(chunk.encode())
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            if closer is None or not closer.closed:
                raise
        finally:
            subscription.close()
        return resp

    return log_stream
