"""LogBuffer: a bounded ring of recent output with non-blocking live subscribers."""

from __future__ import annotations

import asyncio
import threading

from llama_swap.runtime.engine.logs import LogBuffer


def test_history_holds_what_was_written() -> None:
    log = LogBuffer("m")
    log.write("hello ")
    log.write("world\n")
    assert log.history() == "hello world\n"


def test_ring_keeps_only_the_newest_capacity_characters() -> None:
    log = LogBuffer("m", capacity=10)
    for i in range(10):
        log.write(f"{i}abc\n")
    text = log.history()
    assert len(text) == 10
    assert text == "8abc\n9abc\n"
    log.write("x" * 25)
    assert log.history() == "x" * 10


def test_tail_lines_returns_the_last_non_empty_lines_oldest_first() -> None:
    log = LogBuffer("m")
    log.write("one\ntwo\n\nthree\nfour")
    assert log.tail_lines(2) == ["three", "four"]
    assert log.tail_lines(10) == ["one", "two", "three", "four"]
    assert log.tail_lines(0) == []


def test_writes_are_forwarded_to_the_parent() -> None:
    upstream = LogBuffer("upstream")
    model = LogBuffer("m", parent=upstream)
    model.write("from model\n")
    upstream.write("direct\n")
    assert upstream.history() == "from model\ndirect\n"
    assert model.history() == "from model\n"


async def test_subscribers_receive_only_chunks_written_after_subscribing() -> None:
    log = LogBuffer("m")
    log.write("old\n")
    sub = log.subscribe()
    log.write("a")
    log.write("b")
    sub.close()
    assert [chunk async for chunk in sub] == ["a", "b"]


async def test_a_waiting_subscriber_is_woken_by_a_write() -> None:
    log = LogBuffer("m")
    async with log.subscribe() as sub:
        reader = asyncio.ensure_future(sub.__anext__())
        await asyncio.sleep(0)
        assert not reader.done()
        log.write("live\n")
        assert await asyncio.wait_for(reader, 5) == "live\n"
    assert log.subscriber_count == 0


async def test_a_full_subscriber_drops_chunks_and_never_blocks_the_writer() -> None:
    log = LogBuffer("m")
    slow = log.subscribe(maxsize=2)
    fast = log.subscribe()
    for i in range(5):
        log.write(str(i))
    assert slow.dropped == 3
    slow.close()
    fast.close()
    assert [c async for c in slow] == ["0", "1"]
    assert [c async for c in fast] == ["0", "1", "2", "3", "4"]


async def test_close_subscribers_ends_every_stream() -> None:
    log = LogBuffer("m")
    sub = log.subscribe()
    reader = asyncio.ensure_future(sub.__anext__())
    await asyncio.sleep(0)
    log.close_subscribers()
    try:
        await asyncio.wait_for(reader, 5)
    except StopAsyncIteration:
        pass
    else:  # pragma: no cover - the assertion below explains the failure
        raise AssertionError("the subscription should have ended")
    assert log.subscriber_count == 0


async def test_writes_from_another_thread_reach_a_subscriber_on_the_loop() -> None:
    log = LogBuffer("m")
    sub = log.subscribe()
    thread = threading.Thread(target=lambda: [log.write(f"{i}\n") for i in range(3)])
    thread.start()
    thread.join()
    got = [await asyncio.wait_for(sub.__anext__(), 5) for _ in range(3)]
    assert got == ["0\n", "1\n", "2\n"]
    assert log.history() == "0\n1\n2\n"
    sub.close()
