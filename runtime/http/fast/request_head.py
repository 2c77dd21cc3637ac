"""Recognise a plain JSON inference request at the front of a connection's buffer.

The fast path serves only one shape of request: an HTTP/1.1 `POST` to one of
the JSON inference routes, with a `Content-Length` body whose `Content-Type`
is JSON, and nothing unusual in its head.  This module decides whether the
bytes at the front of the buffer are such a request (`Head`), need more bytes
(`None`) or must go to aiohttp (`HANDOFF`).

Why hand-parse instead of using a parser library: a handoff must give aiohttp
the connection's bytes exactly as received, from the first byte of the
request on, and the request parsers available (httptools, aiohttp's own) do
not report where a message ends in their input.  The rule that keeps this safe
is conservatism: anything not plainly well formed (a bare CR or LF, a NUL,
folded or malformed header lines, control characters, a second or an overlong
Content-Length, Transfer-Encoding, Content-Encoding, Expect, Upgrade, percent-escapes
in the path, non-ASCII bytes in the request target, more headers or a longer target
than aiohttp is configured to take, HTTP/1.0) is handed off, so aiohttp's full parser
and its error answers judge it.  Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from llama_swap.runtime.http.fast.headers import LazyHeaders

HANDOFF: Final = "handoff"
MAX_HEAD = 1 << 20  # header bytes a fast-path request may have (aiohttp's limit here)
# aiohttp's limits as runtime/serve.py sets them: beyond these aiohttp answers 400
MAX_TARGET = 65536  # request-target bytes (max_line_size)
MAX_HEADERS = 1000  # header lines (max_headers)
MAX_LENGTH_DIGITS = 18  # a longer Content-Length may overflow aiohttp's parser (or int())
# bytes aiohttp's parser refuses in a head (controls but HTAB; CR and LF are counted apart)
_CONTROLS = bytes((*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))
_PREFIX = b"POST /"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# aiohttp decodes a Content-Encoding body (and refuses one it cannot decode), so such
# a request is its to judge, as chunked ones are
_REFUSED = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"content-encoding"})


@dataclass(slots=True)
class Head:
    """One complete fast-path request head; the body follows `head_len` bytes on."""

    path: str  # the path as sent (no query), one of the fast-path routes
    query: bytes  # the raw query string (without "?"), b"" if none
    raw_headers: list[tuple[bytes, bytes]]  # as received, values stripped of OWS
    content_length: int
    content_type: str
    close: bool  # the client asked for `Connection: close`
    head_len: int  # bytes up to and including the blank line
    has_host: bool = True  # the client sent a Host header (else the upstream gets one)

    @property
    def total(self) -> int:
        """Bytes of the whole request: head and body."""
        return self.head_len + self.content_length

    def headers(self) -> LazyHeaders:
        """The headers, readable as text (as aiohttp decodes them), for auth, logs and
        captures; decoded only when read."""
        return LazyHeaders(self.raw_headers)


def parse_head(
    buf: bytes | bytearray, paths: frozenset[str], scanned: int = 0
) -> Head | str | None:
    """The fast-path request at the front of `buf`, `None` if its head is incomplete, or
    `HANDOFF` when the request is not one the fast path serves.  `scanned`: bytes of
    `buf` already searched for the end of the head by an earlier call (a head that
    arrives in many small pieces is then searched once, not once per piece)."""
    n = min(len(buf), len(_PREFIX))
    if buf[:n] != _PREFIX[:n]:  # not a POST: decided at the first bytes
        return HANDOFF
    end = buf.find(b"\r\n\r\n", max(0, scanned - 3))
    if end < 0:
        return HANDOFF if len(buf) > MAX_HEAD else None
    head = bytes(buf[:end])
    crlf = head.count(b"\r\n")
    if crlf != head.count(b"\n") or crlf != head.count(b"\r") or crlf > MAX_HEADERS:
        return HANDOFF
    if len(head.translate(None, _CONTROLS)) != len(head):
        return HANDOFF
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or len(parts[1]) > MAX_TARGET:
        return HANDOFF
    raw_path, _, query = parts[1].partition(b"?")
    if b"%" in raw_path or not parts[1].isascii():
        return HANDOFF
    path = raw_path.decode("ascii")
    if path not in paths:
        return HANDOFF
    headers: list[tuple[bytes, bytes]] = []
    length = -1
    ctype = b""
    close = False
    has_host = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None:
            return HANDOFF
        value = value.strip(b" \t")
        lname = name.lower()
        if lname == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                return HANDOFF
            length = int(value)
        elif lname in _REFUSED:
            return HANDOFF
        elif lname == b"content-type":
            if ctype:
                return HANDOFF
            ctype = value
        elif lname == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            close = close or b"close" in tokens
        elif lname == b"host":
            has_host = True
        headers.append((name, value))
    if length < 0 or b"application/json" not in ctype:
        return HANDOFF
    return Head(
        path=path,
        query=query,
        raw_headers=headers,
        content_length=length,
        content_type=ctype.decode("utf-8", "surrogateescape"),
        close=close,
        head_len=end + 4,
        has_host=has_host,
    )
