"""Proxy log lines and the access log.

`ProxyLog` formats `[<time> ][LEVEL] message` lines (the time only when
`logTimeFormat` names one of the Go layouts, mapped here to Python formatting)
into a LogBuffer, dropping lines below `logLevel`.  `log_access` writes one INFO line
per request (both front doors call it with plain values):
`Request <ip> "<METHOD> <path> <proto>" <status> <bytes> "<UA>" <duration>`,
client IP from X-Forwarded-For (first entry), X-Real-IP, else the peer.  It
never writes headers, so API keys cannot reach the log.  (The
logToStdout wiring of the buffers lives in runtime/serve.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from llama_swap.compiler.plan import Plan
from llama_swap.runtime.core.headers import HeaderLookup

LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
INFO = LEVELS["info"]
SKIP_PREFIXES = ("/wol-health", "/api/performance", "/metrics")
UI_REFRESH_PATHS = ("/api/queue",)  # polled by the UI's Queue and Models views


class Writable(Protocol):
    def write(self, data: str) -> None: ...


def _rfc3339(dt: datetime, digits: int) -> str:
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        frac = f"{dt.microsecond:06d}".rstrip("0")
        base += f".{frac}" if frac else ""
    offset = dt.strftime("%z")
    zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return base + zone


def _fmt(pattern: str) -> Callable[[datetime], str]:
    return lambda dt: dt.strftime(pattern)


def _stamp(frac_digits: int) -> Callable[[datetime], str]:
    def render(dt: datetime) -> str:
        frac = f"{dt.microsecond:06d}000"[:frac_digits]
        return dt.strftime("%b %e %H:%M:%S") + "." + frac

    return render


TIME_FORMATS: dict[str, Callable[[datetime], str]] = {
    "ansic": _fmt("%a %b %e %H:%M:%S %Y"),
    "unixdate": _fmt("%a %b %e %H:%M:%S %Z %Y"),
    "rubydate": _fmt("%a %b %d %H:%M:%S %z %Y"),
    "rfc822": _fmt("%d %b %y %H:%M %Z"),
    "rfc822z": _fmt("%d %b %y %H:%M %z"),
    "rfc850": _fmt("%A, %d-%b-%y %H:%M:%S %Z"),
    "rfc1123": _fmt("%a, %d %b %Y %H:%M:%S %Z"),
    "rfc1123z": _fmt("%a, %d %b %Y %H:%M:%S %z"),
    "rfc3339": lambda dt: _rfc3339(dt, 0),
    "rfc3339nano": lambda dt: _rfc3339(dt, 9),
    "kitchen": lambda dt: dt.strftime("%I:%M%p").lstrip("0"),
    "stamp": _fmt("%b %e %H:%M:%S"),
    "stampmilli": _stamp(3),
    "stampmicro": _stamp(6),
    "stampnano": _stamp(9),
}


def go_duration(seconds: float) -> str:
    """A duration written like Go's time.Duration.String (e.g. 1.5ms, 2.25s, 850µs)."""
    ns = round(seconds * 1e9)
    if ns < 1000:
        return f"{ns}ns"
    for unit, scale in (("µs", 1e3), ("ms", 1e6)):
        if ns < scale * 1000:
            return f"{ns / scale:.3f}".rstrip("0").rstrip(".") + unit
    minutes, secs = divmod(ns / 1e9, 60)
    text = f"{secs:.6f}".rstrip("0").rstrip(".") + "s"
    if minutes:
        hours, whole_minutes = divmod(int(minutes), 60)
        text = (f"{hours}h" if hours else "") + f"{whole_minutes}m" + text
    return text


class ProxyLog:
    """Leveled, optionally timestamped lines into a log buffer (the proxy's own log)."""

    def __init__(
        self,
        sink: Writable,
        level: str = "info",
        time_format: str = "",
        *,
        prefix: str = "",
        now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    ):
        self.sink = sink
        self.level = LEVELS.get(level.lower(), LEVELS["info"])
        self._time = TIME_FORMATS.get(time_format.lower()) if time_format else None
        self._prefix = f"[{prefix}] " if prefix else ""
        self._now = now

    def log(self, level: str, message: str) -> None:
        if LEVELS[level] < self.level:
            return
        stamp = f"{self._time(self._now())} " if self._time else ""
        self.sink.write(f"{stamp}{self._prefix}[{level.upper()}] {message}\n")

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def warn(self, message: str) -> None:
        self.log("warn", message)

    def error(self, message: str) -> None:
        self.log("error", message)


class HasPlanAndLog(Protocol):
    @property
    def plan(self) -> Plan: ...

    @property
    def proxy_log(self) -> Writable: ...


def proxy_log_of(state: HasPlanAndLog) -> Callable[[], ProxyLog]:
    """A getter for the ProxyLog that `state`'s current plan asks for (logLevel,
    logTimeFormat), rebuilt only when those settings change (hot reload)."""
    cache: dict[tuple[str, str], ProxyLog] = {}

    def current() -> ProxyLog:
        s = state.plan.settings
        key = (s.logLevel, s.logTimeFormat)
        log = cache.get(key)
        if log is None or log.sink is not state.proxy_log:
            cache.clear()
            log = cache[key] = ProxyLog(state.proxy_log, s.logLevel, s.logTimeFormat)
        return log

    return current


def client_ip(headers: HeaderLookup, remote: str | None) -> str:
    """X-Forwarded-For's first entry, else X-Real-IP, else the peer's address."""
    forwarded = headers.get("X-Forwarded-For", "")
    if forwarded:
        return forwarded.split(",")[0].strip()
    real = headers.get("X-Real-IP", "")
    if real:
        return real.strip()
    return remote or ""


def access_line(
    method: str, path: str, version: tuple[int, int], headers: HeaderLookup,
    remote: str | None, status: int, size: int, seconds: float,
) -> str:
    ua = headers.get("User-Agent", "")
    return (
        f'Request {client_ip(headers, remote)} "{method} {path} HTTP/{version[0]}.{version[1]}" '
        f'{status} {size} "{ua}" {go_duration(seconds)}'
    )


def is_ui_refresh(method: str, path: str, query: str) -> bool:
    """A request the UI's page script makes on its own to stay current (a page fragment,
    `?partial=1`, or a polled JSON view): logged at debug level, so an open browser tab
    does not fill the proxy log."""
    if method != "GET":
        return False
    return path in UI_REFRESH_PATHS or (path.startswith("/ui/") and "partial=" in query)


def log_access(
    log: ProxyLog, method: str, path: str, version: tuple[int, int], headers: HeaderLookup,
    remote: str | None, status: int, size: int, started: float, *, quiet: bool = False,
) -> None:
    """Write the access line for a finished request (`started`: its perf_counter), unless
    `logLevel` is above INFO or `path` is one the Go original never logs; `quiet`
    requests (the UI's refreshes) are written at debug level."""
    if log.level <= (LEVELS["debug"] if quiet else INFO) and not path.startswith(SKIP_PREFIXES):
        line = access_line(
            method, path, version, headers, remote, status, size, time.perf_counter() - started
        )
        log.log("debug" if quiet else "info", line)
