"""The request path's JSON codec reads every document exactly as Python's `json` does:
orjson is only a faster way to the same value."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from llama_swap.runtime.core import json_codec

AGREED = [
    b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}',
    b'{"a": 1, "a": 2}',  # the last duplicate wins in both
    b'{"x": -0.0, "y": 1e16, "z": 1.0000000000000001, "w": 9223372036854775807}',
    '{"name": "ünïcödé \U0001f600", "esc": "\\u00e9\\ud83d\\ude00"}'.encode(),
    b'[1, 2.5, null, false, "s", {"nested": [[]]}]',
    b"  [1]  ",
]


@pytest.mark.parametrize("raw", AGREED)
def test_documents_both_parsers_accept_read_the_same(raw: bytes) -> None:
    assert json_codec.loads(raw) == json.loads(raw)


def test_an_integer_beyond_64_bits_stays_an_exact_integer() -> None:
    raw = b'{"seed": 123456789012345678901234567890}'
    got = json_codec.loads(raw)["seed"]
    assert isinstance(got, int) and got == 123456789012345678901234567890


@pytest.mark.parametrize("raw", [b'{"t": NaN}', b'{"t": Infinity}', b'{"s": "\\ud800"}'])
def test_what_only_json_accepts_is_still_read(raw: bytes) -> None:
    got: Any = json_codec.loads(raw)
    want: Any = json.loads(raw)
    value, expected = next(iter(got.values())), next(iter(want.values()))
    if isinstance(expected, float):
        assert math.isnan(value) if math.isnan(expected) else value == expected
    else:
        assert value == expected


@pytest.mark.parametrize("raw, error", [
    (b'{"model": ', ValueError),
    (b'"\xff"', UnicodeDecodeError),  # invalid UTF-8: json's own error, which callers handle
    (b"[" * 100_000 + b"]" * 100_000, RecursionError),
])
def test_what_json_refuses_fails_with_json_s_error(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        json.loads(raw)
    with pytest.raises(error):
        json_codec.loads(raw)


def test_dumps_is_compact_keeps_text_and_round_trips() -> None:
    value = {"b": [1, 2.5, "é"], "a": None}
    assert json_codec.dumps(value) == '{"b":[1,2.5,"é"],"a":null}'
    assert json_codec.dumps(value, sort_keys=True) == '{"a":null,"b":[1,2.5,"é"]}'
    assert json.loads(json_codec.dumps(value)) == value


def test_dumps_falls_back_for_what_orjson_cannot_write() -> None:
    assert json_codec.dumps([10**20]) == "[100000000000000000000]"
    assert json.loads(json_codec.dumps(["\ud800"])) == ["\ud800"]


def test_a_big_document_reads_the_same() -> None:
    raw = b'{"model": "m", "seed": 12345678901234567890123, "p": "' + b"x1 " * 20_000 + b'"}'
    assert len(raw) > json_codec.ORJSON_MAX
    assert json_codec.loads(raw) == json.loads(raw)
