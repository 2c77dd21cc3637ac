"""Errors that become HTTP responses.

`RouteError` is a plain frozen value (not an exception) so the pure scheduler
can hand it to the Effects without raising; the I/O edges wrap it in
`RouteFailure` when they need to raise.  Each carries the HTTP status it is
rendered with (see docs/differences.md for where we differ from the Go
original's blanket 500).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouteError:
    status: int
    message: str
    retry_after: int | None = None


class RouteFailure(Exception):
    """Raised at the I/O edges (process start, proxying) carrying a RouteError."""

    def __init__(self, error: RouteError):
        super().__init__(error.message)
        self.error = error


def unknown_model(name: str) -> RouteError:
    return RouteError(404, f"no local server found for requested model: {name}")


def too_many_requests() -> RouteError:
    return RouteError(429, "Too many requests", retry_after=1)


def start_failed(model: str, detail: str) -> RouteError:
    """The upstream could not be spawned or exited while starting: 502."""
    return RouteError(502, f"[{model}] start failed: {detail}")


def health_timeout(model: str, seconds: float) -> RouteError:
    """The upstream never became healthy in time: 503."""
    return RouteError(503, f"[{model}] health check timed out after {seconds:g}s")


def model_unloaded(model: str) -> RouteError:
    return RouteError(503, f"[{model}] model unloaded while the request waited")


def shutting_down() -> RouteError:
    return RouteError(503, "llama-swap is shutting down")


def request_cancelled() -> RouteError:
    """Cancelled from the in-flight list before any answer went out: 499 (nginx's "client
    closed request"), a 4xx so that clients do not send it again on their own."""
    return RouteError(499, "request cancelled")
