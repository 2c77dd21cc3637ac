"""Request/response captures behind `GET /api/captures/{id}` (reference 5.15).

Why this shape: a capture is taken for every recorded exchange while
`captureBuffer` (MB) is above 0, so it must cost little and hold bounded
memory.  A `Draft` is opened when the exchange starts: it keeps the request's
headers (sensitive ones redacted) and hangs a `BodyCollector` on the activity
meter, which sees the response chunks as they are relayed and keeps them only
while they fit in the cache (a response larger than the whole cache is given
up at once, never held).  When the activity entry is recorded, the draft is
packed (a small JSON head plus the raw bodies), zlib-compressed and put in the
`CaptureStore`: a FIFO cache bounded in compressed bytes, oldest evicted first;
an item larger than the whole cache is skipped.  The JSON answer (bodies in
base64) is built only when somebody asks for it.

Audio and image routes keep only some parts (their bodies are large binary
data), as the Go original does; a non-200 answer keeps only the request side.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

MB = 1024 * 1024
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
_HEAD = struct.Struct(">I")  # length of the JSON head that starts a packed capture


def fields_for(path: str) -> int:
    return FIELDS_BY_PATH.get(path, ALL_FIELDS)


def flat_headers(headers: Any) -> dict[str, str]:
    """First value of each header (as the client/upstream spelled its name), redacted."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        if key not in out:
            out[key] = REDACTED if key.lower() in SENSITIVE_HEADERS else value
    return out


class CaptureStore:
    """Compressed captures by activity id, FIFO, at most `capacity_mb()` MB in total.

    The size is read on every add and lookup, so a reload that shrinks (or zeroes)
    `captureBuffer` evicts the oldest at once."""

    def __init__(self, capacity_mb: Callable[[], int]) -> None:
        self._capacity_mb = capacity_mb
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self.size = 0  # compressed bytes held

    @property
    def capacity(self) -> int:
        return max(0, self._capacity_mb()) * MB

    def _trim(self, limit: int) -> None:
        items = self._items
        while items and self.size > limit:
            _, blob = items.popitem(last=False)
            self.size -= len(blob)

    def add(self, id: int, blob: bytes) -> bool:
        """Store `blob`, evicting the oldest as needed; False if it exceeds the whole cache."""
        capacity = self.capacity
        if len(blob) > capacity:
            self._trim(capacity)
            return False
        old = self._items.pop(id, None)
        if old is not None:
            self.size -= len(old)
        self._trim(capacity - len(blob))
        self._items[id] = blob
        self.size += len(blob)
        return True

    def get(self, id: int) -> bytes | None:
        self._trim(self.capacity)
        return self._items.get(id)

    def __contains__(self, id: object) -> bool:
        return id in self._items

    def __len__(self) -> int:
        return len(self._items)


def pack(
    id: int,
    req_path: str,
    req_headers: dict[str, str] | None,
    req_body: bytes | None,
    resp_headers: dict[str, str] | None,
    resp_body: bytes | None,
) -> bytes:
    """A capture as stored: zlib(<head length><JSON head><request body><response body>)."""
    head = json.dumps({
        "id": id,
        "req_path": req_path,
        "req_headers": req_headers,
        "resp_headers": resp_headers,
        "req_len": -1 if req_body is None else len(req_body),
        "resp_len": -1 if resp_body is None else len(resp_body),
    }, separators=(",", ":")).encode()
    parts = [_HEAD.pack(len(head)), head, req_body or b"", resp_body or b""]
    return zlib.compress(b"".join(parts), 1)


def unpack(blob: bytes) -> dict[str, Any]:
    """The capture as `GET /api/captures/{id}` answers it (bodies in base64, or null)."""
    raw = zlib.decompress(blob)
    (n,) = _HEAD.unpack_from(raw)
    head = json.loads(raw[_HEAD.size:_HEAD.size + n])
    pos = _HEAD.size + n
    bodies: list[str | None] = []
    for key in ("req_len", "resp_len"):
        length = head.pop(key)
        if length < 0:
            bodies.append(None)
            continue
        bodies.append(base64.b64encode(raw[pos:pos + length]).decode("ascii"))
        pos += length
    return {
        "id": head["id"],
        "req_path": head["req_path"],
        "req_headers": head["req_headers"],
        "req_body": bodies[0],
        "resp_headers": head["resp_headers"],
        "resp_body": bodies[1],
    }


class BodyCollector:
    """A meter's sink: keeps the response body while it fits in `limit` bytes, else nothing."""

    __slots__ = ("limit", "chunks", "size", "overflow")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False

    def __call__(self, chunk: bytes) -> None:
        if self.overflow or not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.overflow = True
            self.chunks = []
            return
        self.chunks.append(chunk)

    def body(self) -> bytes | None:
        if self.overflow:
            return None
        return b"".join(self.chunks)


class Draft:
    """One exchange's capture while it is under way; `store(id)` files it.

    `request_body()` gives the request body as forwarded (None when it was streamed
    and not kept); `meter` is the activity meter of the exchange (status, headers,
    `sink`)."""

    __slots__ = ("_store", "_path", "_fields", "_req_headers", "_request_body", "_meter", "_body")

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
        self._req_headers = flat_headers(req_headers) if fields & REQ_HEADERS else None
        self._request_body = request_body
        self._meter = meter
        self._body: BodyCollector | None = None
        if fields & RESP_BODY:
            self._body = meter.sink = BodyCollector(store.capacity)

    def store(self, id: int) -> bool:
        """Pack and store this capture as entry `id`; False when it does not fit."""
        capacity = self._store.capacity
        if capacity <= 0:
            return False
        fields = self._fields
        req_body = self._request_body() if fields & REQ_BODY else None
        meter = self._meter
        resp_headers: dict[str, str] | None = None
        resp_body: bytes | None = None
        if meter.status == 200:  # otherwise only the request side is kept
            if fields & RESP_HEADERS and meter.headers is not None:
                resp_headers = flat_headers(meter.headers)
            if self._body is not None:
                resp_body = self._body.body()
                if resp_body is None:  # larger than the whole cache: not captured
                    return False
        size = len(req_body or b"") + len(resp_body or b"")
        if size > capacity:
            return False
        blob = pack(id, self._path, self._req_headers, req_body, resp_headers, resp_body)
        return self._store.add(id, blob)
