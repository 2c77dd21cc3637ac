"""Macros: validation, per-model merging and LIFO substitution.

A macro list is ordered: `[MODEL_ID] + global macros (file order) + model
macros`, where a model macro with a global's name replaces it *in place*.
Substitution walks the list from last to first, so a macro can use macros
defined before it (they are replaced later), never after it.  In `metadata`
and `setParamsByID` values a string that is exactly `${name}` takes the
macro's typed value (int, float, bool or string); elsewhere values are
interpolated as text, formatted the way the Go original prints them
(compiler.gotext).

Pure functions over plain values; the caller reports problems.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_swap.compiler.collect import Collector, Keys, type_name
from llama_swap.compiler.envsubst import ENV_REF
from llama_swap.compiler.gotext import format_value as format_value  # re-exported

MACRO_REF = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")
_NAME = re.compile(r"[a-zA-Z0-9_-]+")
RESERVED = ("PORT", "MODEL_ID", "PID")
MAX_NAME_LENGTH = 63

Scalar = str | int | float | bool
Macro = tuple[str, Scalar]


def validate_macro(name: str, value: Any) -> str | None:
    """The first problem with one macro definition, or None (checked in the original's order)."""
    if len(name.encode()) > MAX_NAME_LENGTH:
        return f"macro name '{name}' exceeds maximum length of {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):
        return (
            f"macro name '{name}' contains invalid characters, must match pattern ^[a-zA-Z0-9_-]+$"
        )
    if isinstance(value, str):
        if "${" + name + "}" in value:
            return f"macro '{name}' contains self-reference"
    elif not isinstance(value, bool | int | float):
        return (
            f"macro '{name}' has invalid type {type_name(value)}, "
            "must be a scalar type (string, int, float, or bool)"
        )
    if name in RESERVED:
        return f"macro name '{name}' is reserved"
    return None


def read_macros(
    c: Collector, keys: Keys, raw: Mapping[str, Any] | None
) -> tuple[list[Macro], set[str]]:
    """Validate a `macros` mapping. Returns the valid macros in order and the names of broken ones."""
    macros: list[Macro] = []
    broken: set[str] = set()
    for name, value in (raw or {}).items():
        name = str(name)
        problem = validate_macro(name, value)
        if problem:
            c.error((*keys, name), problem)
            broken.add(name)
        else:
            macros.append((name, value))
    return macros, broken


def merge_macros(
    model_id: str, global_macros: Sequence[Macro], model_macros: Sequence[Macro]
) -> list[Macro]:
    """`[MODEL_ID] + globals + model macros`; a model macro overrides a global in place."""
    merged: list[Macro] = [("MODEL_ID", model_id), *global_macros]
    index = {name: i for i, (name, _) in enumerate(merged)}
    for name, value in model_macros:
        if name in index:
            merged[index[name]] = (name, value)
        else:
            index[name] = len(merged)
            merged.append((name, value))
    return merged


# What macros may add, in characters, to one model's (or one peer's) fields together.
# Macros that repeat other macros grow exponentially: thirty levels of doubling
# fit in a 700-byte file and would need 64 GiB.  Real commands are a few KiB.
MAX_EXPANSION = 1 << 20


class ExpansionTooLarge(Exception):
    """Substituting macro `name` would push the expansion past `MAX_EXPANSION`."""

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(name)
        self.name = name
        self.limit = limit

    def message(self) -> str:
        return (
            f"macro '{self.name}' makes the expansion exceed the limit of {self.limit} "
            "characters per model or peer (macros that repeat other macros grow exponentially)"
        )


@dataclass(slots=True)
class Budget:
    """Characters substitution may still add; charged before each replacement is built."""

    left: int = MAX_EXPANSION
    limit: int = MAX_EXPANSION

    def charge(self, name: str, growth: int) -> None:
        if growth > self.left:
            raise ExpansionTooLarge(name, self.limit)
        self.left -= max(growth, 0)


def _replace(text: str, slug: str, name: str, replacement: str, budget: Budget) -> str:
    """`text.replace(slug, replacement)`, charged to `budget` first (nothing big is built)."""
    budget.charge(name, text.count(slug) * (len(replacement) - len(slug)))
    return text.replace(slug, replacement)


def substitute_text(text: str, macros: Sequence[Macro], budget: Budget | None = None) -> str:
    """Replace `${name}` for every macro, last to first (LIFO).

    Raises ExpansionTooLarge when `budget` (a fresh one when None) runs out.
    """
    if "${" not in text:
        return text
    budget = Budget() if budget is None else budget
    for name, value in reversed(macros):
        slug = "${" + name + "}"
        if slug in text:
            text = _replace(text, slug, name, format_value(value), budget)
    return text


def substitute_one(
    value: Any, name: str, macro_value: Any, budget: Budget | None = None
) -> Any:
    """Type-preserving substitution of one macro into a nested value (maps, lists, strings)."""
    budget = Budget() if budget is None else budget
    slug = "${" + name + "}"
    if isinstance(value, str):
        if value == slug:
            if isinstance(macro_value, str):
                budget.charge(name, len(macro_value) - len(slug))
            return macro_value
        if slug in value:
            return _replace(value, slug, name, format_value(macro_value), budget)
        return value
    if isinstance(value, Mapping):
        return {k: substitute_one(v, name, macro_value, budget) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute_one(v, name, macro_value, budget) for v in value]
    return value


def substitute_value(value: Any, macros: Sequence[Macro], budget: Budget | None = None) -> Any:
    """Type-preserving LIFO substitution of every macro into a nested value."""
    budget = Budget() if budget is None else budget
    for name, macro_value in reversed(macros):
        value = substitute_one(value, name, macro_value, budget)
    return value


def refs_in(text: str) -> list[str]:
    """Macro names still referenced in `text` (`${name}`), in order."""
    return MACRO_REF.findall(text) if "${" in text else []


def first_leftover(value: Any) -> tuple[str, str] | None:
    """The first `${name}` (kind "macro") or `${env.NAME}` (kind "env") left in a nested value."""
    if isinstance(value, str):
        m = MACRO_REF.search(value)
        if m:
            return ("macro", m.group(1))
        m = ENV_REF.search(value)
        if m:
            return ("env", m.group(1))
        return None
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return None
    for item in items:
        found = first_leftover(item)
        if found:
            return found
    return None


def leftover_message(name: str, field: str, known: Sequence[str]) -> str:
    """Explain a `${name}` left in `field` after substitution.

    `known` lists the macro names in scope, to tell a macro used before its
    definition from a name that does not exist at all.
    """
    if name == "PORT":
        if field not in ("aliases", "filters.setParamsByID key"):
            return (
                "macro '${PORT}' should have been substituted: ${PORT} is only available "
                "when cmd uses ${PORT}"
            )
        return (
            f"macro '${{PORT}}' cannot be used in {field}: names a model answers to are "
            "resolved before ports are allocated"
        )
    if name == "MODEL_ID":
        return "macro '${MODEL_ID}' should have been substituted"
    if name == "PID":
        return "unknown macro '${PID}': ${PID} is only available in cmdStop"
    if name in known:
        return (
            f"unknown macro '${{{name}}}': it is used by a macro defined before '{name}'; "
            "a macro may only use macros defined earlier"
        )
    return f"unknown macro '${{{name}}}'"
