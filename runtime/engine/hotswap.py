"""Hot swap: replace the router's plan in one step on its run loop, process by process.

Why this module exists: a reload must not restart what did not change.  The
router calls `replace_plan(router, new_plan)` while handling a `PlanApplied`
event (so nothing else touches routing state meanwhile) and `after_event(router)`
after every event it handles.  Per model, as `runtime.plan_diff` classifies it:

- kept / live-changed: the running process is kept; its `model` is replaced
  (ttl, aliases, filters... apply at once; in-flight requests keep the
  definition they were granted with);
- restart-changed: a process that is not running just takes the new definition;
  a running one is wrapped in a `ReplacingProcess` that keeps serving the
  requests already granted (and, if it was starting, the requests that were
  waiting for that start) but looks STOPPING to the scheduler, so no new
  request is granted to it.  Once its in-flight count is 0 it is stopped; the
  next request starts the new definition (never while the old one is alive:
  they usually share a port);
- removed: requests still waiting for it fail with a clear 503; a running
  process is stopped once idle, then forgotten;
- added: a new stopped process.

The scheduler is rebuilt from the new plan when routing, the set of models or a
concurrency limit changed: granted-but-unfinished counts carry over (so a busy
model is never evicted and serial's one-at-a-time rule holds), and requests
still waiting are handed to the new scheduler in arrival order.  Otherwise the
running scheduler is kept untouched.

Invariant: `router.plan` and `router.processes` change together in one
synchronous call on the loop; every request is resolved by exactly one plan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.core.errors import RouteError, RouteFailure
from llama_swap.runtime.core.plan_diff import PlanDiff, diff_plans
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers import make_scheduler
from llama_swap.runtime.core.schedulers.base import Scheduler
from llama_swap.runtime.core.swappers import make_swapper
from llama_swap.runtime.engine.events import ProcessStopped
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.process import ModelProcess

log = logging.getLogger("llama_swap.hotswap")

RETIRE_GRACE = 10.0  # seconds an idle old process gets to exit (like unload)


def model_removed(model: str) -> RouteError:
    return RouteError(503, f"[{model}] model removed from the configuration by a reload")


class ReplacingProcess:
    """A model's slot while its old process drains: looks like a ModelProcess to the router.

    `old` serves what it already owes; `new` (None when the model was removed)
    is the definition the next start uses.  `start_pending` is True while the
    old definition's start, begun before the reload, still owes its waiters.
    """

    def __init__(
        self, model_id: str, old: ModelProcess, new: ModelProcess | None, *, start_pending: bool
    ) -> None:
        self.id = model_id
        self.old: ModelProcess | None = old
        self.new = new
        self.start_pending = start_pending
        self.retiring = False
        self._old_gone = asyncio.Event()
        self._stops = 0

    # -- what the router and the scheduler observe ----------------------------------------

    @property
    def old_alive(self) -> bool:
        return self.old is not None and self.old.state.occupies_memory

    @property
    def state(self) -> ProcessState:
        if self.old is not None and self.old.state.occupies_memory:
            return self.old.state if self.start_pending else ProcessState.STOPPING
        if self.new is None:
            old = self.old
            return old.state if old is not None else ProcessState.STOPPED
        return self.new.state

    @property
    def current(self) -> ModelProcess:
        """The process requests are served by right now (the old one while it lives)."""
        if self.old is not None and (self.old_alive or self.new is None):
            return self.old
        assert self.new is not None
        return self.new

    @property
    def model(self) -> Model:
        return self.current.model

    @model.setter
    def model(self, value: Model) -> None:
        if self.new is not None:
            self.new.model = value

    @property
    def pid(self) -> int | None:
        return self.current.pid

    @property
    def log(self) -> LogBuffer:
        return self.current.log

    @property
    def health_check_timeout(self) -> float:
        return self.current.health_check_timeout

    @health_check_timeout.setter
    def health_check_timeout(self, value: float) -> None:
        if self.new is not None:
            self.new.health_check_timeout = value

    def poll(self) -> ProcessState:
        """The slot's state after polling both definitions' children (see ModelProcess.poll)."""
        if self.old is not None:
            self.old.poll()
        if self.new is not None:
            self.new.poll()
        return self.state

    def __getattr__(self, name: str) -> Any:  # the rest of ModelProcess, from the current one
        return getattr(self.current, name)

    def __repr__(self) -> str:
        return f"<ReplacingProcess {self.id} old={self.old!r} new={self.new!r}>"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        stops = self._stops
        old = self.old
        if old is not None and self.start_pending and old.state in (
            ProcessState.STARTING,
            ProcessState.READY,
        ):
            await old.start()  # join the start its waiters are owed
            return
        if self.old_alive:
            await self._old_gone.wait()
        if self._stops != stops:
            raise RouteFailure(RouteError(503, f"[{self.id}] start aborted by a stop"))
        if self.new is None:
            raise RouteFailure(model_removed(self.id))
        await self.new.start()

    async def stop(self, grace: float = 5.0) -> None:
        self._stops += 1
        if self.old is not None:
            await self.old.stop(grace)
        if self.new is not None:
            await self.new.stop(grace)

    async def shutdown(self, grace: float) -> None:
        self._stops += 1
        if self.old is not None:
            await self.old.shutdown(grace)
        if self.new is not None:
            await self.new.shutdown(grace)

    def kill(self) -> None:
        """SIGKILL both definitions' processes now (a shutdown out of time)."""
        if self.old is not None:
            self.old.kill()
        if self.new is not None:
            self.new.kill()

    def note_old_gone(self) -> None:
        self._old_gone.set()


