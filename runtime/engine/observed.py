"""What the router knows for the scheduler that the scheduler cannot know itself.

The scheduler is pure: it has no clock, runs no commands and holds no settings
from outside the plan.  The router keeps these here and hands them over as one
`Observed` value when the scheduler decides (`Router.observe`):

- pins: the plan's own (members of persistent groups) and the ones set from
  outside through `Router.set_pinned` (the active profile's pinned models);
- budget probe results: each probe is a shell command printing the free amount
  of one resource.  It runs off the run loop, in its own process group, with a
  timeout; the first number it prints is the result.  A probe that fails, times
  out or prints no number is logged and reported as None, which tells the budget
  policy to use the declared sizes alone.  Results are fresh only until a model
  process changes state (memory moved) or PROBE_MAX_AGE passes;
- eviction reasons: every eviction's log line and a count per reason for
  `/metrics` (`llamaswap_budget_evictions_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType

from llama_swap.runtime.core.schedulers.base import Evicted, Observed

log = logging.getLogger("llama_swap.router")

PROBE_TIMEOUT = 5.0  # seconds a probe may run before it is killed (and counts as failed)
PROBE_MAX_AGE = 2.0  # seconds a probe result stays usable when nothing changed meanwhile
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def parse_probe_output(text: str) -> float | None:
    """The first number in a probe's output (e.g. nvidia-smi's `23456`), or None."""
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


async def run_probe(resource: str, command: str, timeout: float = PROBE_TIMEOUT) -> float | None:
    """Run one probe command through the shell; its free amount, or None (logged)."""
    try:
        proc = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("budget probe %s failed to start (%s); using declared sizes", resource, exc)
        return None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        log.warning("budget probe %s timed out after %.1fs; using declared sizes", resource, timeout)
        return None
    text = out.decode(errors="replace")
    value = parse_probe_output(text) if proc.returncode == 0 else None
    if value is None:
        detail = err.decode(errors="replace").strip()[:200] or text.strip()[:200]
        log.warning(
            "budget probe %s failed (exit %s: %s); using declared sizes",
            resource, proc.returncode, detail or "no number printed",
        )  # fmt: skip
    else:
        log.debug("budget probe %s: %s free", resource, text.strip())
    return value


class Observations:
    """Pins, probe results and eviction counts, kept by the router on its loop."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.pinned: frozenset[str] = frozenset()  # set from outside (Router.set_pinned)
        self._free: dict[str, tuple[float | None, float]] = {}  # resource -> (result, when)
        self._probing: set[str] = set()
        self.evictions: dict[str, int] = {}  # reason label -> count, since start

    def observe(
        self, last_used: dict[str, float], plan_pins: frozenset[str]
    ) -> Observed:
        """The value the scheduler decides on now.  `last_used` is passed as a read-only
        view of the router's table: it is read during the decision only."""
        now = self._clock()
        free = {r: v for r, (v, when) in self._free.items() if now - when <= PROBE_MAX_AGE}
        return Observed(
            now=now,
            last_used=MappingProxyType(last_used),
            pinned=self.pinned | plan_pins,
            free=MappingProxyType(free),
        )

    # -- probes ---------------------------------------------------------------

    def start_probes(
        self,
        resources: tuple[str, ...],
        commands: Mapping[str, str],
        spawn: Callable[[Coroutine[object, None, None], str], object],
        report: Callable[[tuple[tuple[str, float | None], ...]], None],
    ) -> None:
        """Run the probes of `resources` not already running; each reports on its own."""
        for resource in resources:
            command = commands.get(resource)
            if command is None or resource in self._probing:
                continue
            self._probing.add(resource)
            spawn(self._probe(resource, command, report), f"probe:{resource}")

    async def _probe(
        self,
        resource: str,
        command: str,
        report: Callable[[tuple[tuple[str, float | None], ...]], None],
    ) -> None:
        value = await run_probe(resource, command)
        report(((resource, value),))

    def store(self, results: tuple[tuple[str, float | None], ...]) -> None:
        """Probe results arrived (on the loop)."""
        now = self._clock()
        for resource, value in results:
            self._probing.discard(resource)
            self._free[resource] = (value, now)

    def forget_probes(self) -> None:
        """A model process changed state: the memory a probe saw has moved."""
        self._free.clear()

    # -- evictions -----------------------------------------------------------

    def note_evictions(self, target: str, evicted: tuple[Evicted, ...]) -> None:
        for e in evicted:
            log.info("%s", e.line)
            self.evictions[e.reason] = self.evictions.get(e.reason, 0) + 1
