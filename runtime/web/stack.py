"""The middleware stack every server runs, outermost first (reference 5.1).

access log -> CORS preflight -> API-key auth -> RouteFailure rendering.  The
access log sits outside CORS so preflights are logged too; CORS sits outside
auth so OPTIONS never needs a key.  Everything reads the plan per request
through `state.plan`, so a hot reload changes keys and log settings at once.
"""

from __future__ import annotations

from typing import Any, Protocol

from compiler.plan import Plan
from runtime.logs import LogBuffer
from runtime.web.access_log import ProxyLog, access_log_middleware
from runtime.web.auth import auth_middleware
from runtime.web.cors import cors_middleware
from runtime.web.errors import route_failure_middleware


class HasPlanAndLog(Protocol):
    @property
    def plan(self) -> Plan: ...

    proxy_log: LogBuffer


def default_middlewares(state: HasPlanAndLog) -> list[Any]:
    cache: dict[tuple[str, str], ProxyLog] = {}

    def proxy_log() -> ProxyLog:
        s = state.plan.settings
        key = (s.logLevel, s.logTimeFormat)
        log = cache.get(key)
        if log is None or log.sink is not state.proxy_log:
            cache.clear()
            log = cache[key] = ProxyLog(state.proxy_log, s.logLevel, s.logTimeFormat)
        return log

    return [
        access_log_middleware(proxy_log),
        cors_middleware,
        auth_middleware(lambda: state.plan.settings.apiKeys),
        route_failure_middleware,
    ]
