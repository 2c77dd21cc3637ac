"""YAML -> plain values with locations, in the Go original's YAML dialect (1.2 core schema)."""

from __future__ import annotations

from llama_swap.compiler.diagnostics import Diagnostic, Location
from llama_swap.compiler.parse import parse_source
from llama_swap.compiler.render import render_github, render_text


def value_of(text: str):
    parsed = parse_source("a.yaml", text)
    assert parsed.diagnostics == []
    return parsed.value


def messages(text: str) -> list[str]:
    return [d.message for d in parse_source("a.yaml", text).diagnostics]


def test_only_true_and_false_are_booleans() -> None:
    assert value_of("a: [true, False, on, yes, no, off, y]") == {
        "a": [True, False, "on", "yes", "no", "off", "y"]
    }


def test_numbers_follow_yaml_1_2() -> None:
    assert value_of("a: [017, 0o17, 0x1f, 1.5, 1e3, '12', 1_000]") == {
        "a": [17, 15, 31, 1.5, 1000.0, "12", "1_000"]
    }


def test_timestamps_stay_strings_and_keys_are_their_text() -> None:
    assert value_of("2024-01-01: 2024-01-01\n1.0: x\ntrue: y\n") == {
        "2024-01-01": "2024-01-01",
        "1.0": "x",
        "true": "y",
    }


def test_merge_keys_are_honoured_and_explicit_keys_win() -> None:
    text = "base: &b {cmd: srv, ttl: 5}\nmodels:\n  m:\n    <<: *b\n    ttl: 10\n"
    assert value_of(text)["models"] == {"m": {"cmd": "srv", "ttl": 10}}


def test_every_key_and_item_has_a_location() -> None:
    parsed = parse_source("a.yaml", "models:\n  m:\n    aliases:\n      - x\n      - y\n")
    smap = parsed.smap
    assert smap.lookup(("models", "m")) == Location("a.yaml", 2, 3)
    assert smap.lookup(("models", "m", "aliases", 1)) == Location("a.yaml", 5, 9)
    assert smap.lookup(("models", "m", "nope", 3)) == Location("a.yaml", 2, 3)  # nearest ancestor


def test_problems_are_diagnostics_not_exceptions() -> None:
    assert messages("a: &x [1, *x]") == ["an alias refers to the collection that contains it"]
    assert messages("a: .inf") == ["infinite and NaN numbers are not allowed (the plan is JSON)"]
    assert messages("a: !custom x") == ["unsupported YAML tag '!custom'"]
    assert messages("a: 1\na: 2") == ["key 'a' is defined twice in this mapping (first at line 1)"]
    assert messages("? [a]\n: 1") == ["mapping keys must be plain scalars, not lists or mappings"]
    assert messages("a: 1\n---\nb: 2\n")[0].startswith("invalid YAML")
    assert messages("[" * 150 + "]" * 150)[0].startswith("nesting deeper")


def test_alias_bombs_are_stopped() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    assert messages("\n".join(lines)) == [
        "document too large (too many values, probably from aliases)"
    ]


def test_github_annotations_escape_their_syntax() -> None:
    d = Diagnostic("bad: 100%\nnext", "a,b", Location("dir,x/a:b.yaml", 3, 4))
    assert render_github([d]) == (
        "::error file=dir%2Cx/a%3Ab.yaml,line=3,col=4,title=a%2Cb::a,b: bad: 100%25%0Anext\n"
    )


def test_text_without_location_still_reads_well() -> None:
    d = Diagnostic("no configuration sources found")
    assert render_text([d]) == "error: no configuration sources found\nfound 1 error\n"


def test_control_characters_are_located_and_not_echoed_raw() -> None:
    from llama_swap.compiler.render import render_text

    from .frontend_util import compile_err, src, where

    err = compile_err(src("a.yaml", "a: 1\nb: x\0y\n"))
    (d,) = err.errors
    assert (where(d), d.message) == (
        "a.yaml:2:5",
        "invalid YAML: unacceptable character #x0000 (control characters are not allowed)",
    )
    assert render_text(err.diagnostics, {"a.yaml": "a: 1\nb: x\0y\n"}).splitlines()[1:3] == [
        "    b: x?y",
        "        ^",
    ]


def test_a_very_long_line_is_shown_as_a_window_around_the_column() -> None:
    from llama_swap.compiler.diagnostics import Diagnostic, Location
    from llama_swap.compiler.render import EXCERPT_WIDTH, render_text

    text = "k: " + "x" * 5000 + "!" + "y" * 5000 + "\n"
    d = Diagnostic("here", location=Location("a.yaml", 1, 5004))
    shown, caret = render_text([d], {"a.yaml": text}).splitlines()[1:3]
    assert len(shown) <= 4 + EXCERPT_WIDTH + 6 and shown.startswith("    ...")
    assert shown[len(caret) - 1] == "!"
