"""The multipart scanner finds form fields whatever the chunking, skipping file bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_swap.runtime.http.request.multipart_scan import (
    MultipartError,
    MultipartScanner,
    boundary_of,
)

B = "XyZb0undary"


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, value, filename in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{B}\r\nContent-Disposition: {disp}\r\n".encode()
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{B}--\r\n".encode()


FILE = (b"--" + B.encode() + b"\r\n" + b"\r\n--" + B[:-1].encode()) * 50 + bytes(range(256)) * 20


def feed_in(body: bytes, cuts: list[int]) -> MultipartScanner:
    scanner = MultipartScanner(B)
    pos = 0
    for cut in sorted(set(c % (len(body) + 1) for c in cuts)) + [len(body)]:
        scanner.feed(body[pos:cut])
        pos = cut
    return scanner


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=12))
def test_fields_found_under_any_chunking(cuts: list[int]) -> None:
    body = form(("file", FILE, "a.wav"), ("model", b"whisper/large", None), ("stream", b"true", None))
    scanner = feed_in(body, cuts)
    model = scanner.fields["model"]
    assert model.value == b"whisper/large"
    assert body[model.start : model.end] == b"whisper/large"
    assert scanner.fields["stream"].value == b"true"
    assert scanner.finished


def test_file_fields_named_model_are_not_fields() -> None:
    scanner = feed_in(form(("model", b"data", "model.bin")), [])
    assert "model" not in scanner.fields and scanner.finished


def test_preamble_and_empty_value() -> None:
    body = b"preamble text\r\n" + form(("model", b"", None))
    assert feed_in(body, [3, 20]).fields["model"].value == b""


def test_memory_stays_small_while_skipping_a_file() -> None:
    scanner = MultipartScanner(B)
    scanner.feed(f"--{B}\r\nContent-Disposition: form-data; name=f; filename=x\r\n\r\n".encode())
    for _ in range(100):
        scanner.feed(b"\0" * 65536)
        assert len(scanner._buf) < 100


def test_errors() -> None:
    with pytest.raises(MultipartError):
        MultipartScanner("")
    scanner = MultipartScanner(B)
    with pytest.raises(MultipartError):
        scanner.feed(f"--{B}\r\n".encode() + b"X" * (17 * 1024))


def test_boundary_of() -> None:
    assert boundary_of('multipart/form-data; boundary="a b"') == "a b"
    assert boundary_of("multipart/form-data; charset=x; Boundary=abc") == "abc"
    assert boundary_of("multipart/form-data") == ""
