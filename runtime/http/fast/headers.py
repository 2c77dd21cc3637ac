"""A read-only, case-insensitive view of raw header pairs, decoded only when read.

Why: the fast path hands request and response headers to shared helpers (the
access log reads two or three of them, captures keep them to render later,
error rendering reads `Accept`, the activity meter `Content-Type`), and most
requests never need most of them.  Building a `CIMultiDict` of decoded text for
every request and every response cost more than the lookups; this view scans
the few raw pairs for a lookup and builds the multidict only when a helper
iterates (a capture being rendered)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from multidict import CIMultiDict


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


class LazyHeaders:
    """Headers as `(name, value)` byte pairs, readable like aiohttp's headers."""

    __slots__ = ("_raw", "_dict")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._dict: CIMultiDict[str] | None = None

    def get(self, name: str, default: Any = None) -> Any:
        key = name.lower().encode("latin-1")
        for n, v in self._raw:
            if n.lower() == key:
                return _text(v)
        return default

    def getall(self, name: str, default: Any = None) -> Any:
        key = name.lower().encode("latin-1")
        found = [_text(v) for n, v in self._raw if n.lower() == key]
        if found:
            return found
        if default is None:
            raise KeyError(name)
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return str(value)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def multidict(self) -> CIMultiDict[str]:
        """The headers as a CIMultiDict of text (built once)."""
        if self._dict is None:
            self._dict = CIMultiDict((n.decode("latin-1"), _text(v)) for n, v in self._raw)
        return self._dict

    def items(self) -> Any:
        return self.multidict().items()

    def keys(self) -> Any:
        return self.multidict().keys()

    def values(self) -> Any:
        return self.multidict().values()

    def __iter__(self) -> Iterator[str]:
        return iter(self.multidict())

    def __len__(self) -> int:
        return len(self._raw)

    def byte_size(self) -> int:
        """Bytes of the names and values, counted without decoding them (captures
        count what they hold)."""
        return sum(len(n) + len(v) for n, v in self._raw)

    def __repr__(self) -> str:
        return f"<LazyHeaders {list(self.multidict().items())!r}>"
