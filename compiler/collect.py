"""Diagnostic collection for the resolve stages.

The resolve stages never stop at the first problem: each one reports into a
shared `Collector` and carries on with a safe fallback value, so a user sees
every mistake in one run.  Diagnostics carry the tuple key path (`keys`) and
its display form (`path`) but no location; the pipeline looks the key path up
in its source map to add file, line and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llama_swap.compiler.diagnostics import Diagnostic, Severity
from llama_swap.compiler.gotext import format_value
from llama_swap.compiler.sourcemap import display_path

Keys = tuple[str | int, ...]


@dataclass
class Collector:
    """Accumulates errors and warnings, in the order the stages find them."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, keys: Keys, message: str) -> None:
        self._add(keys, message, "error")

    def warn(self, keys: Keys, message: str) -> None:
        self._add(keys, message, "warning")

    def _add(self, keys: Keys, message: str, severity: Severity) -> None:
        self.diagnostics.append(
            Diagnostic(message, display_path(keys), keys=tuple(keys), severity=severity)
        )

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


# ---------------------------------------------------------------------------
# Tolerant readers.  The document is schema-valid, but the resolver must never
# raise on an odd value, so every read checks its type and reports instead.
# ---------------------------------------------------------------------------


def get_map(c: Collector, keys: Keys, value: Any) -> dict[str, Any]:
    """A mapping value; None (an empty YAML key) means empty."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    c.error(keys, f"expected a mapping, got {type_name(value)}")
    return {}


def get_list(c: Collector, keys: Keys, value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    c.error(keys, f"expected a list, got {type_name(value)}")
    return []


def get_str(c: Collector, keys: Keys, value: Any, default: str) -> str:
    """A string; scalars are accepted in their Go-like text form, as the original's decoder does."""
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return format_value(value)
    c.error(keys, f"expected a string, got {type_name(value)}")
    return default


def get_int(c: Collector, keys: Keys, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    c.error(keys, f"expected an integer, got {type_name(value)}")
    return default


def get_bool(c: Collector, keys: Keys, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    c.error(keys, f"expected true or false, got {type_name(value)}")
    return default


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__
