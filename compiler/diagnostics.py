"""Diagnostics: what the compiler tells a user about their config.

Every problem found in a config becomes a `Diagnostic` carrying its location
(file, 1-based line and column), the dotted key path and a plain message.
Stages collect diagnostics instead of raising on the first one; the pipeline
raises a single `CompileError` holding all of them at the boundary, sorted by
file and line.  Nothing else in the compiler is allowed to reach the user as
a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown


@dataclass(frozen=True, slots=True)
class Diagnostic:
    message: str
    path: str = ""  # dotted key path, e.g. "models.llama.cmd"
    location: Location | None = None
    severity: Severity = "error"
    # Optional second location (a merge conflict names both files).
    related: Location | None = None
    # The key path as a tuple (model ids may contain dots); `path` is its display form.
    keys: tuple[str | int, ...] = ()

    def sort_key(self) -> tuple[str, int, int, str]:
        loc = self.location
        return (loc.file, loc.line, loc.column, self.message) if loc else ("", 0, 0, self.message)


class CompileError(Exception):
    """A config the compiler refuses; holds every diagnostic found (errors and warnings)."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics: tuple[Diagnostic, ...] = tuple(
            sorted(diagnostics, key=Diagnostic.sort_key)
        )
        errors = [d for d in self.diagnostics if d.severity == "error"]
        first = errors[0].message if errors else "invalid config"
        super().__init__(f"{len(errors)} error(s) in config; first: {first}")

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "warning")
