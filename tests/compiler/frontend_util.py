"""Helpers for the front-end tests: compile inline fragments, find diagnostics."""

from __future__ import annotations

import textwrap

import pytest

from llama_swap.compiler.diagnostics import CompileError, Diagnostic
from llama_swap.compiler.pipeline import CompileResult, compile_sources


def src(name: str, text: str) -> tuple[str, str]:
    """A (name, dedented text) fragment."""
    return name, textwrap.dedent(text)


def compile_ok(
    *sources: tuple[str, str], env: dict[str, str] | None = None, strict: bool = False
) -> CompileResult:
    return compile_sources(list(sources), env=env or {}, strict=strict)


def compile_err(
    *sources: tuple[str, str], env: dict[str, str] | None = None, strict: bool = False
) -> CompileError:
    with pytest.raises(CompileError) as info:
        compile_sources(list(sources), env=env or {}, strict=strict)
    return info.value


def where(d: Diagnostic) -> str:
    """`file:line:col` of a diagnostic (for compact assertions)."""
    assert d.location is not None, d
    return f"{d.location.file}:{d.location.line}:{d.location.column}"


def summary(err: CompileError) -> list[tuple[str, str, str]]:
    """(file:line:col, path, message) of every error, in report order."""
    return [(where(d), d.path, d.message) for d in err.errors]
