"""A pin or selector rewriting a GET's `?model=`: the query the upstream then gets.

The Go original sets `model` in the parsed query and encodes it again: every `model`
field becomes one, keys come out sorted, spaces as `+`, everything but letters, digits
and `-_.~` percent-encoded; fields its parser drops (a `;`, a broken `%` escape) are gone.
"""

from __future__ import annotations

from llama_swap.runtime.http.request.choose import query_with_model


def test_model_is_set_and_the_keys_come_out_sorted() -> None:
    assert query_with_model("model=sel", "b") == "model=b"
    assert query_with_model("z=1&model=sel&a=2", "b") == "a=2&model=b&z=1"
    assert query_with_model("", "b") == "model=b"


def test_every_model_field_becomes_one_and_repeated_keys_keep_their_order() -> None:
    assert query_with_model("model=x&k=2&model=y&k=1", "b") == "k=2&k=1&model=b"


def test_values_are_decoded_then_encoded_as_go_encodes_them() -> None:
    assert query_with_model("a=x+y&a=%2F&c=%7e&d=%C3%A9", "b") == "a=x+y&a=%2F&c=~&d=%C3%A9&model=b"
    assert query_with_model("flag&e=", "b") == "e=&flag=&model=b"
    assert query_with_model("model=sel", "org/m:q4 é") == "model=org%2Fm%3Aq4+%C3%A9"
    assert query_with_model("a=%FF", "b") == "a=%FF&model=b"  # bytes kept, not text


def test_fields_the_go_parser_drops_are_dropped() -> None:
    assert query_with_model("a=1;b=2&c=3&&d=%zz&model=sel", "b") == "c=3&model=b"
