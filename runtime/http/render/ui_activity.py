"""The Activity view's data: a filtered page of the activity log, a capture made
readable, and a small tokens/s-over-time chart drawn as inline SVG.

Why here and not in the template: the page must be complete without JavaScript, so
filtering, paging, capture decoding and the chart are computed server-side from plain
values.  The page reads the Go original's paginated activity shape
(`{"data": [...], "page", "limit", "total", "total_pages"}`, entries as
`/api/metrics/activity` writes them); `paginate` builds that shape from the in-memory
entries, so a store that answers it directly can be put in its place.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

DEFAULT_LIMIT = 25
MAX_LIMIT = 200
# status filter value -> (label, test on the status code)
STATUS_FILTERS: dict[str, str] = {
    "": "any status", "2xx": "2xx", "4xx": "4xx", "5xx": "5xx", "error": "not 2xx",
}
CHART_POINTS = 200
CHART_W, CHART_H, CHART_PAD = 600, 120, 8
TEXT_LIMIT = 256 * 1024  # characters of a captured body shown


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    """What the Activity page was asked for (query parameters, validated)."""

    model: str = ""
    status: str = ""
    page: int = 1
    limit: int = DEFAULT_LIMIT

    def link(self, **changes: Any) -> str:
        """The page's URL with these parameters changed (defaults left out)."""
        values = {"model": self.model, "status": self.status, "page": self.page,
                  "limit": self.limit, **changes}
        parts = []
        for key in ("model", "status", "page", "limit"):
            value = values[key]
            default = {"page": 1, "limit": DEFAULT_LIMIT}.get(key, "")
            if value != default:
                parts.append(f"{key}={quote(str(value), safe='')}")
        return "/ui/activity" + ("?" + "&".join(parts) if parts else "")


