"""What a profile pin or a selector leaves in the activity log and sends upstream, through
the real proxy with fake upstreams, on both front doors.

- An entry's `model` is always the concrete model that served the request; a request
  routed through a selector also gets `metadata.selector` naming it (beside the fifo
  scheduler's note), whether the client named the selector or a pin that targets it.  A
  pin alone leaves no note (the Go original's
  TestServer_SelectorMiddleware_RewritesBeforeFiltersAndRecordsActivity and _ProfileRunsFirst).
- A GET naming its model in `?model=` (llama-server's `/props`) reaches the upstream
  with the concrete name there, the rest of the query kept, keys in sorted order (the
  Go original re-encodes the query when it rewrites the model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.test_profiles_selectors import (
    DOORS,
    fast_path_served,
    served_by,
    set_profile,
    the_plan,
)


async def activity(s: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    """The stored history, oldest first, as (model, metadata) pairs."""
    async with s.get(f"{url}/api/metrics/activity?sort=id&order=asc") as resp:
        assert resp.status == 200
        return [{"model": e["model"], "metadata": e.get("metadata")}
                for e in (await resp.json())["data"]]


@DOORS
async def test_the_selector_a_request_went_through_is_in_its_activity_entry(
    proxy: Any, record_file: Path, door: tuple[str, ...]
) -> None:
    p = proxy(the_plan(record_file), *door)
    # a connection per request: one the fast path handed to aiohttp stays there
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        assert await served_by(s, p.url, "b") == ("b", "b")  # the model itself
        assert await served_by(s, p.url, "pinned") == ("b", "b")  # a selector
        assert (await set_profile(s, p.url, "coding"))[0] == 200
        assert await served_by(s, p.url, "llm") == ("b", "b")  # a pin to a model
        assert await served_by(s, p.url, "sel") == ("b", "b")  # a pin to a selector
        entries = await activity(s, p.url)
        fast = await fast_path_served(s, p.url)
    priority = {"fifo_priority": "0"}
    assert entries == [
        {"model": "b", "metadata": priority},
        {"model": "b", "metadata": {**priority, "selector": "pinned"}},
        {"model": "b", "metadata": priority},
        {"model": "b", "metadata": {**priority, "selector": "pinned"}},
    ]
    assert fast == (4 if door == () else 0)  # with the fast path on, it served them all
