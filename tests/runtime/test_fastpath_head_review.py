"""The fast path's request recogniser hands aiohttp every head aiohttp's own parser would
refuse (so the client gets aiohttp's 400, and nothing odd is forwarded upstream), and
never raises, whatever the bytes."""

from __future__ import annotations

import pytest

from llama_swap.runtime.http.fast.request_head import HANDOFF, Head, parse_head
from llama_swap.runtime.http.fast.server import FAST_PATHS

BODY = b'{"model":"m","messages":[]}'
GOOD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY


def test_the_plain_request_these_cases_start_from_is_taken() -> None:
    assert isinstance(parse_head(GOOD, FAST_PATHS), Head)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(GOOD.replace(b"Host: ", b"X-Odd: a\x01b\r\nHost: "), id="C0 control in a value"),
        pytest.param(GOOD.replace(b"Host: ", b"X-Odd: a\x1bb\r\nHost: "), id="ESC in a value"),
        pytest.param(GOOD.replace(b"Host: ", b"X-Odd: a\x7fb\r\nHost: "), id="DEL in a value"),
        pytest.param(GOOD.replace(b"Host: ", b"X-Odd: a\x0bb\r\nHost: "), id="VT in a value"),
        pytest.param(GOOD.replace(b"completions HTTP", b"completions?q=\xff HTTP"),
                     id="non-ASCII query"),
        pytest.param(GOOD.replace(b"completions HTTP", b"completions?q=\x01 HTTP"),
                     id="control in the query"),
        pytest.param(GOOD.replace(b"completions HTTP", b"completions?" + b"q" * 70_000 + b" HTTP"),
                     id="request target longer than aiohttp's max_line_size"),
        pytest.param(
            GOOD.replace(b"Host: ", b"".join(b"X-%d: 1\r\n" % i for i in range(1001)) + b"Host: "),
            id="more headers than aiohttp's max_headers",
        ),
        pytest.param(GOOD.replace(b"Content-Length: ", b"Content-Length: 9" + b"0" * 30),
                     id="Content-Length overflowing 64 bits"),
    ],
)
def test_heads_aiohttp_refuses_are_handed_off(raw: bytes) -> None:
    assert parse_head(raw, FAST_PATHS) == HANDOFF


def test_a_content_length_past_pythons_int_digit_limit_is_handed_off_not_raised() -> None:
    raw = GOOD.replace(b"Content-Length: ", b"Content-Length: 9" + b"0" * 5000)
    assert parse_head(raw, FAST_PATHS) == HANDOFF


def test_what_aiohttp_accepts_in_values_is_still_taken() -> None:
    for extra in (b"X-Tab: a\tb", b"X-Obs: caf\xc3\xa9", b"X-Empty:"):
        head = parse_head(GOOD.replace(b"Host: ", extra + b"\r\nHost: "), FAST_PATHS)
        assert isinstance(head, Head), extra
    long_query = GOOD.replace(b"completions HTTP", b"completions?" + b"q" * 60_000 + b" HTTP")
    assert isinstance(parse_head(long_query, FAST_PATHS), Head)
