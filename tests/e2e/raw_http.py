"""A blocking HTTP/1.1 client over a plain socket, for tests that send bytes no library
would: malformed heads, invalid UTF-8, lying lengths, abandoned requests.

Why not httptools or aiohttp's client: a test of bad input must see exactly what the
server wrote, including a body that should not be there (the answer to a HEAD), the
answer that comes before a body was sent, and a connection closed without any answer.
`Conn.read_answer` frames one answer by the rules a client uses (no body for HEAD, 1xx,
204 and 304; else Content-Length, chunked, or until close) and leaves whatever follows
in the buffer, so the next answer on the same connection can be read and checked.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


class NoAnswer(Exception):
    """The server closed the connection, or went silent, before a complete answer."""


@dataclass
class Answer:
    """One HTTP answer as read off the wire."""

    status: int
    version: str = "HTTP/1.1"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    @property
    def closes(self) -> bool:
        """The server said it closes the connection after this answer (an HTTP/1.0
        answer does unless it says keep-alive)."""
        connection = (self.header("connection") or "").lower()
        return "close" in connection or (self.version == "HTTP/1.0" and "keep-alive" not in connection)


class Conn:
    """One client connection to `url` (http://host:port), with a read buffer."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.timeout = timeout
        self.buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send `data`; False when the server had already closed the connection (an
        early answer may still be waiting in the buffer)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False at the end of the stream."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise NoAnswer(f"silent for {self.timeout:g}s; have {self.buf[:200]!r}") from None
        except ConnectionResetError:
            return False
        self.buf += data
        return bool(data)

    def _take_until(self, marker: bytes, deadline: float) -> bytes:
        while (at := self.buf.find(marker)) < 0:
            if not self._fill(deadline):
                raise NoAnswer(f"closed; have {self.buf[:200]!r}")
        out, self.buf = self.buf[:at], self.buf[at + len(marker):]
        return out

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise NoAnswer(f"closed after {len(self.buf)} of {n} body bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_answer(self, *, head_only: bool = False) -> Answer:
        """The next answer; `head_only` for the answer to a HEAD (no body follows)."""
        deadline = time.monotonic() + self.timeout
        head = self._take_until(b"\r\n\r\n", deadline).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise NoAnswer(f"not an HTTP answer: {head[:200]!r}")
        answer = Answer(int(parts[1]), parts[0])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            answer.headers.append((name.strip().lower(), value.strip()))
        if head_only or answer.status < 200 or answer.status in (204, 304):
            return answer
        length = answer.header("content-length")
        if length is not None:
            answer.body = self._take(int(length), deadline)
        elif "chunked" in (answer.header("transfer-encoding") or ""):
            answer.body = self._chunks(deadline)
        else:
            while self._fill(deadline):
                pass
            answer.body, self.buf = self.buf, b""
        return answer

    def _chunks(self, deadline: float) -> bytes:
        body = b""
        while True:
            size = int(self._take_until(b"\r\n", deadline).split(b";")[0], 16)
            if size == 0:
                self._take_until(b"\r\n", deadline)  # no trailers are expected
                return body
            body += self._take(size, deadline)
            self._take(2, deadline)

    def closed_by_server(self, wait: float = 1.0) -> bool:
        """Whether the server closes the connection within `wait` s, sending nothing more."""
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return False


def request(
    method: str, target: str | bytes, *headers: str | bytes, body: bytes = b"",
    length: bool = True, close: bool = False,
) -> bytes:
    """A request as bytes: `headers` as given (str encoded as UTF-8), a Content-Length
    for `body` unless `length` is False, `Connection: close` when asked."""
    lines = [
        (method.encode() if isinstance(method, str) else method) + b" "
        + (target.encode() if isinstance(target, str) else target) + b" HTTP/1.1",
        b"Host: llama-swap.test",
        *(h.encode() if isinstance(h, str) else h for h in headers),
    ]
    if length and (body or method in ("POST", "PUT")):
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(body: bytes, piece: int = 16384) -> bytes:
    """`body` in chunked framing, in pieces of `piece` bytes."""
    out = [b"%x\r\n%b\r\n" % (len(body[i:i + piece]), body[i:i + piece])
           for i in range(0, len(body), piece)]
    return b"".join(out) + b"0\r\n\r\n"