# ---------------------------------------------------------------------------------------------
# the router-facing API


def replace_plan(router: Any, new_plan: Plan) -> PlanDiff:
    """Swap `router.plan` for `new_plan` (call on the router's run loop); returns the diff."""
    return _state(router).replace_plan(new_plan)


def after_event(router: Any) -> None:
    """Advance draining processes (call on the run loop after every event; cheap when idle)."""
    hs = router.__dict__.get("_hotswap")
    if hs is not None and hs.replacing:
        hs.after_event()


def _state(router: Any) -> HotSwap:
    hs = router.__dict__.get("_hotswap")
    if hs is None:
        hs = router.__dict__["_hotswap"] = HotSwap(router)
    return hs


def swap_pending(scheduler: Scheduler, model: str) -> bool:
    """Does the scheduler wait for a `SwapDone(model)`? (serial: `swapping`; fifo: `active_swaps`)."""
    if hasattr(type(scheduler), "swapping"):
        return getattr(scheduler, "swapping", None) == model
    active = getattr(scheduler, "active_swaps", None)
    if callable(active):
        return model in active()
    return False


def carry_in_flight(scheduler: Scheduler, counts: Mapping[str, int]) -> None:
    """Tell a fresh scheduler which models still have granted, unfinished requests."""
    adopt = getattr(scheduler, "adopt_in_flight", None)
    if callable(adopt):
        adopt(dict(counts))
        return
    table = getattr(scheduler, "_in_flight", None)
    if not isinstance(table, dict):
        raise TypeError(f"{type(scheduler).__name__} cannot adopt in-flight counts")
    table.update(counts)


