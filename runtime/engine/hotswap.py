"""Hot swap: replace the router's plan in one step on its run loop, process by process.

Why this module exists: a reload must not restart what did not change.  The
router owns one `HotSwap` and calls its `replace_plan(new_plan)` while handling a
`PlanApplied` event (so nothing else touches routing state meanwhile) and its
`after_event()` after every event it handles.  What hot swap needs of the router
is the `HotSwapHost` protocol below.  Per model, as `runtime.core.plan_diff`
classifies it:

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
concurrency limit or declared resources changed: granted-but-unfinished counts carry over (so a busy
model is never evicted and serial's one-at-a-time rule holds), and requests
still waiting are handed to the new scheduler in arrival order.  Otherwise the
running scheduler is kept untouched.

Invariant: the host's `plan` and `processes` change together in one
synchronous call on the loop; every request is resolved by exactly one plan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Protocol

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.core.errors import RouteError, RouteFailure
from llama_swap.runtime.core.plan_diff import PlanDiff, diff_plans
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.schedulers import make_scheduler
from llama_swap.runtime.core.schedulers.base import Effects, Request, Scheduler
from llama_swap.runtime.core.swappers import make_swapper
from llama_swap.runtime.engine.events import Event, ProcessStopped
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.process import ModelProcess, ModelSlot

log = logging.getLogger("llama_swap.hotswap")

RETIRE_GRACE = 10.0  # seconds an idle old process gets to exit (like unload)


def model_removed(model: str) -> RouteError:
    return RouteError(503, f"[{model}] model removed from the configuration by a reload")


class HotSwapHost(Effects, Protocol):
    """The router as hot swap sees it (implemented by `runtime.engine.router.Router`).

    It is the scheduler's `Effects` (a rebuilt scheduler acts through it), plus the
    state a new plan replaces and the few run-loop services hot swap uses.  Every
    member is used on the run loop only.
    """

    plan: Plan  # the running plan; replaced together with `processes`
    scheduler: Scheduler  # replacing it drops the outcomes of swaps the old one started
    processes: dict[str, ModelSlot]  # model id -> its process (or draining slot)

    @property
    def closing(self) -> bool:
        """True once shutdown began: no plan is applied any more."""

    @property
    def health_check_timeout(self) -> float:
        """Seconds a start may take under the running plan."""

    def new_process(self, model: Model, log: LogBuffer | None = None) -> ModelProcess:
        """A stopped process for `model` that reports its state changes to the host;
        `log` (default: a fresh one) lets a replacement write to its predecessor's log."""

    def waiting_requests(self) -> list[Request]:
        """The requests not answered yet, in arrival order."""

    def is_waiting(self, request_id: int) -> bool:
        """Is this request still unanswered?"""

    def spawn(self, work: Coroutine[object, None, None], name: str) -> asyncio.Task[None]:
        """Run `work` as a task the host tracks (cancelled and awaited at shutdown)."""

    def post(self, event: Event) -> None:
        """Queue `event` for the run loop."""


class ReplacingProcess:
    """A model's slot while its old process drains (a `ModelSlot`, like ModelProcess).

    `old` serves what it already owes; `new` (None when the model was removed)
    is the definition the next start uses.  `start_pending` is True while the
    old definition's start, begun before the reload, still owes its waiters.
    """

    def __init__(
        self, model_id: str, old: ModelSlot, new: ModelSlot | None, *, start_pending: bool
    ) -> None:
        self.id = model_id
        self.old = old
        self.new = new
        self.start_pending = start_pending
        self.retiring = False
        self._old_gone = asyncio.Event()
        self._stops = 0

    # -- what the router and the scheduler observe ----------------------------------------

    @property
    def old_alive(self) -> bool:
        return self.old.state.occupies_memory

    @property
    def state(self) -> ProcessState:
        if self.old_alive:
            return self.old.state if self.start_pending else ProcessState.STOPPING
        if self.new is None:
            return self.old.state
        return self.new.state

    @property
    def current(self) -> ModelSlot:
        """The process requests are served by right now (the old one while it lives)."""
        if self.old_alive or self.new is None:
            return self.old
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
        self.old.poll()
        if self.new is not None:
            self.new.poll()
        return self.state

    def __repr__(self) -> str:
        return f"<ReplacingProcess {self.id} old={self.old!r} new={self.new!r}>"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        stops = self._stops
        if self.start_pending and self.old.state in (ProcessState.STARTING, ProcessState.READY):
            await self.old.start()  # join the start its waiters are owed
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
        await self.old.stop(grace)
        if self.new is not None:
            await self.new.stop(grace)

    async def shutdown(self, grace: float) -> None:
        self._stops += 1
        await self.old.shutdown(grace)
        if self.new is not None:
            await self.new.shutdown(grace)

    def kill(self) -> None:
        """SIGKILL both definitions' processes now (a shutdown out of time)."""
        self.old.kill()
        if self.new is not None:
            self.new.kill()

    def note_old_gone(self) -> None:
        self._old_gone.set()


