"""Merge parsed fragments into one document, as the Go original merges them.

Configs are shared between the two implementations, so a set of fragments
must merge to the same document (or fail the same way) under both.

The rules, applied key path by key path with `deepmerge` strategies:

- identity maps (`models`, `peers`, `groups`, `matrix`, `profiles`, `selectors`,
  `routing.router.settings.groups`, `routing.router.settings.matrix`) hold
  entities: an entity may be defined in one fragment only, never split;
- other mappings merge recursively; keys new in a later fragment are appended;
- lists concatenate, earlier fragment first;
- equal scalars (same value and same type, so `100` and `"100"` differ) are
  fine, different ones are a conflict;
- null yields to anything (also for identity maps: `models:` left empty in one
  fragment is not an error, a small leniency over the original);
- a mapping meeting a list or a scalar is a conflict.

Conflicts do not stop the merge: each becomes a diagnostic naming both files
and lines, the earlier value is kept, and merging goes on so one run reports
everything.  The merged `SourceMap` keeps, for each path, the fragment that
defined it (list items from later fragments are re-indexed after the items
they are appended to).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from deepmerge import Merger
from deepmerge.strategy.dict import DictStrategies

from llama_swap.compiler.diagnostics import Diagnostic, Location
from llama_swap.compiler.parse import ParsedSource
from llama_swap.compiler.sourcemap import KeyPath, SourceMap, display_path

IDENTITY_MAPS: frozenset[KeyPath] = frozenset(
    {
        ("models",),
        ("peers",),
        ("groups",),
        ("matrix",),
        ("profiles",),
        ("selectors",),
        ("routing", "router", "settings", "groups"),
        ("routing", "router", "settings", "matrix"),
    }
)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _where(loc: Location | None) -> str:
    return f"{loc.file}:{loc.line}" if loc else "an earlier fragment"


class _FragmentMerge:
    """State of merging one fragment into the accumulated document."""

    def __init__(self, merged_map: SourceMap, fragment: ParsedSource, out: list[Diagnostic]):
        self.merged_map = merged_map
        self.fragment = fragment
        self.diagnostics = out
        self.offsets: dict[KeyPath, int] = {}  # list path -> items already there
        self.rejected: set[KeyPath] = set()  # paths of the fragment that were not taken
        self.replaced: set[KeyPath] = set()  # paths whose earlier null the fragment replaced
        self.merger = Merger(
            [(dict, [self.merge_dicts]), (list, [self.concat_lists])],
            [self.merge_scalars],
            [self.merge_mismatch],
        )

    # -- deepmerge strategies ---------------------------------------------
    def merge_dicts(
        self, merger: Merger, path: list[Any], base: dict[str, Any], nxt: dict[str, Any]
    ) -> dict[str, Any]:
        keys = tuple(path)
        if keys not in IDENTITY_MAPS:
            return DictStrategies.strategy_merge(merger, path, base, nxt)
        for name, value in nxt.items():
            if name in base:
                self.conflict((*keys, name), lambda p, a, b: f"{p} defined in {a} and again in {b}")
            else:
                base[name] = value
        return base

    def concat_lists(
        self, merger: Merger, path: list[Any], base: list[Any], nxt: list[Any]
    ) -> list[Any]:
        self.offsets[tuple(path)] = len(base)
        return base + nxt

    def merge_scalars(self, merger: Merger, path: list[Any], base: Any, nxt: Any) -> Any:
        if type(base) is type(nxt) and base == nxt:
            return base
        return self.merge_mismatch(merger, path, base, nxt)

    def merge_mismatch(self, merger: Merger, path: list[Any], base: Any, nxt: Any) -> Any:
        keys = tuple(path)
        if nxt is None:
            self.rejected.add(keys)
            return base
        if base is None:
            self.replaced.add(keys)
            return nxt
        scalar = not isinstance(base, dict | list) and not isinstance(nxt, dict | list)
        if scalar:
            self.conflict(
                keys,
                lambda p, a, b: (
                    f"{p} is set to {_show(base)} in {a} and to {_show(nxt)} in {b}; "
                    "fragments may repeat a setting only with the same value"
                ),
            )
        else:
            self.conflict(
                keys, lambda p, a, b: f"{p} is {_kind(base)} in {a} but {_kind(nxt)} in {b}"
            )
        return base

    # -- helpers -----------------------------------------------------------
    def conflict(self, keys: KeyPath, wording: Callable[[str, str, str], str]) -> None:
        self.rejected.add(keys)
        first = self.merged_map.lookup(keys, prefer_value=False)
        entry = self.fragment.smap.get(keys)
        second = entry.key if entry else Location(self.fragment.name, 0, 0)
        path = display_path(keys)
        message = wording(path, _where(first), _where(second))
        self.diagnostics.append(Diagnostic(message, path, second, related=first, keys=keys))

    def translate(self, keys: KeyPath) -> KeyPath | None:
        """The fragment's path in the merged document (None when the merge did not take it)."""
        if not self.offsets and not self.rejected:
            return keys
        for i in range(len(keys) + 1):
            prefix = keys[:i]
            if prefix in self.rejected:
                return None
            item = keys[i] if i < len(keys) else None
            if isinstance(item, int) and prefix in self.offsets:
                return (*prefix, item + self.offsets[prefix], *keys[i + 1 :])
        return keys

    def add_locations(self) -> None:
        for keys, entry in self.fragment.smap.items():
            if not keys:
                continue
            target = self.translate(keys)
            if target is None:
                continue
            if target in self.replaced:
                self.merged_map.set(target, entry)
            else:
                self.merged_map.setdefault(target, entry)


def merge_fragments(
    fragments: Sequence[ParsedSource],
) -> tuple[dict[str, Any], SourceMap, list[Diagnostic]]:
    """Merge fragments in order; empty ones (value None) are skipped."""
    doc: dict[str, Any] = {}
    merged_map = SourceMap()
    diagnostics: list[Diagnostic] = []
    started = False
    for fragment in fragments:
        if fragment.value is None:
            continue
        if not started:
            doc, started = fragment.value, True
            for keys, entry in fragment.smap.items():
                merged_map.set(keys, entry)
            continue
        step = _FragmentMerge(merged_map, fragment, diagnostics)
        doc = step.merger.merge(doc, fragment.value)
        step.add_locations()
    return doc, merged_map, diagnostics
