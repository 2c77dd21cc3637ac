"""Selectors at runtime: which target a request for a selector goes to.

Decided per request, before the scheduler sees it (an admission decision: the
request's model is rewritten to the chosen target and then scheduled like any
other request).  The strategies, as in the Go original:

- `pin`: always the first target;
- `warm`: the first target whose model is ready, else the first starting, else
  the first target (a cold start).  Stopping counts as not running;
- `spillover`: requests currently routed through the selector are counted per
  target (`SpilloverCounts`, per server; direct requests and scheduler limits
  do not count).  A local target that is stopping or shut down is skipped; one
  that is ready, starting or has requests counted is *active*, the others
  *cold*.  A peer target is active when it has requests counted, else cold.
  No active and no cold target: 503.  No active target: the first cold one.
  The least busy active target while its count is below `spillover` (ties
  rotate round robin); else the first cold target (the spill that starts the
  next model); else the least busy active target.

`SpilloverCounts` is the only state: taken when a choice is made, released
when the request finishes (or fails before it is forwarded).  Pure: no clock,
no I/O; callers pass the process states.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llama_swap.compiler.plan import Plan, Selector
from llama_swap.runtime.core.errors import RouteError
from llama_swap.runtime.core.process_state import ProcessState

States = Mapping[str, ProcessState]


@dataclass(frozen=True, slots=True)
class Choice:
    """A selector's answer: rewrite the request to `target` (as configured)."""

    selector: str
    index: int  # into the selector's targets
    target: str
    resolved: str  # local model id or peer `peer/model`
    reserved: bool  # a spillover count was taken: release it when the request ends


class SpilloverCounts:
    """Requests in flight through each spillover selector, per resolved target."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._rotation: dict[str, int] = {}

    def count(self, selector: str, resolved: str) -> int:
        return self._counts.get((selector, resolved), 0)

    def take(self, selector: str, resolved: str) -> None:
        key = (selector, resolved)
        self._counts[key] = self._counts.get(key, 0) + 1

    def release(self, selector: str, resolved: str) -> None:
        key = (selector, resolved)
        left = self._counts.get(key, 0) - 1
        if left > 0:
            self._counts[key] = left
        else:
            self._counts.pop(key, None)

    def next_turn(self, selector: str) -> int:
        turn = self._rotation.get(selector, 0)
        self._rotation[selector] = turn + 1
        return turn


def _warm(sel: Selector, states: States) -> int:
    for wanted in (ProcessState.READY, ProcessState.STARTING):
        for i, r in enumerate(sel.resolved):
            if states.get(r) is wanted:
                return i
    return 0


def _spillover(
    sel: Selector, plan: Plan, states: States, counts: SpilloverCounts
) -> int | RouteError:
    active: list[int] = []
    cold: list[int] = []
    for i, r in enumerate(sel.resolved):
        busy = counts.count(sel.id, r) > 0
        if r in plan.models:
            state = states.get(r, ProcessState.STOPPED)
            if state in (ProcessState.STOPPING, ProcessState.SHUTDOWN):
                continue
            running = state in (ProcessState.READY, ProcessState.STARTING)
            (active if running or busy else cold).append(i)
        else:
            (active if busy else cold).append(i)
    if not active and not cold:
        return RouteError(503, f'selector "{sel.id}" has no available spillover targets')
    if not active:
        return cold[0]
    least = min(counts.count(sel.id, sel.resolved[i]) for i in active)
    if least < sel.spillover or not cold:
        tied = [i for i in active if counts.count(sel.id, sel.resolved[i]) == least]
        return tied[counts.next_turn(sel.id) % len(tied)] if len(tied) > 1 else tied[0]
    return cold[0]


def choose(
    plan: Plan, sel: Selector, states: States, counts: SpilloverCounts
) -> Choice | RouteError:
    """The target for one request naming `sel`; a spillover choice takes a count."""
    if sel.strategy == "warm":
        index: int | RouteError = _warm(sel, states)
    elif sel.strategy == "spillover":
        index = _spillover(sel, plan, states, counts)
    else:
        index = 0
    if isinstance(index, RouteError):
        return index
    resolved = sel.resolved[index]
    reserved = sel.strategy == "spillover"
    if reserved:
        counts.take(sel.id, resolved)
    return Choice(sel.id, index, sel.targets[index], resolved, reserved)


def release(counts: SpilloverCounts, choice: Choice | None) -> None:
    """Give back what `choose` took (nothing for pin and warm)."""
    if choice is not None and choice.reserved:
        counts.release(choice.selector, choice.resolved)
