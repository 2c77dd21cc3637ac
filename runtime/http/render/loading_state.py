"""`sendLoadingState`: show model-loading progress inside the SSE answer.

When a streaming chat request must wait for its model, the 200 SSE response is
started at once and progress is streamed as OpenAI-style chunks whose delta is
`reasoning_content`: a separator, `llama-swap loading model: <id>`, then every
tick a `.`, the newest `Queue position: #N` (serial/fifo queue updates), or now
and then a remark; text is paced (about 75 characters/s).  When the grant
arrives the loader stops, `Done! (<secs>s)` and a separator are written, and the
caller streams the upstream's answer into the same response.  A grant error is
written as one SSE `data:` frame holding the usual error JSON (status stays 200).

Whether a request gets this prelude is admission's call (runtime/core/admission.py).
The waiting itself is abstract: `run(acquire)` calls `acquire(on_position)` (e.g.
`lambda cb: router.acquire(model, on_position=cb)`), so this module knows
nothing about routers.  Time and randomness are injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from llama_swap.runtime.core.error_body import error_payload
from llama_swap.runtime.core.errors import RouteFailure

T = TypeVar("T")

SEPARATOR = "━━━━━"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}
REMARKS: tuple[str, ...] = (
    "Warming up the tensors...",
    "Convincing the weights to cooperate...",
    "Counting parameters, please hold.",
    "Allocating memory with great care.",
    "Still here. Models are heavy.",
    "Reading a few gigabytes, one page at a time.",
    "Asking the GPU nicely.",
    "Good things come to those who wait.",
)


def sse_chunk(text: str) -> bytes:
    payload = {"choices": [{"delta": {"reasoning_content": text}}]}
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


class Stream(Protocol):
    """The started SSE response the progress is written into."""

    async def write(self, data: bytes) -> Any: ...


class LoadingState:
    """Streams loading progress into a prepared SSE response while a grant is awaited."""

    def __init__(
        self,
        response: Stream,
        model_id: str,
        *,
        tick: float = 0.75,
        chars_per_second: float = 75.0,
        chunk_chars: int = 4,
        remarks: Sequence[str] = REMARKS,
        first_remark: tuple[float, float] = (2.0, 5.0),
        next_remark: tuple[float, float] = (5.0, 9.0),
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._resp = response
        self._model_id = model_id
        self._tick = tick
        self._cps = chars_per_second
        self._chunk = max(1, chunk_chars)
        self._remarks = tuple(remarks)
        self._first_remark = first_remark
        self._next_remark = next_remark
        self._rng = rng or random.Random()
        self._clock = clock
        self._position: int | None = None
        self._wake = asyncio.Event()
        self.client_gone = False

    def on_position(self, position: int) -> None:
        """Queue-position callback: keeps only the newest value (never blocks)."""
        self._position = position
        self._wake.set()

    async def _write(self, data: bytes) -> None:
        try:
            await self._resp.write(data)
        except (ConnectionError, RuntimeError):
            self.client_gone = True
            raise ConnectionResetError("client disconnected during loading") from None

    async def _say(self, text: str) -> None:
        """Write `text` in small chunks paced at `chars_per_second`."""
        for i in range(0, len(text), self._chunk):
            piece = text[i : i + self._chunk]
            await self._write(sse_chunk(piece))
            if self._cps > 0:
                await asyncio.sleep(len(piece) / self._cps)

    async def _loader(self, started: float) -> None:
        await self._say(SEPARATOR + "\n")
        await self._say(f"llama-swap loading model: {self._model_id}\n")
        remark_at = started + self._rng.uniform(*self._first_remark)
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick)
            now = self._clock()
            if self._position is not None:
                position, self._position = self._position, None
                await self._say(f"\nQueue position: #{position}\n")
            elif self._remarks and now >= remark_at:
                await self._say("\n" + self._rng.choice(self._remarks) + "\n")
                remark_at = now + self._rng.uniform(*self._next_remark)
            else:
                await self._say(".")

    async def run(self, acquire: Callable[[Callable[[int], None]], Awaitable[T]]) -> T:
        """Await `acquire(self.on_position)` while streaming progress; return its result.

        On a grant error the error frame is written and the RouteFailure re-raised (the
        caller then just returns the prepared response).  If the client goes away the
        acquire is cancelled and ConnectionResetError raised.
        """
        started = self._clock()
        waiter: asyncio.Task[T] = asyncio.ensure_future(acquire(self.on_position))
        loader = asyncio.ensure_future(self._loader(started))
        try:
            await asyncio.wait({waiter, loader}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            waiter.cancel()
            loader.cancel()
            raise
        if not waiter.done():  # the loader ended first: the client is gone
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await waiter
            raise ConnectionResetError("client disconnected during loading")
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(loader, 1.0)
        error = waiter.exception()
        if not self.client_gone:
            elapsed = self._clock() - started
            with contextlib.suppress(ConnectionResetError):
                await self._say(f"\nDone! ({elapsed:.1f}s)\n{SEPARATOR}\n\n")
        if isinstance(error, RouteFailure):
            if not self.client_gone:
                with contextlib.suppress(ConnectionResetError):
                    await self._write(b"data: " + error_payload(error.error) + b"\n\n")
            raise error
        return waiter.result()
