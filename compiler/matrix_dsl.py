"""The matrix set DSL: tokenizer, parser and expander.

A set is written as an expression over matrix var IDs:

    expr := and ('|' and)*        alternatives: list concatenation
    and  := atom ('&' atom)*      co-residence: cartesian product
    atom := IDENT | '+' SETNAME | '(' expr ')'

`&` binds tighter than `|`, so `a | b & c` means `a | (b & c)`.  Identifiers
are Unicode letters, digits, `_`, `-` and `.`.  Expansion yields a list of
combinations; each combination is deduplicated and sorted, and a combination
met twice is kept once.  There is no limit on the number of combinations a
set may have, as in the Go original since v250; only a guard against running
out of memory (MAX_COMBINATIONS, a million, checked before a product is built
and as a union grows), far past any real matrix.

Errors are `DSLError`s whose message names the 0-based character position
where it applies, as the original does.  Pure: no I/O, no config knowledge.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from llama_swap.compiler.commands import GO_SPACE

MAX_COMBINATIONS = 1_000_000

TokenKind = Literal["ident", "ref", "and", "or", "lparen", "rparen", "eof"]
Combination = tuple[str, ...]


class DSLError(ValueError):
    """A DSL expression that cannot be tokenized, parsed or expanded."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    value: str
    pos: int  # 0-based character position in the expression


def _is_ident_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat.startswith("L") or cat == "Nd" or ch in "_-."


_SINGLE: dict[str, TokenKind] = {"&": "and", "|": "or", "(": "lparen", ")": "rparen"}


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens, ending with an `eof` token."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in GO_SPACE:
            i += 1
        elif ch in _SINGLE:
            tokens.append(Token(_SINGLE[ch], ch, i))
            i += 1
        elif ch == "+":
            start = i + 1
            j = start
            while j < n and _is_ident_char(text[j]):
                j += 1
            if j == start:
                raise DSLError(f"expected set name after '+' at position {start}")
            tokens.append(Token("ref", text[start:j], i))
            i = j
        elif _is_ident_char(ch):
            j = i
            while j < n and _is_ident_char(text[j]):
                j += 1
            tokens.append(Token("ident", text[i:j], i))
            i = j
        else:
            raise DSLError(f"unexpected character {ch!r} at position {i}")
    tokens.append(Token("eof", "", n))
    return tokens


# --- AST -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leaf:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Ref:
    set_name: str
    pos: int


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


Node = Leaf | Ref | And | Or


# Parentheses nest at most this deep.  The parser (and every walk over the tree)
# recurses once per level; real sets use two or three levels, and a bound keeps
# a pathological expression a clean error instead of a RecursionError.
MAX_NESTING = 32


class _Parser:
    def __init__(self, tokens: Sequence[Token]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0  # parentheses open at this point

    def peek(self) -> Token:
        return self.tokens[min(self.pos, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.peek()
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def expr(self) -> Node:
        return self.chain("or", self.and_, Or)

    def and_(self) -> Node:
        return self.chain("and", self.atom, And)

    def chain(
        self, op: TokenKind, operand: Callable[[], Node], make: Callable[[tuple[Node, ...]], Node]
    ) -> Node:
        """`operand (op operand)*`: the single operand, or `make` of all of them."""
        children = [operand()]
        while self.peek().kind == op:
            self.next()
            children.append(operand())
        return children[0] if len(children) == 1 else make(tuple(children))

    def atom(self) -> Node:
        tok = self.peek()
        if tok.kind == "ident":
            self.next()
            return Leaf(tok.value, tok.pos)
        if tok.kind == "ref":
            self.next()
            return Ref(tok.value, tok.pos)
        if tok.kind == "lparen":
            if self.depth >= MAX_NESTING:
                raise DSLError(
                    f"parentheses nested deeper than {MAX_NESTING} levels at position {tok.pos}"
                )
            self.next()
            self.depth += 1
            node = self.expr()
            self.depth -= 1
            if self.peek().kind != "rparen":
                raise DSLError(f"missing closing parenthesis for '(' at position {tok.pos}")
            self.next()
            return node
        raise DSLError(_unexpected(tok))


def _unexpected(tok: Token) -> str:
    if tok.kind == "eof":
        return f"unexpected end of expression at position {tok.pos}"
    return f"unexpected token {tok.value!r} at position {tok.pos}"


def parse(text: str) -> Node:
    """Tokenize and parse an expression; raises DSLError."""
    if not text.strip():
        raise DSLError("empty DSL expression")
    try:
        tokens = tokenize(text)
    except DSLError as e:
        raise DSLError(f"tokenize: {e}") from None
    parser = _Parser(tokens)
    try:
        node = parser.expr()
        tail = parser.peek()
        if tail.kind != "eof":
            raise DSLError(f"{_unexpected(tail)} after expression")
    except DSLError as e:
        raise DSLError(f"parse: {e}") from None
    return node


def _walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, depth first, in order of appearance."""
    yield node
    if isinstance(node, And | Or):
        for child in node.children:
            yield from _walk(child)


def refs_of(node: Node) -> list[str]:
    """Set names referenced with `+name`, unique, in order of appearance."""
    return list(dict.fromkeys(n.set_name for n in _walk(node) if isinstance(n, Ref)))


def idents_of(node: Node) -> list[Leaf]:
    """Every identifier leaf, in order of appearance."""
    return [n for n in _walk(node) if isinstance(n, Leaf)]


def _expand(node: Node, refs: Mapping[str, Sequence[Combination]]) -> list[Combination]:
    if isinstance(node, Leaf):
        return [(node.name,)]
    if isinstance(node, Ref):
        if node.set_name not in refs:
            raise DSLError(f"unknown set reference +{node.set_name}")
        return list(refs[node.set_name])
    if isinstance(node, Or):
        result: list[Combination] = []
        for child in node.children:
            result.extend(_expand(child, refs))
            if len(result) > MAX_COMBINATIONS:
                raise DSLError(_TOO_MANY)
        return result
    product: list[Combination] = [()]
    for child in node.children:
        right = _expand(child, refs)
        if len(product) * len(right) > MAX_COMBINATIONS:
            raise DSLError(_TOO_MANY)
        product = [left + r for left in product for r in right]
    return product


_TOO_MANY = (
    f"DSL expansion exceeded {MAX_COMBINATIONS} combinations (a guard against running out "
    "of memory; split the set)"
)


def expand(node: Node, refs: Mapping[str, Sequence[Combination]]) -> list[Combination]:
    """All combinations of a parsed expression; each one deduplicated and sorted."""
    return list(dict.fromkeys(tuple(sorted(set(combo))) for combo in _expand(node, refs)))


def parse_and_expand(
    text: str, refs: Mapping[str, Sequence[Combination]] | None = None
) -> list[Combination]:
    """Parse and expand in one step (refs: already expanded sets, by name)."""
    return expand(parse(text), refs or {})
