"""What the schedulers report of their queue (`snapshot()`), and the JSON the Queue view
and `GET /api/queue` read (`queue_document`).

The snapshot is a frozen copy: taking it changes nothing, and later events do not
change a snapshot already taken.
"""

from __future__ import annotations

from llama_swap.runtime.core.schedulers import FifoScheduler, SerialScheduler
from llama_swap.runtime.core.schedulers.base import Request
from llama_swap.runtime.core.schedulers.snapshot import LoadingGroup, QueueSnapshot
from llama_swap.runtime.http.render.queue import queue_document
from tests.fakes import FakeEffects, StubSwapper, make_models


def serial(*models: str, ready: tuple[str, ...] = ()) -> tuple[SerialScheduler, FakeEffects]:
    fx = FakeEffects(*models, ready=ready)
    return SerialScheduler(make_models(*models), fx), fx


def test_an_idle_scheduler_reports_nothing_waiting_loading_or_in_flight() -> None:
    s, _ = serial("a")
    assert s.snapshot() == QueueSnapshot("serial", (), (), ())


def test_serial_reports_the_request_in_flight_and_the_head_behind_it() -> None:
    s, fx = serial("a", "b", ready=("a",))
    s.on_request(Request(1, "a"))  # granted at once: in flight
    s.on_request(Request(2, "b"))  # the head: waits for request 1 to finish
    s.on_request(Request(3, "a"))
    fx.take()
    assert s.snapshot() == QueueSnapshot(
        "serial", (Request(2, "b"), Request(3, "a")), (), (("a", 1),))


def test_serial_reports_the_load_its_head_waits_for() -> None:
    s, fx = serial("a", "b", ready=("b",))
    s.on_request(Request(1, "a"))
    taken = s.snapshot()
    assert taken.queued == (Request(1, "a"),)
    assert taken.loading == (LoadingGroup("a", ("b",), ()),)
    fx.finish_swap(s, "a")
    assert s.snapshot() == QueueSnapshot("serial", (), (), (("a", 1),))
    assert taken.queued == (Request(1, "a"),)  # the earlier copy is unchanged


def test_fifo_reports_each_load_with_its_collation_group_and_the_blocked_queue() -> None:
    fx = FakeEffects("a", "b")
    s = FifoScheduler(make_models("a", "b"), fx, StubSwapper({"a": ("b",), "b": ("a",)}))
    for rid, model in ((1, "a"), (2, "b"), (3, "a"), (4, "b")):
        s.on_request(Request(rid, model))
    assert s.snapshot() == QueueSnapshot(
        "fifo",
        (Request(2, "b"), Request(4, "b")),
        (LoadingGroup("a", ("b",), (Request(1, "a"), Request(3, "a"))),),
        (),
    )
    fx.finish_swap(s, "a")
    # a's group is served together; b stays queued behind a's requests in flight
    assert s.snapshot() == QueueSnapshot(
        "fifo", (Request(2, "b"), Request(4, "b")), (), (("a", 2),))


def test_the_document_numbers_positions_and_adds_each_wait() -> None:
    snap = QueueSnapshot(
        "fifo",
        (Request(7, "b"), Request(9, "c")),
        (LoadingGroup("a", ("z",), (Request(5, "a"),)),),
        (("a", 1), ("c", 2)),
    )
    waits = {7: 2.5, 5: 0.0042}
    doc = queue_document(snap, waits.get)
    assert doc == {
        "scheduler": "fifo",
        "queued": [{"id": 7, "model": "b", "position": 1, "waitMs": 2500},
                   {"id": 9, "model": "c", "position": 2, "waitMs": None}],
        "loading": [{"model": "a", "evict": ["z"],
                     "waiters": [{"id": 5, "model": "a", "waitMs": 4}]}],
        "inFlight": [{"model": "a", "count": 1}, {"model": "c", "count": 2}],
        "waiting": 3,
    }
