"""aiohttp's and asyncio's own log records go to the proxy log, at `logLevel`, one line
each: a malformed request must not print a traceback on the terminal whatever
`logToStdout` says (it used to, through Python's last-resort handler)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.hardening import SplitProxy, closed_by_peer, connect, proxy_log_text, split_proxy
from tests.e2e.surface_fixtures import surface_plan

__all__ = ["split_proxy"]

MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",  # a space in a header name
    b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",  # a control byte in the request target
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/9\r\n\r\n",  # a bad second request line
]


def send_malformed(p: SplitProxy) -> None:
    for raw in MALFORMED:
        with connect(p) as sock:
            sock.sendall(raw)
            assert closed_by_peer(sock, 5) is not None


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "aiohttp-only"])
def test_malformed_requests_log_one_line_and_no_traceback(
    split_proxy: Callable[..., SplitProxy], fast: bool
) -> None:
    plan = surface_plan([], logLevel="info", logToStdout="none")
    p = split_proxy(plan, *(() if fast else ("--no-fast-path",)))
    send_malformed(p)
    time.sleep(0.3)
    stderr = p.stderr_text()
    assert "Traceback" not in stderr and "Error handling request" not in stderr, stderr
    assert p.stdout == []  # logToStdout none
    lines = [line for line in proxy_log_text(p).splitlines() if "Error handling request" in line]
    assert len(lines) == len(MALFORMED), lines
    assert all("Bad" in line or "Invalid" in line or "400" in line for line in lines), lines


def test_debug_level_keeps_the_traceback_in_the_proxy_log(
    split_proxy: Callable[..., SplitProxy],
) -> None:
    p = split_proxy(surface_plan([], logLevel="debug", logToStdout="none"))
    send_malformed(p)
    time.sleep(0.3)
    assert "Traceback" not in p.stderr_text()
    assert "Traceback (most recent call last)" in proxy_log_text(p)
