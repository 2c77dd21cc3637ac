"""YAML text -> plain Python values + a `SourceMap`, one fragment at a time.

We compose (not load) the YAML so every node keeps its mark, then build the
plain value ourselves.  That is where we decide YAML dialect questions the
way the Go original (yaml.v3, YAML 1.2 core schema) does rather than how
PyYAML's YAML 1.1 loader would:

- only `true`/`false` (any case variant of those) are booleans, so `on`,
  `yes`, `no` stay strings; `0o17`/`0x1f` are ints, `017` is decimal;
- timestamps stay strings; custom tags are refused;
- a mapping key written twice in one file is an error (yaml.v3 agrees);
- mapping keys are taken as their text (`1.0:` is the model id "1.0");
- `<<` merge keys are honoured;
- NaN/infinity are refused (the plan is JSON).

Pure: text in, values and diagnostics out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode  # type: ignore[import-untyped, unused-ignore]
from yaml.resolver import BaseResolver  # type: ignore[import-untyped, unused-ignore]

from llama_swap.compiler.diagnostics import Diagnostic, Location
from llama_swap.compiler.sourcemap import Entry, KeyPath, SourceMap, display_path, location_at

_T = "tag:yaml.org,2002:"
MAX_DEPTH = 100
MAX_VALUES = 200_000  # guards against alias bombs ("billion laughs")
# Tags compared on every node, built once.
_STR_TAGS = frozenset({_T + "str", "!", _T + "timestamp", _T + "binary", _T + "merge"})
_SEQ_TAGS = frozenset({_T + "seq", _T + "omap", _T + "pairs"})
_MAP_TAGS = frozenset({_T + "map", _T + "set"})
_NULL, _BOOL, _INT, _FLOAT, _MERGE = (_T + t for t in ("null", "bool", "int", "float", "merge"))


class _CoreResolver(BaseResolver):  # type: ignore[misc, unused-ignore]
    """Implicit tags of the YAML 1.2 core schema."""


_CoreResolver.add_implicit_resolver(
    _T + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreResolver.add_implicit_resolver(
    _T + "int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_CoreResolver.add_implicit_resolver(
    _T + "float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_CoreResolver.add_implicit_resolver(
    _T + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_CoreResolver.add_implicit_resolver(_T + "merge", re.compile(r"^<<$"), ["<"])

try:  # libyaml is much faster; fall back to the pure-Python parser
    from yaml.cyaml import (  # type: ignore[import-untyped, unused-ignore, attr-defined]
        CParser as _Parser,
    )

    class _Loader(_Parser, _CoreResolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            _Parser.__init__(self, stream)
            _CoreResolver.__init__(self)

except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml.composer import Composer  # type: ignore[import-untyped, unused-ignore]
    from yaml.parser import Parser  # type: ignore[import-untyped, unused-ignore]
    from yaml.reader import Reader  # type: ignore[import-untyped, unused-ignore]
    from yaml.scanner import Scanner  # type: ignore[import-untyped, unused-ignore]

    class _Loader(Reader, Scanner, Parser, Composer, _CoreResolver):  # type: ignore[no-redef, misc, unused-ignore]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            _CoreResolver.__init__(self)


@dataclass(slots=True)
class ParsedSource:
    """One fragment after parsing: `value` is None for an empty file (skipped by the merge)."""

    name: str
    value: dict[str, Any] | None
    smap: SourceMap
    diagnostics: list[Diagnostic] = field(default_factory=list)


class _Invalid(Exception):
    """A problem at a node that makes the rest of the file meaningless (bomb, cycle, depth)."""

    def __init__(self, message: str, node: Node, keys: KeyPath):
        super().__init__(message)
        self.node = node
        self.keys = keys


def compose(text: str) -> Node | None:
    """The root node of a single-document YAML text (None when empty). Raises yaml.YAMLError."""
    loader = _Loader(text)
    try:
        return loader.get_single_node()  # type: ignore[no-any-return, unused-ignore]
    finally:
        loader.dispose()


def yaml_error_diagnostic(name: str, exc: yaml.YAMLError, text: str = "") -> Diagnostic:
    """A plain-worded diagnostic for a PyYAML syntax error.

    Points at the problem, or at the construct left open when the problem is
    the end of the file (an unclosed `[` is more useful than the last line).
    """
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.position, int):
        char = (
            exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        )
        return Diagnostic(
            f"invalid YAML: unacceptable character #x{char:04x} ({exc.reason})",
            location=location_at(name, text, min(exc.position, len(text))),
        )
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    at_end = mark is not None and mark.index >= len(text.rstrip())
    if mark is None or (at_end and context_mark is not None):
        mark = context_mark or mark
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {context + ', ' if context else ''}{problem}"
    loc = (
        Location(name, mark.line + 1, mark.column + 1) if mark is not None else Location(name, 0, 0)
    )
    return Diagnostic(message=message, location=loc)


def parse_source(name: str, text: str) -> ParsedSource:
    """Parse one fragment; never raises for bad input (problems come back as diagnostics)."""
    smap = SourceMap()
    try:
        root = compose(text)
    except yaml.YAMLError as exc:
        return ParsedSource(name, None, smap, [yaml_error_diagnostic(name, exc, text)])
    except (ValueError, UnicodeError) as exc:  # e.g. control characters libyaml rejects
        return ParsedSource(
            name, None, smap, [Diagnostic(f"invalid YAML: {exc}", location=Location(name, 0, 0))]
        )
    if root is None:
        return ParsedSource(name, None, smap)
    builder = _Builder(name, smap)
    if _expanded_size(root, {}, 0) > MAX_VALUES:
        diag = Diagnostic(_TOO_LARGE, location=builder.loc(root))
        return ParsedSource(name, None, SourceMap(), [diag])
    try:
        value = builder.build(root, (), 0)
    except _Invalid as exc:
        loc = builder.loc(exc.node)
        diag = Diagnostic(str(exc), display_path(exc.keys), loc, keys=exc.keys)
        return ParsedSource(name, None, SourceMap(), [*builder.diagnostics, diag])
    smap.set((), Entry(builder.loc(root), builder.loc(root), False, 0, len(text)))
    if value is None:
        return ParsedSource(name, None, smap, builder.diagnostics)
    if not isinstance(value, dict):
        kind = "a list" if isinstance(value, list) else "a scalar"
        diag = Diagnostic(
            f"the top level of a config must be a mapping of keys, not {kind}",
            location=builder.loc(root),
        )
        return ParsedSource(name, None, SourceMap(), [*builder.diagnostics, diag])
    return ParsedSource(name, value, smap, builder.diagnostics)


_TOO_LARGE = "document too large (too many values, probably from aliases)"


def _expanded_size(node: Node, sizes: dict[int, int], depth: int) -> int:
    """How many values building `node` would make, at most: aliases counted each time used.

    Anchored nodes are shared, so the sizes are remembered per node and an
    alias bomb ("billion laughs") is measured in time proportional to its text,
    before anything is built.  `<<` merges count in full (an upper bound: keys
    a mapping sets itself win).  Cycles and excess depth count as small here;
    building reports them.
    """
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # while being measured: a cycle adds nothing
    total = 1
    if depth <= MAX_DEPTH and isinstance(node, SequenceNode):
        total += sum(_expanded_size(item, sizes, depth + 1) for item in node.value)
    elif depth <= MAX_DEPTH and isinstance(node, MappingNode):
        total += sum(_expanded_size(value, sizes, depth + 1) for _, value in node.value)
    total = min(total, MAX_VALUES + 1)  # enough to decide; keeps the numbers small
    sizes[id(node)] = total
    return total


class _Builder:
    """Walks a composed node tree, building plain values and recording locations."""

    def __init__(self, name: str, smap: SourceMap):
        self.name = name
        self.smap = smap
        self.diagnostics: list[Diagnostic] = []
        self.count = 0
        self.active: set[int] = set()  # nodes on the current path (alias cycles)
        # `<<` expansions by mapping node: an anchor merged many times is flattened once
        self.flattened: dict[int, list[tuple[Node, Node]]] = {}

    def loc(self, node: Node) -> Location:
        return Location(self.name, node.start_mark.line + 1, node.start_mark.column + 1)

    def error(self, message: str, keys: KeyPath, node: Node) -> None:
        self.diagnostics.append(Diagnostic(message, display_path(keys), self.loc(node), keys=keys))

    def build(self, node: Node, keys: KeyPath, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _Invalid(_TOO_LARGE, node, keys)
        if depth > MAX_DEPTH:
            raise _Invalid(f"nesting deeper than {MAX_DEPTH} levels", node, keys)
        if isinstance(node, ScalarNode):
            return self.scalar(node, keys)
        if id(node) in self.active:
            raise _Invalid("an alias refers to the collection that contains it", node, keys)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, keys, depth)
            return self.mapping(node, keys, depth)
        finally:
            self.active.discard(id(node))

    def entry(self, key_node: Node, value_node: Node) -> Entry:
        """Where a key (or list item) and its value stand, for the source map."""
        return Entry(
            self.loc(key_node),
            self.loc(value_node),
            isinstance(value_node, ScalarNode),
            key_node.start_mark.index,
            value_node.end_mark.index,
        )

    def sequence(self, node: SequenceNode, keys: KeyPath, depth: int) -> list[Any]:
        if node.tag not in _SEQ_TAGS:
            self.error(f"unsupported YAML tag {node.tag!r}", keys, node)
        out = []
        for i, item in enumerate(node.value):
            path = (*keys, i)
            self.smap.setdefault(path, self.entry(item, item))
            out.append(self.build(item, path, depth + 1))
        return out

    def mapping(self, node: MappingNode, keys: KeyPath, depth: int) -> dict[str, Any]:
        if node.tag not in _MAP_TAGS:
            self.error(f"unsupported YAML tag {node.tag!r}", keys, node)
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in self.flatten(node, keys):
            if not isinstance(key_node, ScalarNode):
                self.error(
                    "mapping keys must be plain scalars, not lists or mappings", keys, key_node
                )
                continue
            key = key_node.value
            path = (*keys, key)
            if key in first_line:
                self.error(
                    f"key {key!r} is defined twice in this mapping (first at line {first_line[key]})",
                    path,
                    key_node,
                )
                continue
            first_line[key] = key_node.start_mark.line + 1
            self.smap.set(path, self.entry(key_node, value_node))
            out[key] = self.build(value_node, path, depth + 1)
        return out

    def flatten(self, node: MappingNode, keys: KeyPath) -> list[tuple[Node, Node]]:
        """Entries of a mapping with `<<` merge keys expanded (explicit keys win)."""
        merged: list[tuple[Node, Node]] = []
        explicit: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, MappingNode):
                        self.error(
                            "'<<' merge key needs a mapping or a list of mappings", keys, src
                        )
                        continue
                    merged.extend(self.flatten_source(src, keys))
            else:
                explicit.append((key_node, value_node))
        if not merged:
            return explicit
        own = {k.value for k, _ in explicit if isinstance(k, ScalarNode)}
        seen: set[str] = set()
        out: list[tuple[Node, Node]] = []
        for key_node, value_node in merged:
            if (
                isinstance(key_node, ScalarNode)
                and key_node.value not in own
                and key_node.value not in seen
            ):
                seen.add(key_node.value)
                out.append((key_node, value_node))
        return out + explicit

    def flatten_source(self, src: MappingNode, keys: KeyPath) -> list[tuple[Node, Node]]:
        """`flatten(src)`, computed once per node (merge bombs nest `<<` exponentially)."""
        done = self.flattened.get(id(src))
        if done is not None:
            return done
        if id(src) in self.active:
            raise _Invalid("an alias refers to the collection that contains it", src, keys)
        self.active.add(id(src))
        try:
            done = self.flattened[id(src)] = self.flatten(src, keys)
        finally:
            self.active.discard(id(src))
        return done

    def scalar(self, node: ScalarNode, keys: KeyPath) -> Any:
        tag, text = node.tag, node.value
        try:
            if tag in _STR_TAGS:
                return text
            if tag == _NULL:
                return None
            if tag == _BOOL:
                low = text.lower()
                if low in ("true", "yes", "on"):
                    return True
                if low in ("false", "no", "off"):
                    return False
                raise ValueError(text)
            if tag == _INT:
                return int(
                    text.replace("_", ""), 0 if text.lower().startswith(("0x", "0o", "0b")) else 10
                )
            if tag == _FLOAT:
                special = text.lstrip("+-").lower() in (".inf", ".nan")
                value = math.inf if special else float(text.replace("_", ""))
                if not math.isfinite(value):
                    self.error(
                        "infinite and NaN numbers are not allowed (the plan is JSON)", keys, node
                    )
                    return text
                return value
        except ValueError:
            self.error(f"{text!r} is not a valid {tag.removeprefix(_T)}", keys, node)
            return text
        self.error(f"unsupported YAML tag {tag!r}", keys, node)
        return text
