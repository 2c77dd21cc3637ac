"""How the request policy reads headers: one case-insensitive lookup.

aiohttp's headers and the fast path's raw-pair view (runtime/http/fast/headers.py) both
answer it, so a rule written over this protocol serves both front doors.
"""

from __future__ import annotations

from typing import Protocol


class HeaderLookup(Protocol):
    """Case-insensitive header lookup: the first value of `name`, else `default`."""

    def get(self, name: str, default: str, /) -> str: ...
