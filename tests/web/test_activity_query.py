"""The activity API's query string and statistics (runtime/http/observe/activity_query.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import MultiDict

from llama_swap.runtime.http.observe.activity_query import (
    ActivityQuery,
    QueryError,
    histogram,
    parse_activity_query,
    percentile,
    total_pages,
)


def parse(*pairs: tuple[str, str]) -> ActivityQuery:
    return parse_activity_query(MultiDict(pairs))


def test_defaults_are_the_newest_25() -> None:
    assert parse() == ActivityQuery(limit=25, page=1, sort="id", descending=True)


def test_models_repeat_are_trimmed_and_blanks_ignored() -> None:
    q = parse(("model", " a "), ("model", ""), ("model", "b"))
    assert q.models == ("a", "b")


def test_every_parameter_is_read() -> None:
    q = parse(("start", "2026-01-02T03:04:05Z"), ("end", "2026-01-02T05:00:00+01:00"),
              ("min_id", "3"), ("max_id", "9"), ("limit", "10"), ("page", "2"),
              ("sort", "gen_speed"), ("order", "ASC"))
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    end = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC).timestamp()
    assert (q.start, q.end) == (start, end)
    assert (q.min_id, q.max_id, q.limit, q.page, q.offset) == (3, 9, 10, 2, 10)
    assert (q.sort, q.descending) == ("gen_speed", False)


def test_times_are_cut_to_whole_seconds() -> None:
    q = parse(("start", "2026-01-02T03:04:05.900Z"))
    assert q.start == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ((("start", "yesterday"),), "invalid 'start' timestamp, use RFC3339 format"),
        ((("end", "2026-01-02"),), "invalid 'end' timestamp, use RFC3339 format"),
        ((("end", "2026-01-02T00:00:00"),), "invalid 'end' timestamp, use RFC3339 format"),
        ((("start", "2026-01-02T00:00:01Z"), ("end", "2026-01-02T00:00:00Z")),
         "start must be before end"),
        ((("min_id", "0"),), "min_id must be >= 1"),
        ((("max_id", "x"),), "max_id must be >= 1"),
        ((("min_id", "5"), ("max_id", "4")), "min_id must be <= max_id"),
        ((("limit", "ten"),), "invalid limit"),
        ((("limit", "0"),), "limit must be between 1 and 999"),
        ((("limit", "1000"),), "limit must be between 1 and 999"),
        ((("page", "0"),), "page must be >= 1"),
        ((("page", "1.5"),), "page must be >= 1"),
        ((("sort", "tokens"),), "invalid sort column"),
        ((("order", "up"),), "order must be asc or desc"),
    ],
)
def test_refused_parameters_say_why(pairs: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(QueryError, match=f"^{message}$"):
        parse(*pairs)


def test_total_pages() -> None:
    assert [total_pages(t, 25) for t in (0, 1, 25, 26)] == [0, 1, 1, 2]


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([7.0], 99) == 7.0


def test_histogram_of_nothing_is_null_and_of_equal_values_one_bin() -> None:
    assert histogram([]) is None
    h = histogram([3.0, 3.0, 3.0])
    assert h is not None and (h["bins"], h["binSize"], h["min"], h["max"]) == ([3], 0, 3.0, 3.0)


def test_histogram_bins_follow_sturges_clamped_to_5_to_20() -> None:
    h = histogram([float(v) for v in range(10)])  # ceil(log2 10) + 1 = 5
    assert h is not None and h["bins"] == [2, 2, 2, 2, 2] and h["binSize"] == 9 / 5
    big = histogram([float(v) for v in range(100_000)])
    assert big is not None and len(big["bins"]) == 18 and sum(big["bins"]) == 100_000
    assert histogram([1.0, 2.0]) is not None and len(histogram([1.0, 2.0])["bins"]) == 5  # type: ignore[index]