class HotSwap:
    """One router's hot-swap state: the slots whose old process is still draining."""

    def __init__(self, host: HotSwapHost) -> None:
        self._host = host
        self._replacing: dict[str, ReplacingProcess] = {}

    # -- apply ----------------------------------------------------------------------------

    def replace_plan(self, new_plan: Plan) -> PlanDiff:
        """Swap the host's plan for `new_plan` (on the run loop); returns the diff applied.

        Raises (changing nothing) when the host is shutting down or the new plan's
        routing cannot be built."""
        host = self._host
        if host.closing:
            raise RuntimeError("llama-swap is shutting down; the new plan was not applied")
        diff = diff_plans(host.plan, new_plan)
        if diff.identical:
            return diff
        # Everything that can fail happens before the first mutation.
        new_sched = self._rebuilt_scheduler(new_plan, diff)
        old_sched = host.scheduler
        in_flight = {m: n for m in host.processes if (n := old_sched.in_flight(m)) > 0}
        pending = {m for m in host.processes if old_sched.awaits_swap(m)}

        host.plan = new_plan
        self._apply_models(new_plan, diff, pending)
        self._hand_over_waiters(old_sched, new_sched, set(diff.removed), in_flight)
        self.after_event()
        return diff

    def _rebuilt_scheduler(self, plan: Plan, diff: PlanDiff) -> Scheduler | None:
        """A scheduler for `plan` when its rules or its models changed; None keeps the
        running one (its queue and swaps stay exactly as they are)."""
        rebuild = bool(
            diff.routing_changed
            or diff.added
            or diff.removed
            or any(
                "concurrencyLimit" in f or "resources" in f for f in diff.changed_fields.values()
            )
        )
        if not rebuild:
            return None
        return make_scheduler(plan.routing, plan.models, self._host, make_swapper(plan))

    def _apply_models(self, plan: Plan, diff: PlanDiff, pending: set[str]) -> None:
        """Give every model its new definition, process by process (see the module doc);
        `pending`: models a swap started by the old scheduler is still starting."""
        processes = self._host.processes
        for mid in diff.kept + diff.changed_live:
            processes[mid].model = plan.models[mid]
        for mid in diff.changed_restart:
            self._restart(mid, plan.models[mid], mid in pending)
        for mid in diff.removed:
            self._remove(mid, mid in pending)
        for mid in diff.added:
            self._add(mid, plan.models[mid])
        if "healthCheckTimeout" in diff.settings_changed:
            timeout = self._host.health_check_timeout
            for proc in processes.values():
                proc.health_check_timeout = timeout

    def _hand_over_waiters(
        self,
        old_sched: Scheduler,
        new_sched: Scheduler | None,
        removed: set[str],
        in_flight: Mapping[str, int],
    ) -> None:
        """Fail the requests waiting for removed models; when the scheduler was rebuilt,
        install it with the old one's in-flight counts and hand it the other waiters in
        arrival order (the old scheduler is dropped with its queue)."""
        host = self._host
        waiting = host.waiting_requests()
        for request in waiting:
            if request.model in removed:
                host.grant_error(request, model_removed(request.model))
                if new_sched is None:
                    old_sched.on_cancel(request.id)
        if new_sched is None:
            return
        new_sched.adopt_in_flight(in_flight)
        host.scheduler = new_sched
        for request in waiting:
            if host.is_waiting(request.id):
                new_sched.on_request(request)

    def _restart(self, mid: str, model: Model, pending: bool) -> None:
        host = self._host
        cur = host.processes[mid]
        if isinstance(cur, ReplacingProcess):
            if cur.old_alive:  # still draining an older definition: the newest wins
                cur.new = host.new_process(model, cur.log)
                return
            cur = host.processes[mid] = self._unwrap(mid, cur)
        if not cur.state.occupies_memory:
            cur.model = model  # nothing runs: the next start uses the new definition
            cur.health_check_timeout = host.health_check_timeout
            return
        starting = cur.state is ProcessState.STARTING or pending
        self._drain(mid, ReplacingProcess(
            mid, cur, host.new_process(model, cur.log), start_pending=starting
        ))
        log.info("model %s changed: the running process is replaced once idle", mid)

    def _remove(self, mid: str, pending: bool) -> None:
        processes = self._host.processes
        cur = processes[mid]
        if isinstance(cur, ReplacingProcess):
            if cur.old_alive:
                cur.new = None
                return
            cur = self._unwrap(mid, cur)
        if not cur.state.occupies_memory:
            del processes[mid]
            return
        starting = cur.state is ProcessState.STARTING or pending
        self._drain(mid, ReplacingProcess(mid, cur, None, start_pending=starting))
        log.info("model %s removed: its process is stopped once idle", mid)

    def _add(self, mid: str, model: Model) -> None:
        host = self._host
        cur = host.processes.get(mid)
        if isinstance(cur, ReplacingProcess):  # removed earlier, still draining, now back
            cur.new = host.new_process(model, cur.log)
            return
        host.processes[mid] = host.new_process(model)

    def _drain(self, mid: str, slot: ReplacingProcess) -> None:
        """Put `slot` in the model's place until its old process has exited."""
        self._host.processes[mid] = slot
        self._replacing[mid] = slot

    def _unwrap(self, mid: str, slot: ReplacingProcess) -> ModelSlot:
        """The process a slot whose old process has exited stands for."""
        self._replacing.pop(mid, None)
        return slot.new if slot.new is not None else slot.old

    # -- drain --------------------------------------------------------------------------

    def after_event(self) -> None:
        """Advance the draining slots (called after every event; cheap when none drains)."""
        if not self._replacing:
            return
        for mid, slot in list(self._replacing.items()):
            self._advance(mid, slot)

    def _advance(self, mid: str, slot: ReplacingProcess) -> None:
        """Retire the old process once it owes nothing: its start's waiters were served
        and its in-flight requests have finished."""
        host = self._host
        if host.processes.get(mid) is not slot:
            self._replacing.pop(mid, None)
            return
        if not slot.old_alive:
            self._finish(mid, slot)
            return
        if slot.start_pending:
            if slot.old.state is ProcessState.STARTING or host.scheduler.awaits_swap(mid):
                return
            slot.start_pending = False
        if not slot.retiring and host.scheduler.in_flight(mid) == 0:
            slot.retiring = True
            log.info("stopping the previous process of %s (idle)", mid)
            host.spawn(self._retire(mid, slot), f"retire:{mid}")

    async def _retire(self, mid: str, slot: ReplacingProcess) -> None:
        try:
            await slot.old.stop(RETIRE_GRACE)
        finally:
            if self._replacing.get(mid) is slot and not slot.old_alive:
                self._finish(mid, slot)

    def _finish(self, mid: str, slot: ReplacingProcess) -> None:
        """The old process has exited: put the new one (or nothing) in the slot's place."""
        host = self._host
        self._replacing.pop(mid, None)
        slot.note_old_gone()
        if host.processes.get(mid) is slot:
            if slot.new is None:
                del host.processes[mid]
            else:
                host.processes[mid] = slot.new
        host.post(ProcessStopped(mid))
