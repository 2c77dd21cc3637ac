"""The matrix set DSL."""

from __future__ import annotations

import pytest

from llama_swap.compiler.matrix_dsl import (
    DSLError,
    Token,
    parse,
    parse_and_expand,
    refs_of,
    tokenize,
)


def kinds(text: str) -> list[tuple[str, str]]:
    return [(t.kind, t.value) for t in tokenize(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", [("ident", "abc"), ("eof", "")]),
        ("model-name.v2", [("ident", "model-name.v2"), ("eof", "")]),
        ("a & b", [("ident", "a"), ("and", "&"), ("ident", "b"), ("eof", "")]),
        ("a | b", [("ident", "a"), ("or", "|"), ("ident", "b"), ("eof", "")]),
        ("+llms & v", [("ref", "llms"), ("and", "&"), ("ident", "v"), ("eof", "")]),
        (
            "(a|b)&c",
            [
                ("lparen", "("),
                ("ident", "a"),
                ("or", "|"),
                ("ident", "b"),
                ("rparen", ")"),
                ("and", "&"),
                ("ident", "c"),
                ("eof", ""),
            ],
        ),  # fmt: skip
        ("größe_1", [("ident", "größe_1"), ("eof", "")]),  # Unicode letters
    ],
)
def test_tokenize(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


def test_tokens_carry_their_position() -> None:
    assert tokenize(" a &  +s")[:3] == [
        Token("ident", "a", 1),
        Token("and", "&", 3),
        Token("ref", "s", 6),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+", "expected set name after '+' at position 1"),
        ("a + b", "expected set name after '+' at position 3"),
        ("a @ b", "unexpected character '@' at position 2"),
    ],
)
def test_tokenize_errors_name_the_position(text: str, message: str) -> None:
    with pytest.raises(DSLError, match="^" + message.replace("+", r"\+") + "$"):
        tokenize(text)


@pytest.mark.parametrize(
    ("dsl", "refs", "expected"),
    [
        ("L", {}, [("L",)]),
        ("a & b", {}, [("a", "b")]),
        ("a | b", {}, [("a",), ("b",)]),
        ("a | b | c", {}, [("a",), ("b",), ("c",)]),
        ("(a | b) & (c | d)", {}, [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]),
        ("a & b & c", {}, [("a", "b", "c")]),
        ("(g | q | m) & v", {}, [("g", "v"), ("q", "v"), ("m", "v")]),
        ("(g | q) & v & e", {}, [("e", "g", "v"), ("e", "q", "v")]),
        # & binds tighter than |
        ("a | b & c", {}, [("a",), ("b", "c")]),
        ("a & b | c", {}, [("a", "b"), ("c",)]),
        ("+llms & v", {"llms": [("g",), ("q",), ("m",)]}, [("g", "v"), ("q", "v"), ("m", "v")]),
        (
            "+with_tts & e",
            {"with_tts": [("g", "v"), ("q", "v"), ("m", "v")]},
            [("e", "g", "v"), ("e", "q", "v"), ("e", "m", "v")],
        ),
        ("a & a", {}, [("a",)]),  # deduplicated within a combination
        ("a | a", {}, [("a",)]),  # a combination met twice is kept once
    ],
)
def test_parse_and_expand(dsl: str, refs: dict, expected: list[tuple[str, ...]]) -> None:
    assert parse_and_expand(dsl, refs) == expected


@pytest.mark.parametrize(
    ("dsl", "message"),
    [
        ("", "empty DSL expression"),
        ("   ", "empty DSL expression"),
        ("(a | b", "parse: missing closing parenthesis for '(' at position 0"),
        ("a | b)", "parse: unexpected token ')' at position 5 after expression"),
        ("()", "parse: unexpected token ')' at position 1"),
        ("a &", "parse: unexpected end of expression at position 3"),
        ("a @", "tokenize: unexpected character '@' at position 2"),
        ("+unknown", "unknown set reference +unknown"),
    ],
)
def test_parse_errors(dsl: str, message: str) -> None:
    with pytest.raises(DSLError) as info:
        parse_and_expand(dsl, {})
    assert str(info.value) == message


def test_no_expansion_limit_below_the_memory_guard() -> None:
    # The Go original dropped its 1000-combination cap; 32 x 32 = 1024 is fine now.
    side = " | ".join(f"a{i}" for i in range(32))
    assert len(parse_and_expand(f"({side}) & ({side.replace('a', 'b')})")) == 1024


def test_memory_guard_on_products_is_checked_before_building() -> None:
    side = " | ".join(f"a{i}" for i in range(1001))
    with pytest.raises(DSLError, match="exceeded 1000000 combinations"):
        parse_and_expand(f"({side}) & ({side.replace('a', 'b')})")


def test_memory_guard_on_unions() -> None:
    refs = {"big": [(f"m{i}",) for i in range(600_000)]}
    with pytest.raises(DSLError, match="exceeded 1000000 combinations"):
        parse_and_expand("+big | +big", refs)


def test_refs_are_unique_and_ordered() -> None:
    assert refs_of(parse("+llms & v & +other | +llms")) == ["llms", "other"]
    assert refs_of(parse("a & b")) == []
