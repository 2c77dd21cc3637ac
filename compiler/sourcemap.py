"""Source map: where in which fragment every key and value of the config came from.

The compiler works on plain Python values (dicts, lists, scalars) so that the
merge, the schema check and the resolver stay simple.  Locations live beside
them in a `SourceMap`: a flat dict from a tuple key path (``("models",
"llama", "cmd")``; list items are ints) to an `Entry` holding the location of
the key and of the value.  Tuple paths, not dotted strings, because model ids
may contain dots.

Invariants:
- every path present in the plain document is present in its map;
- `lookup` never fails: a path that does not exist (a missing required key, a
  path the resolver invented) falls back to its nearest existing ancestor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from llama_swap.compiler.diagnostics import Location

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """Where a mapping entry's key (or a list item) starts, and where its value starts."""

    key: Location
    value: Location
    scalar: bool  # the value is a scalar (errors about it point at the value)
    index: int = -1  # character offset of the key in its (substituted) text
    end: int = -1  # character offset just past the value


class SourceMap:
    """Key path -> `Entry`; merged maps hold the first file that defined a path."""

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[KeyPath, Entry] | None = None) -> None:
        self._entries: dict[KeyPath, Entry] = entries if entries is not None else {}

    def __contains__(self, keys: object) -> bool:
        return keys in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[KeyPath]:
        return iter(self._entries)

    def items(self) -> Iterable[tuple[KeyPath, Entry]]:
        return self._entries.items()

    def get(self, keys: KeyPath) -> Entry | None:
        return self._entries.get(keys)

    def set(self, keys: KeyPath, entry: Entry) -> None:
        self._entries[keys] = entry

    def setdefault(self, keys: KeyPath, entry: Entry) -> None:
        self._entries.setdefault(keys, entry)

    def nearest(self, keys: KeyPath) -> tuple[KeyPath, Entry] | None:
        """The entry of `keys` or of its nearest existing ancestor (None when none exists)."""
        probe = tuple(keys)
        while True:
            entry = self._entries.get(probe)
            if entry is not None:
                return probe, entry
            if not probe:
                return None
            probe = probe[:-1]

    def lookup(self, keys: KeyPath, *, prefer_value: bool | None = None) -> Location | None:
        """Location for a diagnostic about `keys`.

        Exact hits point at the value when it is a scalar (a wrong value is
        underlined where it is written) and at the key otherwise; with
        `prefer_value` the caller decides.  A fallback to an ancestor always
        points at the ancestor's key, the line where the missing thing belongs.
        """
        found = self.nearest(keys)
        if found is None:
            return None
        path, entry = found
        if path != tuple(keys):
            return entry.key
        use_value = entry.scalar if prefer_value is None else prefer_value
        return entry.value if use_value else entry.key

    def path_at(self, file: str, index: int) -> KeyPath:
        """The deepest key path whose span in `file` contains character `index` (for env errors)."""
        best: KeyPath = ()
        for keys, entry in self._entries.items():
            if (
                entry.key.file == file
                and entry.index <= index < entry.end
                and len(keys) >= len(best)
            ):
                best = keys
        return best


def display_path(keys: Iterable[str | int]) -> str:
    """Dotted form of a key path for messages: `models.llama.cmd`, `apiKeys[2]`."""
    out = ""
    for key in keys:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += ("." if out else "") + str(key)
    return out


def location_at(file: str, text: str, index: int) -> Location:
    """The 1-based line and column of character `index` in `text`."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return Location(file, line, column)
