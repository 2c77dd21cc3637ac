"""Secrets never appear in compile errors or warnings, whatever the output format.

A key usually reaches the config through `${env.NAME}`, so two leaks are
possible: the source line printed under a message (it must be the line as
written, with the reference, not the substituted value) and messages that quote
a value (an invalid api key must not be repeated).
"""

from __future__ import annotations

import pytest

from llama_swap.compiler.render import render_github, render_json, render_text

from .frontend_util import compile_err, compile_ok

SECRET = "sk-Very-Secret-Value-4242"
ENV = {"API_KEY": SECRET, "PEER_KEY": SECRET + "-peer"}

CONFIG = """\
apiKeys: ["${env.API_KEY}", "with space ${env.API_KEY}", "${env.API_KEY}", 42]
models:
  m:
    cmd: srv --port ${PORT}
    ttl: "${env.API_KEY}"
    unknownKey: "${env.API_KEY}"
peers:
  p:
    proxy: http://h:1
    models: [x]
    apiKey: ${env.PEER_KEY} and more
"""


def outputs(diagnostics, texts) -> dict[str, str]:
    return {
        "text": render_text(diagnostics, texts),
        "json": render_json(diagnostics),
        "github": render_github(diagnostics),
    }


def test_errors_never_show_a_secret_from_the_environment() -> None:
    err = compile_err(("a.yaml", CONFIG), env=ENV)
    assert len(err.errors) >= 2
    for fmt, out in outputs(err.diagnostics, err.texts).items():
        assert SECRET not in out, f"{fmt} output leaks the secret:\n{out}"
    text = render_text(err.diagnostics, err.texts)
    assert "${env.API_KEY}" in text  # the line as written is shown


def test_the_caret_points_into_the_line_as_written() -> None:
    # the error is after a substitution on the same line: its column is the written one
    text = 'apiKeys: ["${env.API_KEY}", "a b"]\nmodels:\n  m:\n    cmd: x\n'
    err = compile_err(("a.yaml", text), env=ENV)
    (d,) = [d for d in err.errors if d.path == "apiKeys[1]"]
    assert d.location is not None and d.location.column == text.index('"a b"') + 1
    rendered = render_text([d], err.texts).splitlines()
    line, caret = rendered[1], rendered[2]
    assert line.strip() == text.splitlines()[0]
    assert line[caret.index("^")] == '"'


@pytest.mark.parametrize("strict", [False, True])
def test_warnings_do_not_show_it_either(strict: bool) -> None:
    text = "apiKeys: ['${env.API_KEY}']\nmodels:\n  m:\n    cmd: x\n    proxy: http://h:1\n    typo: ${env.API_KEY}\n"
    if strict:
        err = compile_err(("a.yaml", text), env=ENV, strict=True)
        diags, texts = err.diagnostics, err.texts
    else:
        result = compile_ok(("a.yaml", text), env=ENV)
        diags, texts = result.warnings, result.texts
    assert diags
    for fmt, out in outputs(diags, texts).items():
        assert SECRET not in out, f"{fmt} output leaks the secret:\n{out}"
