"""`${env.NAME}` substitution on raw text, before YAML parsing."""

from __future__ import annotations

from llama_swap.compiler.envsubst import substitute_env

from .frontend_util import compile_err, compile_ok, src, where


def test_reference_in_a_value_is_replaced() -> None:
    text, diags = substitute_env("a.yaml", "apiKeys: [${env.KEY}]\n", {"KEY": "sk-1"})
    assert (text, diags) == ("apiKeys: [sk-1]\n", [])


def test_works_in_keys_values_and_flow_lists_end_to_end() -> None:
    result = compile_ok(
        src(
            "a.yaml",
            """
            apiKeys: [${env.K1}, "${env.K2}"]
            models:
              ${env.NAME}:
                cmd: srv --port ${PORT} --model ${env.HOME_DIR}/m.gguf
            """,
        ),
        env={"K1": "one", "K2": "two", "NAME": "llama", "HOME_DIR": "/srv"},
    )
    assert result.plan.settings.apiKeys == ("one", "two")
    assert result.plan.models["llama"].cmd[-1] == "/srv/m.gguf"


def test_unset_variable_is_an_error_with_file_line_column_and_key_path() -> None:
    err = compile_err(src("a.yaml", "models:\n  m:\n    cmd: srv ${env.MISSING_DIR}/x\n"), env={})
    (d,) = err.errors
    assert d.message == "environment variable 'MISSING_DIR' is not set"
    assert where(d) == "a.yaml:3:14"
    assert d.keys == ("models", "m", "cmd")


def test_every_unset_variable_in_every_file_is_reported() -> None:
    err = compile_err(
        src("a.yaml", "logLevel: ${env.A}\nlogToStdout: ${env.B}\n"),
        src("b.yaml", "startPort: ${env.C}\n"),
        env={},
    )
    assert [(where(d), d.message.split("'")[1]) for d in err.errors] == [
        ("a.yaml:1:11", "A"),
        ("a.yaml:2:14", "B"),
        ("b.yaml:1:12", "C"),
    ]


def test_set_but_empty_is_allowed() -> None:
    text, diags = substitute_env("a.yaml", "logTimeFormat: '${env.EMPTY}'\n", {"EMPTY": ""})
    assert (text, diags) == ("logTimeFormat: ''\n", [])


def test_references_in_comments_are_ignored() -> None:
    text = "# set ${env.NOT_SET} one day\nglobalTTL: 1 # ${env.ALSO_NOT}\n"
    assert substitute_env("a.yaml", text, {}) == (text, [])


def test_a_hash_inside_a_quoted_string_is_not_a_comment() -> None:
    _, diags = substitute_env("a.yaml", "name: 'x # ${env.NOPE}'\n", {})
    assert [d.message for d in diags] == ["environment variable 'NOPE' is not set"]


def test_a_hash_line_inside_a_block_scalar_is_not_a_comment() -> None:
    text = "models:\n  m:\n    cmd: |\n      srv\n      # ${env.V}\n"
    out, diags = substitute_env("a.yaml", text, {"V": "7"})
    assert diags == [] and out.endswith("# 7\n")


def test_when_the_text_does_not_parse_every_reference_is_live() -> None:
    _, diags = substitute_env("a.yaml", "a: [\n# ${env.X}\n", {})
    assert [d.message for d in diags] == ["environment variable 'X' is not set"]


def test_values_with_newlines_or_nul_are_refused() -> None:
    for value in ("a\nb", "a\rb", "a\0b"):
        _, diags = substitute_env("a.yaml", "logLevel: ${env.V}\n", {"V": value})
        assert len(diags) == 1 and "newline or NUL" in diags[0].message


def test_backslashes_and_quotes_survive_a_double_quoted_scalar() -> None:
    value = 'C:\\models\\"q"'
    result = compile_ok(
        src("a.yaml", 'models:\n  m:\n    cmd: srv\n    proxy: http://x:1\n    name: "${env.V}"\n'),
        env={"V": value},
    )
    assert result.plan.models["m"].name == value


def test_in_plain_scalars_the_escapes_stay_literal_like_the_original() -> None:
    text, _ = substitute_env("a.yaml", "name: ${env.V}\n", {"V": 'a\\b"c'})
    assert text == 'name: a\\\\b\\"c\n'


def test_names_must_be_identifiers() -> None:
    text = "name: ${env.1BAD} ${env.A-B} ${env.}\n"
    assert substitute_env("a.yaml", text, {}) == (text, [])