def _int(raw: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(raw) if raw else default
    except ValueError:
        return default
    return min(max(value, low), high)


def parse_query(query: Mapping[str, str]) -> ActivityQuery:
    status = query.get("status", "")
    return ActivityQuery(
        model=query.get("model", "").strip(),
        status=status if status in STATUS_FILTERS else "",
        page=_int(query.get("page"), 1, 1, 1 << 30),
        limit=_int(query.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


def status_matches(code: Any, wanted: str) -> bool:
    if not wanted:
        return True
    if not isinstance(code, int):
        return wanted == "error"
    if wanted == "error":
        return not 200 <= code < 300
    return str(code)[:1] == wanted[:1]


def matching(entries: Sequence[Mapping[str, Any]], q: ActivityQuery) -> list[Mapping[str, Any]]:
    """Entries that pass the model and status filters, newest first."""
    return [
        e for e in sorted(entries, key=lambda e: e.get("id", 0), reverse=True)
        if (not q.model or e.get("model") == q.model)
        and status_matches(e.get("resp_status_code"), q.status)
    ]


def paginate(entries: Sequence[Mapping[str, Any]], q: ActivityQuery) -> dict[str, Any]:
    """The Go original's `/api/metrics/activity` page shape, from in-memory entries."""
    found = matching(entries, q)
    start = (q.page - 1) * q.limit
    return {
        "data": [dict(e) for e in found[start:start + q.limit]],
        "page": q.page,
        "limit": q.limit,
        "total": len(found),
        "total_pages": math.ceil(len(found) / q.limit),
    }


def as_page(doc: Any, q: ActivityQuery) -> dict[str, Any]:
    """Either activity shape made the paginated one: a plain list (the older
    `/api/metrics`) is filtered and paged here; a page document is taken as it is."""
    if isinstance(doc, list):
        return paginate(doc, q)
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return doc
    return paginate([], q)


def _number(value: Any, digits: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return "–"
    return f"{value:.{digits}f}" if digits else str(int(value))


def _when(stamp: Any) -> str:
    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp)
    return when.strftime("%H:%M:%S")


def row(e: Mapping[str, Any]) -> dict[str, Any]:
    """One table row, numbers formatted (unknown figures, -1, show as a dash)."""
    tokens = e.get("tokens") or {}
    code = e.get("resp_status_code")
    return {
        "id": e.get("id"),
        "time": _when(e.get("timestamp")),
        "timestamp": e.get("timestamp"),
        "model": e.get("model", ""),
        "path": e.get("req_path", ""),
        "status": code if code is not None else "",
        "ok": isinstance(code, int) and 200 <= code < 300,
        "input": _number(tokens.get("input_tokens")),
        "output": _number(tokens.get("output_tokens")),
        "cached": _number(tokens.get("cache_tokens")),
        "prompt_speed": _number(tokens.get("prompt_per_second"), 1),
        "gen_speed": _number(tokens.get("tokens_per_second"), 1),
        "duration": _number(e.get("duration_ms")),
        "error": e.get("error_msg") or "",
        "has_capture": bool(e.get("has_capture")),
    }


def speed_chart(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Generation tokens/s of the most recent requests that report it, oldest first,
    as an SVG polyline (`points`) in a CHART_W x CHART_H box; None without data."""
    speeds: list[tuple[int, float]] = []
    for e in sorted(entries, key=lambda e: e.get("id", 0)):
        tps = (e.get("tokens") or {}).get("tokens_per_second")
        if isinstance(tps, int | float) and not isinstance(tps, bool) and tps > 0:
            speeds.append((int(e.get("id", 0)), float(tps)))
    speeds = speeds[-CHART_POINTS:]
    if not speeds:
        return None
    top = max(s for _, s in speeds) or 1.0
    n = len(speeds)
    w, h, pad = CHART_W, CHART_H, CHART_PAD
    points = []
    for i, (_, tps) in enumerate(speeds):
        x = pad + (w - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)
        y = h - pad - (h - 2 * pad) * (tps / top)
        points.append(f"{x:.1f},{y:.1f}")
    values = sorted(s for _, s in speeds)
    return {
        "points": " ".join(points), "width": w, "height": h, "count": n,
        "max": f"{top:.1f}", "last": f"{speeds[-1][1]:.1f}",
        "median": f"{values[n // 2]:.1f}",
        "dots": [{"x": p.split(",")[0], "y": p.split(",")[1], "id": speeds[i][0],
                  "tps": f"{speeds[i][1]:.1f}"} for i, p in enumerate(points)][-50:],
    }


def _decode(b64: Any) -> tuple[str, str]:
    """(text shown, kind) of a base64 body: pretty JSON, text, or a note for binary."""
    if not isinstance(b64, str) or not b64:
        return "", "empty"
    try:
        raw = base64.b64decode(b64)
    except (binascii.Error, ValueError):
        return "(undecodable body)", "binary"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"({len(raw)} bytes of binary data)", "binary"
    try:
        doc = json.loads(text)
    except ValueError:
        kind = "text"
    else:
        text, kind = json.dumps(doc, indent=2, ensure_ascii=False), "json"
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT] + f"\n… ({len(text) - TEXT_LIMIT} more characters)"
    return text, kind


def capture_view(rendered: Mapping[str, Any]) -> dict[str, Any]:
    """A capture as `GET /api/captures/{id}` renders it (headers already redacted),
    with its bodies decoded for reading."""
    req_body, req_kind = _decode(rendered.get("req_body"))
    resp_body, resp_kind = _decode(rendered.get("resp_body"))

    def headers(h: Any) -> list[tuple[str, str]]:
        return sorted((str(k), str(v)) for k, v in h.items()) if isinstance(h, dict) else []

    return {
        "id": rendered.get("id"), "path": rendered.get("req_path", ""),
        "req_headers": headers(rendered.get("req_headers")),
        "resp_headers": headers(rendered.get("resp_headers")),
        "req_body": req_body, "req_kind": req_kind,
        "resp_body": resp_body, "resp_kind": resp_kind,
    }
