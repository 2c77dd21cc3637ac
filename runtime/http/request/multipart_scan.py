"""Find form fields in a multipart/form-data stream without holding it in memory.

A sans-I/O incremental scanner: feed it the body in chunks of any size; it
records the value (and the absolute byte span of the value) of the wanted
non-file fields, e.g. `model` and `stream`, and keeps in memory only what it
has not decided about yet (at most one header block or one delimiter's worth of
file bytes).  File contents are skipped, never stored.  The spans let a caller
replace the `model` value in the original bytes (the `useModelName` rewrite)
while the rest of the body is forwarded byte for byte, field order preserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from aiohttp.multipart import parse_content_disposition

MAX_HEADER_BLOCK = 16 * 1024
MAX_FIELD_VALUE = 64 * 1024


class MultipartError(ValueError):
    """The stream is not a well-formed multipart body (rendered as a 400)."""


@dataclass(frozen=True, slots=True)
class FieldValue:
    value: bytes
    start: int  # absolute offset of the first value byte in the body
    end: int  # absolute offset one past the last value byte


class _State(Enum):
    PREAMBLE = 1
    BOUNDARY_LINE = 2
    HEADERS = 3
    BODY = 4
    DONE = 5


class MultipartScanner:
    """Incremental scan of one multipart body for the values of `wanted` fields."""

    def __init__(self, boundary: str, wanted: tuple[str, ...] = ("model", "stream")):
        if not boundary:
            raise MultipartError("missing multipart boundary")
        self._delim = b"\r\n--" + boundary.encode("latin-1")
        self._wanted = wanted
        self.fields: dict[str, FieldValue] = {}
        self._state = _State.PREAMBLE
        # The body is scanned as if preceded by CRLF so the first delimiter needs no special case.
        self._buf = b"\r\n"
        self._base = -2  # absolute offset of self._buf[0]
        self._part: str | None = None  # wanted field name of the current part, else None
        self._value_start = 0

    @property
    def done(self) -> bool:
        """True once every wanted field was seen or the closing delimiter was read."""
        return self._state is _State.DONE or all(w in self.fields for w in self._wanted)

    @property
    def finished(self) -> bool:
        """True once the closing delimiter was read."""
        return self._state is _State.DONE

    def feed(self, data: bytes) -> None:
        if self._state is _State.DONE:
            return
        self._buf += data
        while self._step():
            pass

    def _drop(self, n: int) -> None:
        self._buf = self._buf[n:]
        self._base += n

    def _step(self) -> bool:
        """Advance as far as the buffered bytes allow; False when more input is needed."""
        state = self._state
        if state is _State.PREAMBLE:
            i = self._buf.find(self._delim)
            if i < 0:
                self._drop(max(0, len(self._buf) - len(self._delim) + 1))
                return False
            self._drop(i + len(self._delim))
            self._state = _State.BOUNDARY_LINE
            return True
        if state is _State.BOUNDARY_LINE:
            if len(self._buf) < 2:
                return False
            if self._buf.startswith(b"--"):
                self._state = _State.DONE
                self._buf = b""
                return False
            j = self._buf.find(b"\r\n")
            if j < 0:
                if len(self._buf) > MAX_HEADER_BLOCK:
                    raise MultipartError("malformed boundary line")
                return False
            if self._buf[:j].strip(b" \t"):
                raise MultipartError("malformed boundary line")
            self._drop(j + 2)
            self._state = _State.HEADERS
            return True
        if state is _State.HEADERS:
            if self._buf.startswith(b"\r\n"):
                headers = b""
                self._drop(2)
            else:
                j = self._buf.find(b"\r\n\r\n")
                if j < 0:
                    if len(self._buf) > MAX_HEADER_BLOCK:
                        raise MultipartError("part headers too large")
                    return False
                headers = self._buf[:j]
                self._drop(j + 4)
            self._part = self._wanted_name(headers)
            self._value_start = self._base
            self._state = _State.BODY
            return True
        if state is _State.BODY:
            i = self._buf.find(self._delim)
            if i < 0:
                keep = len(self._delim) - 1
                if self._part is not None:
                    if len(self._buf) > MAX_FIELD_VALUE + keep:
                        raise MultipartError(f"form field {self._part!r} too large")
                else:
                    self._drop(max(0, len(self._buf) - keep))
                return False
            if self._part is not None and self._part not in self.fields:
                value_end = self._base + i
                start = self._value_start
                self.fields[self._part] = FieldValue(self._buf[start - self._base : i], start, value_end)
            self._drop(i + len(self._delim))
            self._part = None
            self._state = _State.BOUNDARY_LINE
            return True
        return False

    def _wanted_name(self, header_block: bytes) -> str | None:
        """The part's field name if it is a wanted non-file field, else None."""
        for line in header_block.decode("utf-8", "replace").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() == "content-disposition":
                _, params = parse_content_disposition(value.strip())
                field = params.get("name")
                if field in self._wanted and "filename" not in params and "filename*" not in params:
                    return field
                return None
        return None


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type ("" when absent)."""
    for param in content_type.split(";")[1:]:
        key, sep, value = param.partition("=")
        if sep and key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return ""
