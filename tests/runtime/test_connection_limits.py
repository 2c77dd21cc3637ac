"""The connection rule (runtime/core/connections.py): which wait is timed, for how long,
and which connection makes room at the limit."""

from __future__ import annotations

import pytest

from llama_swap.runtime.core.connections import ConnectionLimits, Phase, make_room

LIMITS = ConnectionLimits(head_timeout=30, body_idle_timeout=60, keepalive_timeout=75)


@pytest.mark.parametrize(("phase", "limit"), [
    (Phase.HEAD, 30), (Phase.BODY, 60), (Phase.IDLE, 75),
])
def test_each_wait_has_its_timeout(phase: Phase, limit: float) -> None:
    assert not LIMITS.overdue(phase, since=100, now=100 + limit - 0.01)
    assert LIMITS.overdue(phase, since=100, now=100 + limit)


def test_serving_a_request_is_never_timed() -> None:
    assert not LIMITS.overdue(Phase.BUSY, since=0, now=1e9)


def test_zero_turns_a_timeout_off() -> None:
    off = ConnectionLimits(head_timeout=0, body_idle_timeout=0, keepalive_timeout=0)
    assert not any(off.overdue(p, 0, 1e9) for p in Phase)
    assert off.sweep_interval() == 5.0


def test_sweeps_often_enough_for_the_shortest_timeout() -> None:
    assert LIMITS.sweep_interval() == 5.0
    assert ConnectionLimits(head_timeout=1).sweep_interval() == 0.25
    assert ConnectionLimits(head_timeout=0.01).sweep_interval() == 0.05


def test_room_is_made_by_the_oldest_head_then_the_oldest_idle() -> None:
    conns = [("busy", Phase.BUSY, 0.0), ("body", Phase.BODY, 1.0), ("idle-old", Phase.IDLE, 2.0),
             ("head-new", Phase.HEAD, 9.0), ("head-old", Phase.HEAD, 5.0), ("idle", Phase.IDLE, 3.0)]
    assert make_room(conns) == "head-old"
    assert make_room([c for c in conns if c[1] is not Phase.HEAD]) == "idle-old"
    assert make_room([c for c in conns if c[1] in (Phase.BUSY, Phase.BODY)]) is None
