"""What `GET /api/metrics/activity` and `GET /api/metrics/stats` ask for and answer, as values.

Why apart from the database: the query-string rules (which parameters, their bounds,
the 400 messages) and the statistics (speed histograms, percentiles, page counts) are
pure and specified on their own; `activity_db` only turns an `ActivityQuery` into SQL.
The parameters and messages follow the Go original's activity API so its clients work
unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEFAULT_LIMIT = 25
MAX_LIMIT = 999

# sort key in the query string -> column of the `activity` table
SORT_COLUMNS: dict[str, str] = {
    "id": "id",
    "time": "ts_created",
    "model": "model_id",
    "req_path": "req_path",
    "resp_status_code": "resp_status_code",
    "resp_content_type": "resp_content_type",
    "cached": "cache_tokens",
    "prompt": "input_tokens",
    "generated": "output_tokens",
    "drafted": "draft_tokens",
    "prompt_speed": "prompt_per_second",
    "gen_speed": "tokens_per_second",
    "duration": "duration_ms",
}


class QueryError(ValueError):
    """A parameter the API refuses; the message is the 400 answer's."""


@dataclass(frozen=True, slots=True)
class ActivityQuery:
    """One page of the activity history: filters AND together, `models` OR together.
    `start`/`end` are unix seconds, inclusive at second precision; 0 ids mean unbounded."""

    models: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    min_id: int = 0
    max_id: int = 0
    limit: int = DEFAULT_LIMIT
    page: int = 1
    sort: str = "id"
    descending: bool = True

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def _atoi(raw: str) -> int | None:
    """What Go's strconv.Atoi accepts: an optional sign and decimal digits."""
    body = raw[1:] if raw[:1] in "+-" else raw
    if not body or not body.isascii() or not body.isdigit():
        return None
    return int(raw)


def _time(params: Any, name: str) -> float | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None or "T" not in raw.upper():
        raise QueryError(f"invalid '{name}' timestamp, use RFC3339 format")
    return float(math.floor(value.timestamp()))


def _id(params: Any, name: str) -> int:
    raw = (params.get(name) or "").strip()
    if not raw:
        return 0
    value = _atoi(raw)
    if value is None or value < 1:
        raise QueryError(f"{name} must be >= 1")
    return value


def parse_activity_query(params: Any) -> ActivityQuery:
    """The query of a `GET /api/metrics/activity` (`params`: a multidict with `get` and
    `getall`); QueryError with the 400 message when a parameter is refused."""
    models = tuple(m.strip() for m in params.getall("model", ()) if m.strip())
    start, end = _time(params, "start"), _time(params, "end")
    if start is not None and end is not None and start > end:
        raise QueryError("start must be before end")
    min_id, max_id = _id(params, "min_id"), _id(params, "max_id")
    if min_id and max_id and min_id > max_id:
        raise QueryError("min_id must be <= max_id")
    limit = DEFAULT_LIMIT
    raw = (params.get("limit") or "").strip()
    if raw:
        value = _atoi(raw)
        if value is None:
            raise QueryError("invalid limit")
        if not 1 <= value <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        limit = value
    page = 1
    raw = (params.get("page") or "").strip()
    if raw:
        value = _atoi(raw)
        if value is None or value < 1:
            raise QueryError("page must be >= 1")
        page = value
    sort = (params.get("sort") or "").strip() or "id"
    if sort not in SORT_COLUMNS:
        raise QueryError("invalid sort column")
    order = (params.get("order") or "").strip().lower() or "desc"
    if order not in ("asc", "desc"):
        raise QueryError("order must be asc or desc")
    return ActivityQuery(models, start, end, min_id, max_id, limit, page, sort, order == "desc")


def total_pages(total: int, limit: int) -> int:
    return 0 if total <= 0 or limit <= 0 else math.ceil(total / limit)


def percentile(ordered: Sequence[float], p: float) -> float:
    """Linear interpolation at rank p/100 * (n - 1) of sorted values."""
    if not ordered:
        return 0.0
    rank = p / 100 * (len(ordered) - 1)
    lower, upper = math.floor(rank), math.ceil(rank)
    return ordered[lower] + (rank - lower) * (ordered[upper] - ordered[lower])


MIN_BINS, MAX_BINS = 5, 20


def histogram(values: Sequence[float]) -> dict[str, Any] | None:
    """The speed histogram of the stats answer; None without values.  All values equal:
    one bin.  Else Sturges' bin count, clamped to 5..20, over [min, max]."""
    if not values:
        return None
    ordered = sorted(values)
    low, high = ordered[0], ordered[-1]
    out: dict[str, Any] = {
        "bins": [len(ordered)], "min": low, "max": high, "binSize": 0,
        "p50": percentile(ordered, 50), "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
    }
    if low == high:
        return out
    count = min(MAX_BINS, max(MIN_BINS, math.ceil(math.log2(len(ordered))) + 1))
    size = (high - low) / count
    bins = [0] * count
    for value in ordered:
        bins[min(int((value - low) // size), count - 1)] += 1
    out["bins"], out["binSize"] = bins, size
    return out