class HotSwap:
    """Per-router hot-swap state: the slots whose old process is still draining."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.replacing: dict[str, ReplacingProcess] = {}

    # -- apply ----------------------------------------------------------------------------

    def replace_plan(self, new_plan: Plan) -> PlanDiff:
        r = self.router
        if getattr(r, "closing", False):
            raise RuntimeError("llama-swap is shutting down; the new plan was not applied")
        old_plan: Plan = r.plan
        diff = diff_plans(old_plan, new_plan)
        if diff.identical:
            return diff
        old_sched: Scheduler = r.scheduler
        rebuild = bool(
            diff.routing_changed
            or diff.added
            or diff.removed
            or any("concurrencyLimit" in f for f in diff.changed_fields.values())
        )
        # Everything that can fail happens before the first mutation.
        new_sched = (
            make_scheduler(new_plan.routing, new_plan.models, r, make_swapper(new_plan))
            if rebuild
            else None
        )
        in_flight = {m: n for m in r.processes if (n := old_sched.in_flight(m)) > 0}
        pending = {m for m in r.processes if swap_pending(old_sched, m)}

        r.plan = new_plan
        timeout = r._health_timeout()
        procs: dict[str, Any] = r.processes
        for mid in diff.kept + diff.changed_live:
            procs[mid].model = new_plan.models[mid]
        for mid in diff.changed_restart:
            self._restart(mid, new_plan.models[mid], timeout, mid in pending)
        for mid in diff.removed:
            self._remove(mid, mid in pending)
        for mid in diff.added:
            self._add(mid, new_plan.models[mid], timeout)
        if "healthCheckTimeout" in diff.settings_changed:
            for proc in procs.values():
                proc.health_check_timeout = timeout

        removed = set(diff.removed)
        waiters = sorted(r._waiters.items())
        for rid, waiter in waiters:
            if waiter.request.model in removed:
                r.grant_error(waiter.request, model_removed(waiter.request.model))
                if new_sched is None:
                    old_sched.on_cancel(rid)
        if new_sched is not None:
            carry_in_flight(new_sched, in_flight)
            r.scheduler = new_sched
            for rid, waiter in waiters:
                if rid in r._waiters:
                    new_sched.on_request(waiter.request)
        self.after_event()
        return diff

    def _fresh(self, model: Model, timeout: float, log_buffer: LogBuffer) -> ModelProcess:
        r = self.router
        return ModelProcess(
            model, health_check_timeout=timeout, log=log_buffer, on_state_change=r._state_callback
        )

    def _restart(self, mid: str, model: Model, timeout: float, pending: bool) -> None:
        procs = self.router.processes
        cur = procs[mid]
        if isinstance(cur, ReplacingProcess):
            if cur.old_alive:  # still draining an older definition: the newest wins
                cur.new = self._fresh(model, timeout, cur.log)
                return
            cur = cur.new if cur.new is not None else cur.old
            procs[mid] = cur
            self.replacing.pop(mid, None)
        if not cur.state.occupies_memory:
            cur.model = model  # nothing runs: the next start uses the new definition
            cur.health_check_timeout = timeout
            return
        starting = cur.state is ProcessState.STARTING or pending
        slot = ReplacingProcess(mid, cur, self._fresh(model, timeout, cur.log), start_pending=starting)
        procs[mid] = slot
        self.replacing[mid] = slot
        log.info("model %s changed: the running process is replaced once idle", mid)

    def _remove(self, mid: str, pending: bool) -> None:
        procs = self.router.processes
        cur = procs[mid]
        if isinstance(cur, ReplacingProcess):
            if cur.old_alive:
                cur.new = None
                return
            cur = cur.new if cur.new is not None else cur.old
            self.replacing.pop(mid, None)
        if cur is None or not cur.state.occupies_memory:
            del procs[mid]
            return
        starting = cur.state is ProcessState.STARTING or pending
        slot = ReplacingProcess(mid, cur, None, start_pending=starting)
        procs[mid] = slot
        self.replacing[mid] = slot
        log.info("model %s removed: its process is stopped once idle", mid)

    def _add(self, mid: str, model: Model, timeout: float) -> None:
        procs = self.router.processes
        cur = procs.get(mid)
        if isinstance(cur, ReplacingProcess):  # removed earlier, still draining, now back
            cur.new = self._fresh(model, timeout, cur.log)
            return
        procs[mid] = self.router._new_process(model)

    # -- drain --------------------------------------------------------------------------

    def after_event(self) -> None:
        r = self.router
        for mid, slot in list(self.replacing.items()):
            if r.processes.get(mid) is not slot:
                self.replacing.pop(mid, None)
                continue
            if not slot.old_alive:
                self._finish(mid, slot)
                continue
            old = slot.old
            assert old is not None
            if slot.start_pending:
                if old.state is ProcessState.STARTING or swap_pending(r.scheduler, mid):
                    continue
                slot.start_pending = False
            if not slot.retiring and r.scheduler.in_flight(mid) == 0:
                slot.retiring = True
                log.info("stopping the previous process of %s (idle)", mid)
                r._spawn(self._retire(mid, slot, old), f"retire:{mid}")

    async def _retire(self, mid: str, slot: ReplacingProcess, old: ModelProcess) -> None:
        try:
            await old.stop(RETIRE_GRACE)
        finally:
            if self.replacing.get(mid) is slot and not slot.old_alive:
                self._finish(mid, slot)

    def _finish(self, mid: str, slot: ReplacingProcess) -> None:
        """The old process has exited: put the new one (or nothing) in the slot's place."""
        r = self.router
        self.replacing.pop(mid, None)
        slot.note_old_gone()
        if r.processes.get(mid) is slot:
            if slot.new is None:
                del r.processes[mid]
            else:
                r.processes[mid] = slot.new
        r._post(ProcessStopped(mid))
