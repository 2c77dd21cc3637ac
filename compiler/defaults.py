"""Top-level settings: defaults, clamps and checks, in the Go original's order.

Everything the runtime reads from the top level of a config lands in
`compiler.plan.Settings` with its default filled in, so a plan never has to
be interpreted against hidden defaults.  Durations use Go's syntax (`15s`,
`1m30s`) because configs are shared with the original; the plan stores them
in Go's canonical form (`time.Duration.String()`), readable by
`parse_duration`.
"""

from __future__ import annotations

import re
from typing import Any

from llama_swap.compiler.collect import (
    Collector,
    get_bool,
    get_int,
    get_list,
    get_map,
    get_str,
    type_name,
)
from llama_swap.compiler.plan import Settings

DEFAULTS = Settings()
MIN_HEALTH_CHECK_TIMEOUT = 15
LOG_TO_STDOUT = ("proxy", "upstream", "both", "none")
MIN_PERFORMANCE_EVERY_NS = 5 * 10**9

_UNITS = {
    "ns": 1,
    "us": 10**3,
    "\u00b5s": 10**3,
    "\u03bcs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_PART = re.compile(r"(\d*)(?:\.(\d*))?([a-zA-Z\u00b5\u03bc]+)?")


def parse_duration(text: str) -> int:
    """A Go duration string (`1m30s`, `500ms`, `0`) in nanoseconds; ValueError if invalid."""
    s = text
    neg = s.startswith("-")
    if s[:1] in "+-":
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'invalid duration "{text}"')
    total = 0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m or m.end() == pos:
            raise ValueError(f'invalid duration "{text}"')
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ValueError(f'invalid duration "{text}"')
        if unit is None:
            raise ValueError(f'missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise ValueError(f'unknown unit "{unit}" in duration "{text}"')
        scale = _UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            value += int(frac) * scale // 10 ** len(frac)
        total += value
        pos = m.end()
    return -total if neg else total


def _fmt_frac(value: int, scale: int) -> str:
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(scale)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_duration(ns: int) -> str:
    """Nanoseconds in Go's canonical form: `5s`, `1m30s`, `1h0m0s`, `1.5ms`."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 10**3:
        return f"{sign}{u}ns"
    if u < 10**6:
        return f"{sign}{_fmt_frac(u, 10**3)}\u00b5s"
    if u < 10**9:
        return f"{sign}{_fmt_frac(u, 10**6)}ms"
    hours, rest = divmod(u, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    secs = _fmt_frac(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return f"{sign}{secs}"


def _performance_every(c: Collector, raw: Any) -> str:
    keys = ("performance", "every")
    if raw is None:
        return DEFAULTS.performanceEvery
    if not isinstance(raw, str):
        c.error(keys, f"expected a duration string such as '15s' or '1m30s', got {type_name(raw)}")
        return DEFAULTS.performanceEvery
    try:
        ns = parse_duration(raw.strip())
    except ValueError as e:
        c.error(keys, str(e))
        return DEFAULTS.performanceEvery
    if ns == 0:
        return DEFAULTS.performanceEvery
    if ns < MIN_PERFORMANCE_EVERY_NS:
        c.error(keys, f"every must be at least 5s, got {format_duration(ns)}")
        return DEFAULTS.performanceEvery
    return format_duration(ns)


def _ignore_paths(c: Collector, upstream: dict[str, Any]) -> tuple[str, ...]:
    keys = ("upstream", "ignorePaths")
    patterns = get_list(c, keys, upstream.get("ignorePaths"))
    if not patterns:
        return DEFAULTS.ignorePaths
    out: list[str] = []
    for i, p in enumerate(patterns):
        if not isinstance(p, str):
            c.error((*keys, i), f"expected a regular expression string, got {type_name(p)}")
            continue
        try:
            re.compile(p)
        except re.error as e:
            c.error((*keys, i), f'invalid regular expression "{p}": {e}')
            continue
        out.append(p)
    return tuple(out)


def _api_keys(c: Collector, raw: Any) -> tuple[str, ...]:
    keys: list[str] = []
    for i, key in enumerate(get_list(c, ("apiKeys",), raw)):
        if key is None or key == "":
            c.error(("apiKeys", i), "empty api key found in apiKeys")
        elif not isinstance(key, str):
            c.error(("apiKeys", i), f"expected a string, got {type_name(key)}")
        elif " " in key:
            c.error(("apiKeys", i), "api key cannot contain spaces")
        else:
            keys.append(key)
    return tuple(keys)


def resolve_settings(c: Collector, doc: dict[str, Any]) -> Settings:
    """Read every top-level setting, apply defaults and clamps, report invalid values."""
    d = DEFAULTS
    hct = get_int(c, ("healthCheckTimeout",), doc.get("healthCheckTimeout"), d.healthCheckTimeout)
    hct = max(hct, MIN_HEALTH_CHECK_TIMEOUT)

    perf = get_map(c, ("performance",), doc.get("performance"))

    start_port = get_int(c, ("startPort",), doc.get("startPort"), d.startPort)
    if start_port < 1:
        c.error(("startPort",), f"startPort must be >= 1, got {start_port}")
        start_port = d.startPort

    global_ttl = get_int(c, ("globalTTL",), doc.get("globalTTL"), d.globalTTL)
    if global_ttl < 0:
        c.error(("globalTTL",), f"globalTTL must be >= 0, got {global_ttl}")
        global_ttl = 0

    unload_timeout = get_int(c, ("unloadTimeout",), doc.get("unloadTimeout"), 0)
    if unload_timeout < 0:
        c.error(("unloadTimeout",), "unloadTimeout must be >= 0")
    unload_timeout = unload_timeout if unload_timeout > 0 else d.unloadTimeout

    upstream = get_map(c, ("upstream",), doc.get("upstream"))
    ignore_paths = _ignore_paths(c, upstream)

    log_to_stdout = get_str(c, ("logToStdout",), doc.get("logToStdout"), d.logToStdout)
    if log_to_stdout not in LOG_TO_STDOUT:
        c.error(("logToStdout",), "logToStdout must be one of: proxy, upstream, both, none")
        log_to_stdout = d.logToStdout

    metrics = get_int(
        c, ("metricsMaxInMemory",), doc.get("metricsMaxInMemory"), d.metricsMaxInMemory
    )
    capture = get_int(c, ("captureBuffer",), doc.get("captureBuffer"), d.captureBuffer)
    max_body = get_int(c, ("maxRequestBody",), doc.get("maxRequestBody"), d.maxRequestBody)
    if max_body < 0:
        c.error(("maxRequestBody",), f"maxRequestBody must be >= 0 (0 = no limit), got {max_body}")
        max_body = d.maxRequestBody

    return Settings(
        healthCheckTimeout=hct,
        logLevel=get_str(c, ("logLevel",), doc.get("logLevel"), d.logLevel),
        logTimeFormat=get_str(c, ("logTimeFormat",), doc.get("logTimeFormat"), d.logTimeFormat),
        logToStdout=log_to_stdout,
        metricsMaxInMemory=metrics if metrics > 0 else d.metricsMaxInMemory,
        captureBuffer=max(capture, 0),
        maxRequestBody=max_body,
        performanceDisabled=get_bool(c, ("performance", "disabled"), perf.get("disabled"), False),
        performanceEvery=_performance_every(c, perf.get("every")),
        globalTTL=global_ttl,
        startPort=start_port,
        sendLoadingState=get_bool(c, ("sendLoadingState",), doc.get("sendLoadingState"), False),
        includeAliasesInList=get_bool(
            c, ("includeAliasesInList",), doc.get("includeAliasesInList"), False
        ),
        apiKeys=_api_keys(c, doc.get("apiKeys")),
        ignorePaths=ignore_paths,
        unloadTimeout=unload_timeout,
    )
