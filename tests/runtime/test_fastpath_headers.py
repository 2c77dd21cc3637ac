"""LazyHeaders: raw header pairs read like aiohttp's case-insensitive headers."""

from __future__ import annotations

import pytest

from llama_swap.runtime.core.auth import extract_api_key
from llama_swap.runtime.http.fast.headers import LazyHeaders
from llama_swap.runtime.http.observe.captures import flat_headers

RAW = [(b"Content-Type", b"application/json"), (b"X-Forwarded-For", b"10.0.0.1"),
       (b"x-forwarded-for", b"10.0.0.2"), (b"Authorization", b"Bearer k"),
       (b"X-Name", "caf\u00e9".encode())]


def test_lookups_ignore_case_and_give_the_first_value() -> None:
    h = LazyHeaders(RAW)
    assert h.get("content-type") == "application/json"
    assert h.get("X-FORWARDED-FOR") == "10.0.0.1"
    assert h.getall("X-Forwarded-For") == ["10.0.0.1", "10.0.0.2"]
    assert h["x-name"] == "caf\u00e9"
    assert "AUTHORIZATION" in h and "Accept" not in h
    assert h.get("Accept", "") == "" and h.get("Accept") is None
    assert h.getall("Accept", ()) == ()
    with pytest.raises(KeyError):
        h["Accept"]
    with pytest.raises(KeyError):
        h.getall("Accept")


def test_iteration_keeps_spelling_order_and_duplicates() -> None:
    h = LazyHeaders(RAW)
    assert list(h.items())[:3] == [("Content-Type", "application/json"),
                                   ("X-Forwarded-For", "10.0.0.1"),
                                   ("x-forwarded-for", "10.0.0.2")]
    assert len(h) == 5 and list(h)[0] == "Content-Type"


def test_the_shared_helpers_read_it_as_they_read_aiohttp_headers() -> None:
    h = LazyHeaders(RAW)
    assert extract_api_key(h) == "k"
    assert flat_headers(h)["Authorization"] == "[REDACTED]"
    assert flat_headers(h)["X-Forwarded-For"] == "10.0.0.1"
