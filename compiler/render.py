"""Diagnostics rendered for people (text), programs (json) and CI (GitHub annotations).

Text follows the compiler convention `file:line:col: key.path: message`,
followed by the offending source line and a caret under the column:

    conf.d/20-models.yaml:14:7: models.llama.ttl: expected an integer, got a string "soon"
        ttl: soon
             ^

Warnings read `file:line:col: warning: key.path: message`.  A message that
already starts with its key path (merge conflicts do) is not prefixed twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from llama_swap.compiler.diagnostics import Diagnostic, Location


def _head(d: Diagnostic) -> str:
    parts: list[str] = []
    loc = d.location
    if loc is not None and loc.file:
        parts.append(f"{loc.file}:{loc.line}:{loc.column}" if loc.line else loc.file)
    if d.severity == "warning":
        parts.append("warning")
    elif not parts:
        parts.append("error")
    if d.path and not d.message.startswith(d.path):
        parts.append(d.path)
    parts.append(d.message)
    return ": ".join(parts)


EXCERPT_WIDTH = 120


class _Lines:
    """The source lines of each file, split once: splitting per diagnostic made a
    report of many errors quadratic (every error re-split its whole file)."""

    def __init__(self, texts: Mapping[str, str]) -> None:
        self._texts = texts
        self._lines: dict[str, list[str]] = {}

    def get(self, file: str, line: int) -> str | None:
        """Line `line` (1-based) of `file`, or None when there is no such line."""
        lines = self._lines.get(file)
        if lines is None:
            if file not in self._texts:
                return None
            lines = self._lines[file] = self._texts[file].splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None


def _excerpt(loc: Location | None, lines: _Lines) -> list[str]:
    if loc is None or loc.line <= 0:
        return []
    line = lines.get(loc.file, loc.line)
    if line is None:
        return []
    column = max(loc.column - 1, 0)
    if len(line) > EXCERPT_WIDTH:  # show a window around the column, not a 10,000-character line
        start = max(0, min(column - EXCERPT_WIDTH // 3, len(line) - EXCERPT_WIDTH))
        head = "..." if start else ""
        tail = "..." if start + EXCERPT_WIDTH < len(line) else ""
        line, column = head + line[start : start + EXCERPT_WIDTH] + tail, column - start + len(head)
    line = "".join(c if c == "\t" or c.isprintable() else "?" for c in line)
    lead = "".join(c if c == "\t" else " " for c in line[:column])
    return [f"    {line}", f"    {lead}^"]


def _summary(diagnostics: Sequence[Diagnostic]) -> str:
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return "found " + " and ".join(parts)


def render_text(
    diagnostics: Iterable[Diagnostic],
    texts: Mapping[str, str] | None = None,
    *,
    summary: bool = True,
) -> str:
    """Human-readable report, one block per diagnostic, with a closing count line."""
    diags = list(diagnostics)
    if not diags:
        return ""
    out: list[str] = []
    lines = _Lines(texts or {})
    for d in diags:
        out.append(_head(d))
        out.extend(_excerpt(d.location, lines))
    if summary:
        out.append(_summary(diags))
    return "\n".join(out) + "\n"


def _loc_json(loc: Location | None) -> dict[str, object] | None:
    if loc is None:
        return None
    return {"file": loc.file, "line": loc.line, "column": loc.column}


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    """Machine-readable report: counts plus one object per diagnostic."""
    diags = list(diagnostics)
    body = {
        "errors": sum(d.severity == "error" for d in diags),
        "warnings": sum(d.severity == "warning" for d in diags),
        "diagnostics": [
            {
                "severity": d.severity,
                "file": d.location.file if d.location else None,
                "line": d.location.line if d.location else None,
                "column": d.location.column if d.location else None,
                "path": d.path,
                "keys": list(d.keys),
                "message": d.message,
                "related": _loc_json(d.related),
            }
            for d in diags
        ],
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(diagnostics: Iterable[Diagnostic]) -> str:
    """GitHub Actions workflow commands, so a CI run marks the offending lines."""
    out = []
    for d in diagnostics:
        props = []
        loc = d.location
        if loc is not None and loc.file:
            props.append(f"file={_escape_property(loc.file)}")
            if loc.line:
                props.append(f"line={loc.line}")
                props.append(f"col={loc.column}")
        if d.path:
            props.append(f"title={_escape_property(d.path)}")
        message = (
            d.message if not d.path or d.message.startswith(d.path) else f"{d.path}: {d.message}"
        )
        command = "warning" if d.severity == "warning" else "error"
        out.append(f"::{command} {','.join(props)}::{_escape_data(message)}")
    return "\n".join(out) + ("\n" if out else "")


def render(
    diagnostics: Iterable[Diagnostic], fmt: str, texts: Mapping[str, str] | None = None
) -> str:
    """Dispatch on the `--errors` format: text, json or github."""
    if fmt == "json":
        return render_json(diagnostics)
    if fmt == "github":
        return render_github(diagnostics)
    return render_text(diagnostics, texts)
