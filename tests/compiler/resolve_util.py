"""Helpers for the resolve tests: build a document from YAML text and resolve it.

The document goes through the macro pass first (compiler.macro_tree), as in the
pipeline, so macros in any value behave as they do for a real compile.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from llama_swap.compiler.diagnostics import CompileError, Diagnostic
from llama_swap.compiler.macro_tree import apply_macros
from llama_swap.compiler.plan import Plan, plan_to_dict
from llama_swap.compiler.resolve import resolve as resolve_doc


def resolve(d: dict[str, Any], sources: tuple[()] = ()) -> tuple[Plan, list[Diagnostic]]:
    """The macro pass, then the resolver; macro errors are raised with the resolver's."""
    d, found = apply_macros(d)
    try:
        plan, warnings = resolve_doc(d, sources)
    except CompileError as exc:
        raise CompileError([*found, *exc.diagnostics]) from None
    if any(f.severity == "error" for f in found):
        raise CompileError([*found, *warnings])
    return plan, [*found, *warnings]


def doc(text: str) -> dict[str, Any]:
    return yaml.safe_load(textwrap.dedent(text)) or {}


def plan_of(text_or_doc: str | dict[str, Any]) -> Plan:
    d = doc(text_or_doc) if isinstance(text_or_doc, str) else text_or_doc
    plan, _ = resolve(d, ())
    return plan


def json_of(text_or_doc: str | dict[str, Any]) -> dict[str, Any]:
    return plan_to_dict(plan_of(text_or_doc))


def warnings_of(text: str) -> list[tuple[str, str]]:
    _, warnings = resolve(doc(text), ())
    return sorted((w.path, w.message) for w in warnings)


def diagnostics_of(text: str) -> tuple[Diagnostic, ...]:
    with pytest.raises(CompileError) as info:
        resolve(doc(text), ())
    return info.value.errors


def errors_of(text: str) -> list[tuple[str, str]]:
    """(path, message) of every error, sorted; fails the test if the config resolves."""
    return sorted((d.path, d.message) for d in diagnostics_of(text))
