"""`llama-swap` arguments that are refused before anything is compiled or started.

The listen address is checked up front: a typo must be a usage error with a readable
message, never a socket bound somewhere else (the OS truncates a port above 65535 to
16 bits, so `:99999` would silently listen on 34463)."""

from __future__ import annotations

import pytest

from llama_swap.runtime.cli import EXIT_USAGE, main
from llama_swap.runtime.serve import parse_listen


@pytest.mark.parametrize(
    ("listen", "tls", "expected"),
    [
        ("", False, (None, 8080)),
        ("", True, (None, 8443)),
        (":8080", False, (None, 8080)),
        ("127.0.0.1:0", False, ("127.0.0.1", 0)),
        ("localhost:9000", False, ("localhost", 9000)),
        ("[::1]:8080", False, ("::1", 8080)),
        ("[::]:65535", False, ("::", 65535)),
    ],
)
def test_listen_forms_that_are_accepted(
    listen: str, tls: bool, expected: tuple[str | None, int]
) -> None:
    assert parse_listen(listen, tls) == expected


@pytest.mark.parametrize(
    ("listen", "says"),
    [
        ("127.0.0.1:99999", "port must be a number 0-65535"),
        (":65536", "port must be a number 0-65535"),
        (":abc", "port must be a number 0-65535"),
        (":-1", "port must be a number 0-65535"),
        ("[::1]", "expected host:port"),
        ("8080", "expected host:port"),
        ("::1]:80", "expected host:port"),
    ],
)
def test_bad_listen_addresses_are_refused_with_a_readable_message(listen: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_listen(listen, False)


def test_the_cli_refuses_a_bad_listen_address_as_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the config does not exist: the usage error must come first, before any compile
    assert main(["--config", "/nonexistent.yaml", "--listen", "127.0.0.1:99999"]) == EXIT_USAGE
    assert "port must be a number 0-65535" in capsys.readouterr().err
