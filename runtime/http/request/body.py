"""Request bodies as the proxy forwards them: bytes, a live stream, or a spool plus a stream.

Model extraction may have to read part of a request body before the request
can be routed (the `model` field of a multipart form may come after a large
file).  A `ForwardBody` is what is left to send upstream: its length when
known (so upstreams that reject chunked uploads still get a Content-Length)
and an async iterator of chunks.  Nothing here holds a whole large body in
memory: `SpooledBody` keeps what was read ahead in a temporary file (in memory
only while small) and continues with the live client stream.

Every read of a client stream counts the bytes against `maxRequestBody`
(runtime/core/limits.py): a chunked upload is refused with `BodyTooLarge` (a 413)
as soon as it crosses the limit, whether it is being read for routing or streamed
upstream.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from aiohttp import StreamReader

from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.core.limits import body_too_large, exceeds

CHUNK = 64 * 1024
SPOOL_IN_MEMORY = 1024 * 1024


class BodyTooLarge(RouteFailure):
    """A client body crossed `maxRequestBody` while it was read: answered 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(body_too_large(limit))


async def read_limited(stream: StreamReader, limit: int) -> bytes:
    """The whole body of `stream`, refused with BodyTooLarge once it grows past `limit`
    (0: no limit), so a chunked body without a Content-Length is bounded too."""
    if limit <= 0:
        return await stream.read()
    parts: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


async def limited_chunks(stream: StreamReader, limit: int, already: int = 0) -> AsyncIterator[bytes]:
    """The rest of `stream` in chunks of up to CHUNK bytes; `already` bytes of the body
    were read before.  Raises BodyTooLarge when the total crosses `limit` (0: none)."""
    size = already
    async for chunk in stream.iter_chunked(CHUNK):
        size += len(chunk)
        if exceeds(size, limit):
            raise BodyTooLarge(limit)
        yield chunk


class ForwardBody(Protocol):
    @property
    def length(self) -> int | None:
        """Bytes that will be sent, or None when unknown (sent chunked)."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The bytes to forward, in order; may be iterated once."""

    def close(self) -> None:
        """Release temporary storage (idempotent)."""


class BytesBody:
    """A body held in memory (JSON bodies, possibly rewritten by filters)."""

    def __init__(self, data: bytes):
        self.data = data

    @property
    def length(self) -> int | None:
        return len(self.data)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.data:
            yield self.data

    def close(self) -> None:
        pass


class StreamBody:
    """The client's body stream, untouched (nothing was read ahead)."""

    def __init__(self, stream: StreamReader, length: int | None, limit: int = 0):
        self._stream = stream
        self._length = length
        self._limit = limit  # maxRequestBody (0: none)

    @property
    def length(self) -> int | None:
        return self._length

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in limited_chunks(self._stream, self._limit):
            yield chunk

    def close(self) -> None:
        pass


class TeeBody:
    """A streamed body that keeps a copy of what it forwards while the total stays within
    `limit` bytes, for a capture: `kept()` is the whole body once it was all forwarded,
    else None (too large, or not sent to the end).  Memory stays bounded by `limit`."""

    def __init__(self, inner: ForwardBody, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self._chunks: list[bytes] | None = []
        self._size = 0
        self._done = False

    @property
    def length(self) -> int | None:
        return self._inner.length

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner.chunks():
            if self._chunks is not None:
                self._size += len(chunk)
                if self._size > self._limit:
                    self._chunks = None
                else:
                    self._chunks.append(chunk)
            yield chunk
        self._done = True

    def kept(self) -> bytes | None:
        if not self._done or self._chunks is None:
            return None
        return b"".join(self._chunks)

    def close(self) -> None:
        self._inner.close()


@dataclass(frozen=True, slots=True)
class Replacement:
    """Replace spool bytes [start, end) with `data` when forwarding."""

    start: int
    end: int
    data: bytes


class SpooledBody:
    """Read-ahead bytes (in a temp file) followed by the rest of the live client stream."""

    def __init__(
        self,
        spool: IO[bytes],
        spooled: int,
        rest: StreamReader | None,
        original_length: int | None,
        replacements: Sequence[Replacement] = (),
        limit: int = 0,
    ):
        self._limit = limit  # maxRequestBody (0: none), counted over spool and stream
        self._spool = spool
        self._spooled = spooled
        self._rest = rest
        self._replacements = sorted(replacements, key=lambda r: r.start)
        self._original_length = original_length
        delta = sum(len(r.data) - (r.end - r.start) for r in self._replacements)
        self._length = None if original_length is None else original_length + delta

    @staticmethod
    def new_spool() -> IO[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115

    def with_replacements(self, replacements: Sequence[Replacement]) -> SpooledBody:
        return SpooledBody(
            self._spool, self._spooled, self._rest, self._original_length, replacements,
            self._limit,
        )

    @property
    def length(self) -> int | None:
        return self._length

    def _spool_ranges(self) -> list[tuple[int, int] | bytes]:
        out: list[tuple[int, int] | bytes] = []
        pos = 0
        for r in self._replacements:
            out.append((pos, r.start))
            out.append(r.data)
            pos = r.end
        out.append((pos, self._spooled))
        return out

    async def chunks(self) -> AsyncIterator[bytes]:
        for item in self._spool_ranges():
            if isinstance(item, bytes):
                if item:
                    yield item
                continue
            start, end = item
            self._spool.seek(start)
            remaining = end - start
            while remaining > 0:
                data = self._spool.read(min(CHUNK, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data
        if self._rest is not None:
            async for chunk in limited_chunks(self._rest, self._limit, self._spooled):
                yield chunk

    def close(self) -> None:
        self._spool.close()
