"""cmd cleaning and POSIX argv splitting."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llama_swap.compiler.commands import (
    GO_SPACE,
    EmptyCommand,
    clean_command,
    command_argv,
    go_trim,
    lex_posix,
    split_posix,
    strip_comments,
)

from .resolve_util import errors_of, plan_of


def test_multi_line_command_with_continuations_quotes_comments_and_blank_lines() -> None:
    cmd = (
        "python model1.py \\\n"
        '\t\t-a "double quotes" \\\n'
        "\t\t--arg2 'single quotes'\n"
        "\t\t-s\n"
        "\t\t# comment 1\n"
        "\t\t--arg3 123 \\\n"
        "\n"
        "\t\t  # comment 2\n"
        "\t\t--arg4 '\"string in string\"'\n"
        "\n\n"
        "\t\t# this will get stripped out as well as the white space above\n"
        "\t\t-c \"'single quoted'\"\n"
        "\t\t"
    )
    assert command_argv(cmd) == [
        "python", "model1.py",
        "-a", "double quotes",
        "--arg2", "single quotes",
        "-s",
        "--arg3", "123",
        "--arg4", '"string in string"',
        "-c", "'single quoted'",
    ]  # fmt: skip


def test_empty_command_is_an_error() -> None:
    with pytest.raises(EmptyCommand):
        command_argv("")
    with pytest.raises(EmptyCommand):
        command_argv("  # only a comment\n\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\n  # indented comment\nb", "a\nb"),
        ("a\n\n#c\n\nb", "a\n\n\nb"),  # blank lines are kept verbatim
        ("# only\n   # comments", ""),
        ("", ""),
        ("a # not a comment line", "a # not a comment line"),
    ],
)
def test_strip_comments_drops_only_whole_comment_lines(text: str, expected: str) -> None:
    assert strip_comments(text) == expected


def test_trailing_backslash_becomes_a_space_and_the_line_is_trimmed() -> None:
    assert clean_command("  a \\\n  b") == "a  \n  b"


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        # no comments mid-line: '#' is an ordinary character
        ("srv --flag #notacomment", ["srv", "--flag", "#notacomment"]),
        # an unterminated quote ends the token at the end of the text
        ("srv 'unterminated arg", ["srv", "unterminated arg"]),
        ('srv "open', ["srv", "open"]),
        # empty quotes are an empty argument
        ("srv '' \"\"", ["srv", "", ""]),
        # carriage return is not whitespace
        ("a\rb c", ["a\rb", "c"]),
        # tabs and newlines are
        ("a\tb\nc", ["a", "b", "c"]),
        # backslash escapes anything outside quotes
        (r"a\ b \$HOME", ["a b", "$HOME"]),
        # inside double quotes only $ ` " \ are escapable; others keep the backslash
        (r'"a\$b\"c\\d\ne"', ['a$b"c\\d\\ne']),
        # single quotes are literal
        (r"'a\b'", [r"a\b"]),
        # adjacent quoted parts join one argument
        ("--x='a b'\"c\"d", ["--x=a bcd"]),
        # no variable expansion, globbing, pipes or redirection
        ("echo $HOME *.gguf | cat > out", ["echo", "$HOME", "*.gguf", "|", "cat", ">", "out"]),
        # backslash-newline joins words
        ("ab\\\ncd", ["abcd"]),
        # a backslash at the very end vanishes
        ("ab\\", ["ab"]),
    ],
)
def test_posix_splitting(text: str, argv: list[str]) -> None:
    assert split_posix(text) == argv
    assert lex_posix(text) == argv  # the full lexer, also where split_posix takes its shortcut


@given(st.text(alphabet="ab#$=- \t\n\r\v\u3000"))
def test_the_shortcut_for_text_without_quotes_or_backslashes_agrees_with_the_lexer(
    text: str,
) -> None:
    assert split_posix(text) == lex_posix(text)


def test_go_space_is_gos_unicode_is_space() -> None:
    # Go's unicode.IsSpace: Latin-1 \t \n \v \f \r, space, U+0085, U+00A0, and above
    # Latin-1 the Unicode White_Space characters; Python's isspace() adds U+001C..U+001F.
    every = (chr(c) for c in range(sys.maxunicode + 1))
    python_space = {ch for ch in every if ch.isspace()}
    assert set(GO_SPACE) == python_space - {"\x1c", "\x1d", "\x1e", "\x1f"}
    assert go_trim("\u3000\x85 a b\u2028\t") == "a b"
    assert go_trim("\x1ca\x1f") == "\x1ca\x1f"


def test_plan_holds_argv_lists() -> None:
    plan = plan_of(
        """
        models:
          m:
            cmd: |
              llama-server --port ${PORT}
                # --ctx-size 4096
                -m "/models/my model.gguf"
            cmdStop: docker stop -t 5 ${MODEL_ID}
        """
    )
    m = plan.models["m"]
    assert m.cmd == ("llama-server", "--port", "5800", "-m", "/models/my model.gguf")
    assert m.cmdStop == ("docker", "stop", "-t", "5", "m")


def test_cmd_stop_absent_is_null_and_pid_is_left_for_the_runtime() -> None:
    plan = plan_of(
        """
        models:
          a: {cmd: "srv ${PORT}"}
          b: {cmd: "srv ${PORT}", cmdStop: "kill -TERM ${PID}"}
        """
    )
    assert plan.models["a"].cmdStop is None
    assert plan.models["b"].cmdStop == ("kill", "-TERM", "${PID}")


def test_macro_in_comment_line_is_not_expanded_nor_reported() -> None:
    plan = plan_of(
        """
        models:
          m:
            cmd: |
              srv --port ${PORT}
              # --lora ${undefined_macro}
        """
    )
    assert plan.models["m"].cmd == ("srv", "--port", "5800")


def test_comment_only_cmd_is_an_error_at_compile_time() -> None:
    assert errors_of(
        """
        models:
          m:
            cmd: "# nothing here"
            proxy: http://127.0.0.1:9000
        """
    ) == [("models.m.cmd", "empty command (nothing left after removing comment lines)")]
