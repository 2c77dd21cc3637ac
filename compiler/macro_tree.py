"""Macros in every config value, before the schema sees the document.

The Go original now substitutes macros over the whole decoded tree before it
decodes the typed config, so `healthCheckTimeout: ${hc}` or `ttl: "${T}"`
become numbers when the macro is one.  This pass does the same on the merged
document, ahead of schema validation:

- global macros go into every value under every top-level key except
  `macros` and `models` (map keys are left alone);
- each model gets `[MODEL_ID] + globals + its own macros` (a model macro
  replaces a global of the same name in place) in every field that the
  per-model stage (compiler.models) does not substitute itself: `env`,
  `aliases`, `useModelName`, `ttl`, `unloadTimeout`, `concurrencyLimit`,
  `filters.setParams`, `timeouts`, `capabilities`, `compat` and any other key;
- a value that is exactly `${name}` takes the macro's typed value; elsewhere
  the macro is interpolated as text (compiler.macros).

Fields that compiler.models handles (`cmd`, `cmdStop`, `proxy`,
`checkEndpoint`, `name`, `description`, `metadata`, `filters.stripParams`,
`filters.setParamsByID`) are left for it: it substitutes `${PORT}` there and
reports leftovers with its own messages.  Leftovers in the fields handled
here are reported by key path (`models.m.env[0]: unknown macro '${X}'`);
`${PORT}` and `${PID}` are left for the later stages, which know where they
are allowed.  Definitions that are invalid are reported by compiler.resolve,
so a reference to one is not reported again.

Pure: a document in, a new document and diagnostics out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_swap.compiler.collect import Collector, Keys
from llama_swap.compiler.diagnostics import Diagnostic
from llama_swap.compiler.macros import (
    Budget,
    ExpansionTooLarge,
    Macro,
    leftover_message,
    merge_macros,
    refs_in,
    substitute_value,
    validate_macro,
)

# Left to compiler.models, which substitutes and checks them itself.
MODEL_OWN_FIELDS = frozenset(
    {"cmd", "cmdStop", "proxy", "checkEndpoint", "name", "description", "metadata", "macros"}
)
FILTER_OWN_FIELDS = frozenset({"stripParams", "strip_params", "setParamsByID"})
# Top-level keys whose macros are substituted (and checked) by later stages.
TOP_SKIPPED = frozenset({"macros", "models"})
# Names only later stages can substitute.
RUNTIME_NAMES = frozenset({"PORT", "PID"})


def _valid_macros(raw: Any) -> tuple[list[Macro], set[str]]:
    macros: list[Macro] = []
    broken: set[str] = set()
    if not isinstance(raw, Mapping):
        return macros, broken
    for name, value in raw.items():
        name = str(name)
        if validate_macro(name, value) is None:
            macros.append((name, value))
        else:
            broken.add(name)
    return macros, broken


def _leftovers(value: Any, keys: Keys) -> list[tuple[Keys, str]]:
    """(key path, macro name) for each `${name}` left in a nested value, in document order."""
    if isinstance(value, str):
        return [(keys, name) for name in dict.fromkeys(refs_in(value))]
    if isinstance(value, Mapping):
        return [hit for k, v in value.items() for hit in _leftovers(v, (*keys, str(k)))]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in _leftovers(v, (*keys, i))]
    return []


def _substitute(
    c: Collector, value: Any, macros: list[Macro], keys: Keys, skip: set[str], check: bool = True
) -> Any:
    """Typed substitution with leftover reports; a runaway expansion keeps the value as written."""
    try:
        out = substitute_value(value, macros, Budget()) if macros else value
    except ExpansionTooLarge as e:
        c.error(keys, e.message())
        return value
    if not check:
        return out
    known = [name for name, _ in macros]
    for where, name in _leftovers(out, keys):
        if name not in RUNTIME_NAMES and name not in skip:
            c.error(where, leftover_message(name, str(where[-1]), known))
    return out


def _model(c: Collector, mid: str, raw: Any, globals_: list[Macro], broken: set[str]) -> Any:
    if not isinstance(raw, Mapping):
        return raw
    own, own_broken = _valid_macros(raw.get("macros"))
    merged = merge_macros(mid, globals_, own)
    skip = broken | own_broken
    out: dict[str, Any] = {}
    for key, value in raw.items():
        keys: Keys = ("models", mid, key)
        if key in MODEL_OWN_FIELDS:
            out[key] = value
        elif key == "filters" and isinstance(value, Mapping):
            out[key] = {
                fk: fv if fk in FILTER_OWN_FIELDS else _substitute(c, fv, merged, (*keys, fk), skip)
                for fk, fv in value.items()
            }
        else:
            out[key] = _substitute(c, value, merged, keys, skip)
    return out


def apply_macros(
    doc: Mapping[str, Any], checked: frozenset[str] | None = None
) -> tuple[dict[str, Any], list[Diagnostic]]:
    """The document with macros substituted in every value, and the leftovers found.

    Leftovers are reported under the top-level keys in `checked` (all when
    None) except `peers`, whose stage (compiler.peers) reports its own; the
    Go original does not check unknown keys either.
    """
    c = Collector()
    globals_, broken = _valid_macros(doc.get("macros"))
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "models" and isinstance(value, Mapping):
            out[key] = {
                str(mid): _model(c, str(mid), raw, globals_, broken) for mid, raw in value.items()
            }
        elif key in TOP_SKIPPED:
            out[key] = value
        else:
            check = key != "peers" and (checked is None or key in checked)
            out[key] = _substitute(c, value, globals_, (key,), broken, check)
    return out, c.diagnostics
