"""`${env.NAME}` substitution on raw fragment text, before YAML parsing.

It runs on text (as the Go original does) so a reference works anywhere: in
keys, in values, inside flow lists like `[${env.KEY}]`.  References inside
YAML comments are ignored, so a commented-out line never demands a variable.
We find comments with the YAML scanner: text that lies between tokens is
whitespace or comment; a reference overlapping a token is live.  When the
text does not scan, every reference counts as live (the original does the
same).  Values are escaped like the original (backslash doubled, `"`
escaped): inside a double-quoted scalar the exact value comes back.

Pure: text and an environment mapping in; new text and diagnostics out.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml  # type: ignore[import-untyped, unused-ignore]

from llama_swap.compiler.diagnostics import Diagnostic, Location
from llama_swap.compiler.parse import parse_source
from llama_swap.compiler.sourcemap import KeyPath, display_path, location_at

ENV_REF = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")
_MARKER = "${env."

try:
    from yaml import CSafeLoader as _ScanLoader  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml import SafeLoader as _ScanLoader  # type: ignore[assignment, unused-ignore]


def _token_spans(text: str) -> tuple[list[int], list[int]] | None:
    """Sorted starts and ends of every non-empty YAML token; None when the text does not scan."""
    starts: list[int] = []
    ends: list[int] = []
    try:
        for token in yaml.scan(text, Loader=_ScanLoader):
            start, end = token.start_mark.index, token.end_mark.index
            if end > start:
                starts.append(start)
                ends.append(end)
        for _ in yaml.parse(text, Loader=_ScanLoader):  # scanning alone misses syntax errors
            pass
    except (yaml.YAMLError, ValueError, UnicodeError):
        return None
    return starts, ends


def _is_live(start: int, end: int, spans: tuple[list[int], list[int]] | None) -> bool:
    if spans is None:
        return True
    starts, ends = spans
    i = bisect.bisect_left(starts, end) - 1  # last token starting before the reference ends
    return i >= 0 and ends[i] > start


def _key_path_at(name: str, text: str, index: int) -> KeyPath:
    """Best effort: the key path whose text holds `index` (the raw text usually parses)."""
    parsed = parse_source(name, text)
    return parsed.smap.path_at(name, index) if parsed.value is not None else ()


@dataclass(frozen=True, slots=True)
class Substituted:
    """One live reference replaced by its value: where it stands in the text as written."""

    line: int  # 1-based
    column: int  # 1-based column of `${env.` in the written line
    written: int  # length of the reference
    length: int  # length of the (escaped) value put in its place
    var: str
    value: str  # the variable's value (unescaped)


@dataclass(frozen=True, slots=True)
class EnvResult:
    """A fragment after substitution, and what is needed to speak about it as written."""

    text: str
    diagnostics: list[Diagnostic]
    substituted: tuple[Substituted, ...] = ()

    def written_location(self, loc: Location) -> Location:
        """`loc` (in the substituted text) moved to the text as written.

        Values never hold a newline, so lines agree; a column after a
        substitution moves by the length difference, one inside a value moves
        to the start of its reference.
        """
        shift = 0
        for sub in self.substituted:
            if sub.line != loc.line:
                continue
            start = sub.column + shift  # where the value starts in the substituted line
            if loc.column < start:
                break
            if loc.column < start + sub.length:
                return Location(loc.file, loc.line, sub.column)
            shift += sub.length - sub.written
        return Location(loc.file, loc.line, loc.column - shift) if shift else loc


def substitute_env(name: str, text: str, env: Mapping[str, str]) -> tuple[str, list[Diagnostic]]:
    """Replace live `${env.NAME}` references; report unset or unusable variables."""
    result = substitute_env_traced(name, text, env)
    return result.text, result.diagnostics


def substitute_env_traced(name: str, text: str, env: Mapping[str, str]) -> EnvResult:
    """`substitute_env`, also recording each substitution (locations as written, values)."""
    if _MARKER not in text:
        return EnvResult(text, [])
    spans = _token_spans(text)
    pieces: list[str] = []
    problems: list[tuple[int, str]] = []
    done: list[Substituted] = []
    pos = 0
    line = 1
    for match in ENV_REF.finditer(text):
        if not _is_live(match.start(), match.end(), spans):
            continue
        var = match.group(1)
        value = env.get(var)
        if value is None:
            problems.append((match.start(), f"environment variable '{var}' is not set"))
            continue
        if any(c in value for c in "\n\r\0"):
            problems.append(
                (
                    match.start(),
                    f"environment variable '{var}' contains a newline or NUL byte, "
                    "which cannot be substituted into YAML",
                )
            )
            continue
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        line += text.count("\n", pos, match.start())  # counted once over the text
        column = match.start() - text.rfind("\n", 0, match.start())
        done.append(
            Substituted(line, column, match.end() - match.start(), len(escaped), var, value)
        )
        pieces.append(text[pos : match.start()])
        pieces.append(escaped)
        pos = match.end()
    pieces.append(text[pos:])
    diagnostics = []
    for index, message in problems:
        keys = _key_path_at(name, text, index)
        diagnostics.append(
            Diagnostic(message, display_path(keys), location_at(name, text, index), keys=keys)
        )
    return EnvResult("".join(pieces), diagnostics, tuple(done))
