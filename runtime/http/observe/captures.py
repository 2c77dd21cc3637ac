"""Request/response captures behind `GET /api/captures/{id}`.

Why this shape: a capture is taken for every recorded exchange while
`captureBuffer` (MB) is above 0, so filing one must cost next to nothing on
the request path.  Nothing is copied, redacted, encoded or compressed there:
a `Capture` holds references to what the proxy already has -- the request
body bytes it forwarded, the request and response header lists as received,
and the response body the activity meter kept (the relayed chunks, joined
once at the end).  The meter keeps the body only while it fits in the cache,
so a streamed response larger than the whole cache is given up as soon as it
outgrows it, never held.  `CaptureStore` is a FIFO bounded in raw bytes
(bodies, header names and values, and a fixed allowance per item for
bookkeeping), oldest evicted first -- headers count because a client may send a
megabyte of them, and a few thousand such captures would otherwise fit in a
"5 MB" cache; an item larger than the whole cache is skipped.  Redaction of
sensitive headers, base64 of the bodies and the JSON answer are done by
`Capture.render()`, only when `GET /api/captures/{id}` asks.

Audio and image routes keep only some parts (their bodies are large binary
data), as the Go original does; a non-200 answer keeps only the request side.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

MB = 1024 * 1024
ITEM_OVERHEAD = 1024  # bytes counted per capture besides its bodies and headers (objects)
REDACTED = "[REDACTED]"
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)

REQ_HEADERS, REQ_BODY, RESP_HEADERS, RESP_BODY = 1, 2, 4, 8
ALL_FIELDS = REQ_HEADERS | REQ_BODY | RESP_HEADERS | RESP_BODY
# Routes carrying large binary payloads keep only the parts worth reading.
FIELDS_BY_PATH: Mapping[str, int] = {
    "/v1/audio/speech": REQ_HEADERS | REQ_BODY | RESP_HEADERS,
    "/v1/audio/voices": REQ_HEADERS | RESP_HEADERS | RESP_BODY,
    "/v1/audio/transcriptions": REQ_HEADERS | RESP_HEADERS | RESP_BODY,
    "/v1/images/generations": REQ_HEADERS | REQ_BODY | RESP_HEADERS,
    "/v1/images/edits": REQ_HEADERS | RESP_HEADERS,
    "/sdapi/v1/txt2img": REQ_HEADERS | REQ_BODY | RESP_HEADERS,
    "/sdapi/v1/img2img": REQ_HEADERS | RESP_HEADERS,
}


def fields_for(path: str) -> int:
    return FIELDS_BY_PATH.get(path, ALL_FIELDS)


def flat_headers(headers: Any) -> dict[str, str]:
    """First value of each header (as the client/upstream spelled its name), redacted."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        if key not in out:
            out[key] = REDACTED if key.lower() in SENSITIVE_HEADERS else value
    return out


def header_bytes(headers: Any) -> int:
    """Bytes of a header list's names and values (0 for None).  The fast path's raw
    pairs count themselves without being decoded; other header lists are iterated."""
    if headers is None:
        return 0
    counted = getattr(headers, "byte_size", None)
    if counted is not None:
        return int(counted())
    return sum(len(name) + len(value) for name, value in headers.items())


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


class Capture:
    """One stored exchange: references to the parts kept (None: not captured)."""

    __slots__ = ("id", "req_path", "req_headers", "req_body", "resp_headers", "resp_body", "size")

    def __init__(
        self, id: int, req_path: str, req_headers: Any, req_body: bytes | None,
        resp_headers: Any, resp_body: bytes | None,
    ) -> None:
        self.id = id
        self.req_path = req_path
        self.req_headers = req_headers
        self.req_body = req_body
        self.resp_headers = resp_headers
        self.resp_body = resp_body
        self.size = (
            ITEM_OVERHEAD
            + (0 if req_body is None else len(req_body))
            + (0 if resp_body is None else len(resp_body))
            + header_bytes(req_headers)
            + header_bytes(resp_headers)
        )

    def render(self) -> dict[str, Any]:
        """The capture as `GET /api/captures/{id}` answers it (redacted, bodies in base64)."""
        req_headers, resp_headers = self.req_headers, self.resp_headers
        return {
            "id": self.id,
            "req_path": self.req_path,
            "req_headers": None if req_headers is None else flat_headers(req_headers),
            "req_body": _b64(self.req_body),
            "resp_headers": None if resp_headers is None else flat_headers(resp_headers),
            "resp_body": _b64(self.resp_body),
        }


class CaptureStore:
    """Captures by activity id, FIFO, at most `capacity_mb()` MB of raw bytes in total.

    The size is read on every add and lookup, so a reload that shrinks (or zeroes)
    `captureBuffer` evicts the oldest at once."""

    def __init__(self, capacity_mb: Callable[[], int]) -> None:
        self._capacity_mb = capacity_mb
        self._items: OrderedDict[int, Capture] = OrderedDict()
        self.size = 0  # raw bytes held (`Capture.size` summed)

    @property
    def capacity(self) -> int:
        mb = self._capacity_mb()
        return mb * MB if mb > 0 else 0

    def _trim(self, limit: int) -> None:
        items = self._items
        while items and self.size > limit:
            _, old = items.popitem(last=False)
            self.size -= old.size

    def add(self, capture: Capture) -> bool:
        """Store `capture`, evicting the oldest as needed; False if it exceeds the whole cache."""
        capacity = self.capacity
        size = capture.size
        if size > capacity:
            self._trim(capacity)
            return False
        old = self._items.pop(capture.id, None)
        if old is not None:
            self.size -= old.size
        if self.size + size > capacity:
            self._trim(capacity - size)
        self._items[capture.id] = capture
        self.size += size
        return True

    def get(self, id: int) -> Capture | None:
        self._trim(self.capacity)
        return self._items.get(id)

    def __contains__(self, id: object) -> bool:
        return id in self._items

    def __len__(self) -> int:
        return len(self._items)


class Draft:
    """One exchange's capture while it is under way; `store(id)` files it.

    Opening a draft asks the exchange's activity meter to keep the response body
    (up to the cache size) when the route captures it.  `request_body()` gives the
    request body as forwarded (None when it was streamed and not kept), read when
    the draft is filed; `req_headers` is kept as is and redacted on read."""

    __slots__ = ("_store", "_path", "_fields", "_req_headers", "_request_body", "_meter")

    def __init__(
        self,
        store: CaptureStore,
        req_path: str,
        req_headers: Any,
        request_body: Callable[[], bytes | None],
        meter: Any,
    ) -> None:
        self._store = store
        self._path = req_path
        self._fields = fields = fields_for(req_path)
        self._req_headers = req_headers
        self._request_body = request_body
        self._meter = meter
        if fields & RESP_BODY:
            meter.capture_limit = store.capacity

    def store(self, id: int) -> bool:
        """File this capture as entry `id`; False when it does not fit (or captures are off)."""
        fields = self._fields
        meter = self._meter
        resp_body = meter.take_captured()
        resp_headers = None
        if meter.status == 200:  # otherwise only the request side is kept
            if fields & RESP_HEADERS:
                resp_headers = meter.headers
            if fields & RESP_BODY:
                if resp_body is None:  # larger than the whole cache: not captured
                    return False
            else:
                resp_body = None
        else:
            resp_body = None
        capture = Capture(
            id,
            self._path,
            self._req_headers if fields & REQ_HEADERS else None,
            self._request_body() if fields & REQ_BODY else None,
            resp_headers,
            resp_body,
        )
        return self._store.add(capture)
