"""The pipeline's contract with the resolver: locations filled in from the source map."""

from __future__ import annotations

import pytest

import compiler.pipeline as pipeline
from compiler.diagnostics import CompileError, Diagnostic
from compiler.plan import Plan

from .frontend_util import compile_err, compile_ok, src, where

TEXT = "models:\n  a.b:\n    cmd: srv\n    proxy: http://h:1\n  c:\n    cmd: srv\n    proxy: http://h:2\n"


def fake_resolver(*diags: Diagnostic, raise_: bool = True):
    def resolve(doc, sources):
        if raise_:
            raise CompileError(diags)
        return Plan(sources=sources), list(diags)

    return resolve


@pytest.mark.parametrize(
    ("diag", "expected"),
    [
        (Diagnostic("x", keys=("models", "a.b", "cmd"), path="models.a.b.cmd"), "a.yaml:3:10"),
        (Diagnostic("x", path="models.a.b.cmd"), "a.yaml:3:10"),  # no keys: dotted path, greedy
        (Diagnostic("x", path="models.c.filters.stripParams"), "a.yaml:5:3"),  # nearest ancestor
        (Diagnostic("x", path="routing.router.settings.groups.g"), "a.yaml:1:1"),  # only the root
    ],
)
def test_resolver_diagnostics_without_location_are_located(monkeypatch, diag, expected) -> None:
    monkeypatch.setattr(pipeline, "_resolve", fake_resolver(diag))
    err = compile_err(src("a.yaml", TEXT))
    assert [where(d) for d in err.errors] == [expected]


def test_resolver_warnings_are_located_and_strict_makes_them_errors(monkeypatch) -> None:
    warning = Diagnostic("deprecated", path="models.c", severity="warning", keys=("models", "c"))
    monkeypatch.setattr(pipeline, "_resolve", fake_resolver(warning, raise_=False))
    (w,) = compile_ok(src("a.yaml", TEXT)).warnings
    assert where(w) == "a.yaml:5:3"
    err = compile_err(src("a.yaml", TEXT), strict=True)
    assert [where(d) for d in err.errors] == ["a.yaml:5:3"]


def test_schema_warnings_are_kept_when_the_resolver_fails(monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "_resolve", fake_resolver(Diagnostic("boom", path="models.c")))
    err = compile_err(src("a.yaml", TEXT + "unknownKey: 1\n"))
    assert [d.severity for d in err.diagnostics] == ["error", "warning"]


def test_the_resolver_is_not_run_on_an_invalid_document(monkeypatch) -> None:
    def must_not_run(doc, sources):
        raise AssertionError("resolve called on a schema-invalid document")

    monkeypatch.setattr(pipeline, "_resolve", must_not_run)
    compile_err(src("a.yaml", "globalTTL: never\n"))


def test_sources_reach_the_resolver_in_merge_order_with_text_digests(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(pipeline, "_resolve", lambda doc, sources: (seen.append(sources), (Plan(), []))[1])
    compile_ok(src("b.yaml", ""), src("a.yaml", "globalTTL: 1\n"))
    import hashlib

    assert [(s.path, s.sha256) for s in seen[0]] == [
        ("b.yaml", hashlib.sha256(b"").hexdigest()),
        ("a.yaml", hashlib.sha256(b"globalTTL: 1\n").hexdigest()),
    ]
