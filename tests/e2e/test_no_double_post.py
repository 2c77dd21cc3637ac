"""A request the upstream may have run is never sent to it twice, on either front door.

An upstream that read a whole POST and then closed the connection without answering (a
model killed mid-request, a crash in the middle of a generation or a tool call) may have
done the work: the proxy answers 502 and does not send the request again.  The retry
stays for what it is for: a pooled connection the upstream closed while it sat idle (a
keep-alive timeout) is replaced without the client noticing, and a connection the upstream
closes a moment after a streamed answer (as llama-server does) never carries another request.
`counting_upstream.py` writes down every request it read.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import fake_model, make_plan
from tests.e2e.counting_upstream import IDLE_CLOSE
from tests.e2e.test_fastpath import one, raw_request

COUNTING = str(Path(__file__).with_name("counting_upstream.py"))
DOORS = pytest.mark.parametrize("door", [(), ("--no-fast-path",)], ids=["fast", "aiohttp"])


def counted(proxy: Any, record: Path, count_file: Path, door: tuple[str, ...]) -> Any:
    model = fake_model("c", record, cmd=(sys.executable, COUNTING, "${PORT}", str(count_file)))
    return proxy(make_plan([model]), *door)


def chat(*headers: str) -> bytes:
    return raw_request("/v1/chat/completions", {"model": "c", "messages": []}, *headers, key=False)


def seen(count_file: Path, tag: str) -> int:
    return sum(1 for line in count_file.read_text().splitlines() if line.split(" ")[2:] == [tag])


@DOORS
async def test_a_post_the_upstream_read_and_then_dropped_is_a_502_and_runs_once(
    proxy: Any, record_file: Path, tmp_path: Path, door: tuple[str, ...]
) -> None:
    count_file = tmp_path / "count.txt"
    p = counted(proxy, record_file, count_file, door)
    assert (await one(p.url, chat("X-Test: warm"))).status == 200  # leaves a pooled connection
    resp = await one(p.url, chat("X-Test: die"))  # sent on that (reused) connection
    assert resp.status == 502
    error = json.loads(resp.body)["error"]["message"]
    assert error.startswith("[c] upstream error: ")
    assert "the upstream closed the connection before answering" in error
    assert seen(count_file, "warm") == 1
    assert seen(count_file, "die") == 1  # read once, never sent again


@DOORS
async def test_a_pooled_connection_the_upstream_closed_while_idle_is_replaced_unnoticed(
    proxy: Any, record_file: Path, tmp_path: Path, door: tuple[str, ...]
) -> None:
    count_file = tmp_path / "count.txt"
    p = counted(proxy, record_file, count_file, door)
    for _ in range(3):
        assert (await one(p.url, chat("X-Test: ok"))).status == 200
        await asyncio.sleep(IDLE_CLOSE * 1.5)  # the upstream closes the pooled connection
    assert seen(count_file, "ok") == 3  # one run per request


@DOORS
async def test_requests_right_after_a_streamed_answer_never_meet_its_closing_connection(
    proxy: Any, record_file: Path, tmp_path: Path, door: tuple[str, ...]
) -> None:
    # llama-server closes its connection a moment after every streamed answer, announcing
    # nothing; each next request reaches the proxy within that moment
    count_file = tmp_path / "count.txt"
    p = counted(proxy, record_file, count_file, door)
    tags = [f"stream-{i}" for i in range(4)] + ["after", "stream-last", "after-last"]
    for tag in tags:
        resp = await one(p.url, chat(f"X-Test: {tag}"))
        assert resp.status == 200, (tag, resp.body)
        if tag.startswith("stream"):
            assert resp.body.endswith(b"data: [DONE]\n\n")
    assert [seen(count_file, tag) for tag in tags] == [1] * len(tags)  # each ran once
