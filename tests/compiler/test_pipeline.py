"""The pipeline's contract with the resolver: locations filled in from the source map."""

from __future__ import annotations

import pytest

import llama_swap.compiler.pipeline as pipeline
from llama_swap.compiler.diagnostics import CompileError, Diagnostic
from llama_swap.compiler.plan import Plan

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


def test_schema_errors_and_cross_reference_errors_come_in_one_run() -> None:
    err = compile_err(
        src(
            "a.yaml",
            """\
            macros:
              PORT: 1
            models:
              a:
                cmd: srv
                proxy: http://h:1
                ttl: soon
              b:
                cmd: srv
                proxy: http://h:2
            groups:
              g: {members: [b, ghost]}
            hooks:
              on_startup: {preload: [phantom]}
            """,
        )
    )
    assert [(where(d), d.path) for d in err.errors] == [
        ("a.yaml:2:3", "macros.PORT"),  # schema
        ("a.yaml:7:10", "models.a.ttl"),  # schema
        ("a.yaml:12:20", "groups.g.members[1]"),  # cross-reference, found in the same run
        ("a.yaml:14:26", "hooks.on_startup.preload[0]"),  # cross-reference
    ]


def test_resolver_findings_about_an_entity_with_a_schema_error_are_dropped(monkeypatch) -> None:
    followups = fake_resolver(
        Diagnostic("consequence", keys=("models", "a", "proxy"), path="models.a.proxy"),
        Diagnostic("independent", keys=("models", "c", "cmd"), path="models.c.cmd"),
    )
    monkeypatch.setattr(pipeline, "_resolve", followups)
    bad = TEXT.replace("a.b:", "a:").replace("    cmd: srv\n    proxy: http://h:1", "    cmd: [1]")
    err = compile_err(src("a.yaml", bad))
    assert [(d.path, d.message) for d in err.errors] == [
        ("models.a.cmd", "expected a string, got a list [1]"),
        ("models.c.cmd", "independent"),
    ]


def test_a_resolver_crash_on_an_invalid_document_does_not_hide_the_errors(monkeypatch) -> None:
    def crash(doc, sources):
        raise TypeError("resolver bug")

    monkeypatch.setattr(pipeline, "_resolve", crash)
    err = compile_err(src("a.yaml", "globalTTL: never\n"))
    assert [d.path for d in err.errors] == ["globalTTL"]


def test_the_resolver_is_not_run_when_a_fragment_does_not_parse(monkeypatch) -> None:
    def must_not_run(doc, sources):
        raise AssertionError("resolve called although a fragment is missing")

    calls = []
    monkeypatch.setattr(pipeline, "_resolve", lambda *a: (calls.append(a), must_not_run(*a)))
    compile_err(src("a.yaml", "globalTTL: never\n"), src("b.yaml", "models: [\n"))
    assert calls == []


def test_sources_reach_the_resolver_in_merge_order_with_text_digests(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(
        pipeline, "_resolve", lambda doc, sources: (seen.append(sources), (Plan(), []))[1]
    )
    compile_ok(src("b.yaml", ""), src("a.yaml", "globalTTL: 1\n"))
    import hashlib

    assert [(s.path, s.sha256) for s in seen[0]] == [
        ("b.yaml", hashlib.sha256(b"").hexdigest()),
        ("a.yaml", hashlib.sha256(b"globalTTL: 1\n").hexdigest()),
    ]
