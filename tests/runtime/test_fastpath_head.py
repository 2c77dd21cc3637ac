"""The fast path's request recogniser: a plain JSON POST to an inference route is taken,
an incomplete head waits, and anything unusual goes to aiohttp with its bytes intact."""

from __future__ import annotations

import pytest

from llama_swap.runtime.http.fast.request_head import HANDOFF, MAX_HEAD, Head, parse_head
from llama_swap.runtime.http.fast.server import FAST_PATHS

BODY = b'{"model":"m","messages":[]}'


def request(
    *headers: str, line: str = "POST /v1/chat/completions HTTP/1.1", body: bytes = BODY,
    length: bool = True, ctype: str | None = "application/json",
) -> bytes:
    lines = [line, "Host: proxy"]
    if ctype is not None:
        lines.append(f"Content-Type: {ctype}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_a_plain_json_post_is_taken_with_its_headers_length_and_query() -> None:
    raw = request("Authorization: Bearer k", line="POST /v1/chat/completions?x=1&y=%20 HTTP/1.1")
    head = parse_head(raw, FAST_PATHS)
    assert isinstance(head, Head)
    assert head.path == "/v1/chat/completions"
    assert head.query == b"x=1&y=%20"
    assert head.content_length == len(BODY)
    assert head.total == len(raw)
    assert raw[head.head_len :] == BODY
    assert head.headers()["authorization"] == "Bearer k"
    assert head.close is False


def test_the_versionless_routes_and_every_json_route_are_fast_path_routes() -> None:
    for path in ("/v/chat/completions", "/v1/embeddings", "/v1/messages", "/rerank", "/completion"):
        assert isinstance(parse_head(request(line=f"POST {path} HTTP/1.1"), FAST_PATHS), Head)


def test_header_values_lose_surrounding_whitespace_and_keep_their_spelling() -> None:
    head = parse_head(request("X-Thing:   spaced out \t"), FAST_PATHS)
    assert isinstance(head, Head)
    assert (b"X-Thing", b"spaced out") in head.raw_headers


def test_connection_close_is_remembered() -> None:
    head = parse_head(request("Connection: keep-alive, Close"), FAST_PATHS)
    assert isinstance(head, Head) and head.close is True


def test_an_incomplete_head_waits_for_more_bytes_at_every_split_point() -> None:
    raw = request()
    end = raw.index(b"\r\n\r\n") + 4
    for cut in range(0, end):
        assert parse_head(raw[:cut], FAST_PATHS) is None, cut
    # once the head is complete it is known, even before the body arrived
    assert isinstance(parse_head(raw[:end], FAST_PATHS), Head)


def test_a_request_that_is_not_a_post_is_handed_off_at_its_first_byte() -> None:
    assert parse_head(b"G", FAST_PATHS) is HANDOFF
    assert parse_head(b"GET /v1/models HTTP/1.1\r\n", FAST_PATHS) is HANDOFF
    assert parse_head(b"PUT ", FAST_PATHS) is HANDOFF
    assert parse_head(b"\r\nPOST /v1/chat/completions", FAST_PATHS) is HANDOFF


@pytest.mark.parametrize(
    ("why", "raw"),
    [
        ("another route", request(line="POST /api/models/unload HTTP/1.1")),
        ("a path that is not canonical", request(line="POST /v1//chat/completions HTTP/1.1")),
        ("a percent-escaped path", request(line="POST /v1/chat%2Fcompletions HTTP/1.1")),
        ("HTTP/1.0", request(line="POST /v1/chat/completions HTTP/1.0")),
        ("a bad request line", request(line="POST  /v1/chat/completions HTTP/1.1")),
        ("no Content-Length", request(length=False)),
        ("two Content-Lengths", request("Content-Length: 27")),
        ("a signed Content-Length", request(length=False).replace(b"Host", b"Content-Length: +27\r\nHost")),
        ("chunked", request("Transfer-Encoding: chunked")),
        ("Expect", request("Expect: 100-continue")),
        ("Upgrade", request("Upgrade: websocket", "Connection: Upgrade")),
        ("a form body", request(ctype="application/x-www-form-urlencoded")),
        ("no Content-Type", request(ctype=None)),
        ("two Content-Types", request("Content-Type: application/json")),
        ("a folded header line", request(" folded")),
        ("a header without a colon", request("Nonsense")),
        ("a space in a header name", request("Bad Name: x")),
        ("a bare LF", request().replace(b"Host: proxy\r\n", b"Host: proxy\n")),
        ("a bare CR", request().replace(b"Host: proxy\r\n", b"Host: pro\rxy\r\n")),
        ("a NUL", request("X-A: a\x00b")),
    ],
)
def test_anything_unusual_is_handed_to_aiohttp(why: str, raw: bytes) -> None:
    assert parse_head(raw, FAST_PATHS) is HANDOFF, why


def test_a_head_that_never_ends_is_handed_off_past_the_limit() -> None:
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD
    assert parse_head(raw, FAST_PATHS) is HANDOFF


def test_only_the_first_request_of_a_pipelined_buffer_is_parsed() -> None:
    raw = request() + request(line="POST /v1/embeddings HTTP/1.1")
    head = parse_head(raw, FAST_PATHS)
    assert isinstance(head, Head) and head.path == "/v1/chat/completions"
    rest = raw[head.total :]
    second = parse_head(rest, FAST_PATHS)
    assert isinstance(second, Head) and second.path == "/v1/embeddings"
