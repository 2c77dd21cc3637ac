"""The router: one run loop that owns all routing state, and the Effects it offers.

Why one loop: the scheduler is a pure state machine (runtime/core/schedulers) that
must see events one at a time.  Every source of change -- a request arriving,
a client leaving, a swap or stop finishing, a served response ending, a
process changing state, the TTL ticker, unload, shutdown, a new plan -- posts
a frozen event (runtime/engine/events.py) to the router, and only the run loop
calls the scheduler, so there are no locks.

The run loop is a trampoline, not a task: `post` handles the event at once, on
the poster's stack, unless an event is being handled already, in which case it
joins a FIFO that the handling drains before returning.  Events are therefore
handled one at a time, whole, in the order they were posted, and never with an
`await` in between (handling is synchronous code), exactly as a single task
draining an `asyncio.Queue` would handle them -- without the two task switches
per event (wake the loop task, then wake the caller) such a queue costs: a
request granted at once resolves its future before its caller awaits it.
Events posted before `start()` wait for it; after shutdown was handled, none is.

The router implements `runtime.core.schedulers.base.Effects`.  Effects run on the
loop and never block it: slow work (stopping and starting processes) runs in
tasks tracked in `self._tasks`, whose outcomes come back as events.

Hot reload goes through the loop too: `apply_plan` posts `PlanApplied`, and the
router's `HotSwap` (runtime/engine/hotswap.py) replaces the plan, the processes
and possibly the scheduler in one step, using the public surface of
`hotswap.HotSwapHost` that this class implements.

Invariants:
- a request is answered exactly once, through its future; a grant to a caller
  that is gone returns False and is not counted as in flight;
- every lease posts `ServeDone` exactly once (runtime/engine/events.py `Lease`);
- `self.plan` is one reference, replaced only on the loop (by `apply_plan`), so
  every request is resolved by exactly one plan;
- a scheduler sees only the outcomes of swaps it started: every swap is stamped with
  the scheduler generation, and a hot reload that rebuilds the scheduler starts a new one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shlex
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from llama_swap.compiler.plan import Model, Plan
from llama_swap.runtime.core import errors
from llama_swap.runtime.core.auth import secrets_of
from llama_swap.runtime.core.errors import RouteError, RouteFailure
from llama_swap.runtime.core.plan_diff import PlanDiff
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.core.profiles import pinned_models
from llama_swap.runtime.core.schedulers import make_scheduler
from llama_swap.runtime.core.schedulers.base import Evicted, Observed, Request, Scheduler
from llama_swap.runtime.core.schedulers.snapshot import QueueSnapshot
from llama_swap.runtime.core.selectors import SpilloverCounts
from llama_swap.runtime.core.swappers import make_swapper, pinned_by_plan
from llama_swap.runtime.core.swappers.budget import BudgetUsage, budget_usage
from llama_swap.runtime.engine.events import (
    Event,
    Lease,
    PinsChanged,
    PlanApplied,
    ProbesDone,
    ProcessStopped,
    RequestArrived,
    RequestCancelled,
    ServeDone,
    ShutdownRequested,
    StateChanged,
    SwapDone,
    TtlTick,
    UnloadRequested,
)
from llama_swap.runtime.engine.hotswap import HotSwap
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.observed import Observations
from llama_swap.runtime.engine.process import ModelProcess, ModelSlot

log = logging.getLogger("llama_swap.router")

_T = TypeVar("_T")

# Seconds an evicted process gets to exit after cmdStop/SIGTERM before SIGKILL to its group.
# Unloads and ttl expiry use the model's `unloadTimeout` instead (`Router.unload_grace`), as
# the Go original does; its evictions wait up to healthCheckTimeout (docs/differences.md).
STOP_GRACE = 5.0
DEFAULT_HEALTH_TIMEOUT = 30.0  # used when the plan's healthCheckTimeout is <= 0
# Seconds a shutdown that ran out of time waits for the processes it SIGKILLed to be reaped
# (a reap may wait up to runtime.engine.process.PIPE_DRAIN for pipes an escaped descendant holds).
KILL_REAP_WAIT = 3.0


@dataclass(frozen=True, slots=True)
class StampedSwapDone(SwapDone):
    """A `SwapDone` stamped with the generation of the scheduler that asked for the swap.

    A hot reload may replace the scheduler while swaps it started still run; the new
    scheduler never asked for them, so the loop drops their outcomes instead of letting
    one answer a swap the new scheduler started (see `Router.scheduler`)."""

    generation: int = 0


class Router:
    """Owns the model processes and the scheduler; see the module docstring."""

    def __init__(
        self,
        plan: Plan,
        *,
        upstream_log: LogBuffer,
        on_event: Callable[[dict[str, object]], None] | None = None,
        ttl_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._plan = plan
        # The active profile (none at start) and the spillover selectors' counts: request
        # routing state of this server (runtime/core/profiles.py, selectors.py).
        self._active_profile: str | None = None
        self.spillover = SpilloverCounts()
        self.upstream_log = upstream_log
        self._on_event = on_event
        self._ttl_interval = ttl_interval
        self._clock = clock
        self._pending: deque[Event] = deque()  # posted while another event was handled
        self._handling = False  # an event is being handled: `post` queues instead
        self._started = False  # start() was called: events are handled as they are posted
        self._exited = False  # shutdown was handled: the loop takes no more events
        self._ids = itertools.count(1)
        self._waiters: dict[int, RequestArrived] = {}
        self._admitted: set[int] = set()  # waiters whose on_admitted was called
        self._arrived: dict[int, float] = {}  # waiter -> its arrival (clock), for the Queue view
        self._last_use: dict[str, float] = {}
        self._state_since: dict[str, float] = {}  # model -> when its last state change was seen
        self.observations = Observations(clock)  # pins, probe results, eviction counts
        self._pins_of: tuple[Plan, frozenset[str]] = (plan, pinned_by_plan(plan))
        self._tasks: set[asyncio.Task[None]] = set()
        self._swaps: dict[str, asyncio.Task[None]] = {}  # the newest swap task per model
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # see running_loop
        self._shutdown_task: asyncio.Task[None] | None = None
        self._closing = False
        self._leased = 0  # leases granted and not yet released (all models)
        self._inflight_changed = False  # emit an `inflight` event once the event is handled
        self._generation = 0  # bumped whenever the scheduler is replaced
        # model id -> its process; hot swap puts a draining slot in a model's place
        self.processes: dict[str, ModelSlot] = {
            mid: self.new_process(model) for mid, model in plan.models.items()
        }
        self.scheduler: Scheduler = make_scheduler(
            plan.routing, plan.models, self, make_swapper(plan)
        )
        self._hotswap = HotSwap(self)

    # ------------------------------------------------------------------ public API

    @property
    def plan(self) -> Plan:
        return self._plan

    @plan.setter
    def plan(self, plan: Plan) -> None:
        """Replaced only on the loop (hot swap); a profile the new plan lacks is cleared."""
        self._plan = plan
        if self._active_profile is not None and self._active_profile not in plan.profiles:
            self.set_active_profile(None)
        elif self._active_profile is not None:  # the same profile may now pin other models
            self.set_pinned(self.pinned_models())

    @property
    def active_profile(self) -> str | None:
        return self._active_profile

    def set_active_profile(self, name: str | None) -> bool:
        """Make `name` (a profile of the plan, or None) the active profile; True if it changed.

        A change is logged and announced to the event listeners (`profileChanged`).
        """
        if name is not None and name not in self._plan.profiles:
            raise KeyError(name)
        if name == self._active_profile:
            return False
        self._active_profile = name
        self.set_pinned(self.pinned_models())  # its pinned models are never evicted
        log.info("active profile changed to %s", f'"{name}"' if name else "none")
        if self._on_event is not None:
            self._on_event({"type": "profileChanged", "active": name})
        return True

    def pinned_models(self) -> frozenset[str]:
        """Local model ids the active profile pins: never to be evicted while it is active."""
        return pinned_models(self._plan, self._active_profile)

    def running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the router runs on, looked up once: asyncio's lookup asks the kernel
        for the process id on every call (fork safety), a system call per request."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def start(self) -> None:
        """Start handling events (those posted so far first) and the TTL ticker."""
        if not self._started:
            self._started = True
            self._ticker = asyncio.create_task(self._tick(), name="router-ttl")
            self._drain()

    @property
    def closing(self) -> bool:
        """True once shutdown began: new requests are refused."""
        return self._closing

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler the run loop feeds.  Replacing it (a hot reload that rebuilds it)
        starts a new generation: outcomes of swaps an earlier scheduler started are
        dropped on the loop, since only the scheduler that started a swap can tell which
        of its requests that swap answers (e.g. fifo's swaps released by an unload)."""
        return self._scheduler

    @scheduler.setter
    def scheduler(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._generation += 1

    async def acquire(
        self,
        model_id: str,
        *,
        on_position: Callable[[int], None] | None = None,
        on_admitted: Callable[[], None] | None = None,
    ) -> Lease:
        """Wait until the scheduler grants a request for `model_id` (a resolved local id).

        `on_admitted` is called (on the loop, at most once) when the scheduler has
        accepted the request: from then on it can fail only with an error that comes
        later (start failure, unload, shutdown), never 404 or 429, so a caller may wait
        for it before committing to a streamed answer.  A grant implies admission.

        Raises RouteFailure (404 unknown, 429 limit, 502 start failed, 503 health
        timeout / unloaded / shutting down).  If the caller is cancelled while
        waiting, the scheduler is told (the request never triggers a load), and
        a grant that raced with the cancellation is released at once.
        """
        if self._closing:
            raise RouteFailure(errors.shutting_down())
        future: asyncio.Future[Lease] = self.running_loop().create_future()
        request = Request(next(self._ids), model_id, self._clock())
        self.post(RequestArrived(request, future, on_position, on_admitted))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().release()
            else:
                self.post(RequestCancelled(request.id))
            raise

    async def unload(self, models: Sequence[str] | None = None) -> None:
        """Fail waiters for `models` (default: all), stop them; return once they exited.

        As in the Go original, the models are grouped by their unloadTimeout and the groups
        are stopped one after another, the smallest timeout first, the members of a group
        in parallel: quick models are gone before a slow one is waited for.
        """
        targets = tuple(models) if models is not None else tuple(sorted(self.processes))
        targets = tuple(m for m in targets if m in self.processes)
        if not targets:
            return
        error = (
            errors.model_unloaded(targets[0])
            if len(targets) == 1
            else RouteError(503, "model unloaded while the request waited")
        )
        groups: dict[float, list[str]] = {}
        for model in targets:
            groups.setdefault(self.unload_grace(model), []).append(model)
        for grace in sorted(groups):
            await self._unload_group(tuple(groups[grace]), error, grace)

    async def _unload_group(self, targets: tuple[str, ...], error: RouteError, grace: float) -> None:
        if not self._closing:
            self._evicted(targets, "unload")
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.post(UnloadRequested(targets, error, done))
            await done
        procs = [p for p in (self.processes.get(m) for m in targets) if p is not None]
        await asyncio.gather(*(p.stop(grace) for p in procs))

    async def shutdown(self, timeout: float) -> None:
        """Fail every waiter, stop every child within `timeout` s; idempotent."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._shutdown(timeout), name="router-shutdown")
        await asyncio.shield(self._shutdown_task)

    def running(self) -> list[dict[str, object]]:
        """`GET /running` records: processes not stopped, sorted by model id, with the
        fields (and state names) the Go original's UI and clients read."""
        out: list[dict[str, object]] = []
        for mid in sorted(self.processes):
            proc = self.processes[mid]
            if proc.state.occupies_memory:
                m = proc.model
                out.append(
                    {
                        "model": mid,
                        "state": str(proc.state),
                        "cmd": shlex.join(m.cmd),
                        "proxy": m.proxy,
                        "ttl": m.ttl,
                        "name": m.name,
                        "description": m.description,
                    }
                    | ({"resources": dict(m.resources)} if m.resources else {})
                )
        return out

    # -- the budget router (runtime/engine/observed.py holds its state) --------------

    def set_pinned(self, models: frozenset[str]) -> None:
        """Pin `models` (e.g. the active profile's): no eviction policy evicts them where
        it has a choice.  Replaces the previous set; the plan's own pins (persistent
        groups) always apply.  Safe to call from any task on the loop's thread."""
        self.post(PinsChanged(frozenset(models)))

    def budget_usage(self) -> BudgetUsage | None:
        """The budget and what the loaded models use of it, by their declared sizes
        (for /running, /api/events and /metrics); None unless the budget router is used."""
        budget = self.plan.routing.budget
        if self.plan.routing.router != "budget" or budget is None:
            return None
        loaded = [m for m, p in self.processes.items() if p.state.occupies_memory]
        return budget_usage(budget, self.plan.models, loaded)

    @property
    def evictions(self) -> Mapping[str, int]:
        """Evictions since start by reason (maxLoaded, a resource, probe:<resource>,
        group, matrix)."""
        return self.observations.evictions

    def in_flight(self, model: str) -> int:
        return self.scheduler.in_flight(model)

    async def apply_plan(self, new_plan: Plan) -> PlanDiff:
        """Hot-swap the plan on the run loop (runtime/engine/hotswap.py); returns the diff
        applied.  Raises (and changes nothing) when the plan cannot be applied."""
        done: asyncio.Future[PlanDiff] = asyncio.get_running_loop().create_future()
        self.post(PlanApplied(new_plan, done))
        return await done

    # ------------------------------------------------------------------ for hot swap
    # (with `plan`, `processes`, `scheduler`, `closing` and `grant_error`: hotswap.HotSwapHost)

    @property
    def health_check_timeout(self) -> float:
        """Seconds a start may take under the running plan (its healthCheckTimeout, or
        DEFAULT_HEALTH_TIMEOUT when that is not positive)."""
        t = self.plan.settings.healthCheckTimeout
        return float(t) if t > 0 else DEFAULT_HEALTH_TIMEOUT

    def new_process(self, model: Model, log: LogBuffer | None = None) -> ModelProcess:
        """A stopped process for `model` whose state changes come back to the loop as
        `StateChanged`; `log` defaults to a fresh buffer feeding the upstream log."""
        return ModelProcess(
            model,
            health_check_timeout=self.health_check_timeout,
            log=log if log is not None else LogBuffer(model.id, parent=self.upstream_log),
            on_state_change=self._state_callback,
            secrets=secrets_of(self.plan),
        )

    def waiting_requests(self) -> list[Request]:
        """The requests not answered yet, in arrival order (request ids only grow)."""
        return [self._waiters[rid].request for rid in sorted(self._waiters)]

    def is_waiting(self, request_id: int) -> bool:
        return request_id in self._waiters

    def queue_snapshot(self) -> QueueSnapshot:
        """The scheduler's queue, loads and in-flight counts now (a frozen copy)."""
        return self.scheduler.snapshot()

    def state_age(self, model: str) -> float | None:
        """Seconds since the run loop saw `model` change state (None: not since startup);
        the UI shows a load's elapsed time with it."""
        since = self._state_since.get(model)
        return None if since is None else max(0.0, self._clock() - since)

    def idle_for(self, model: str) -> float | None:
        """Seconds since `model` last served or became ready (what its ttl counts)."""
        used = self._last_use.get(model)
        return None if used is None else max(0.0, self._clock() - used)

    def waited(self, request_id: int) -> float | None:
        """Seconds a request still waiting has waited since it arrived (None: not waiting)."""
        arrived = self._arrived.get(request_id)
        return None if arrived is None else max(0.0, self._clock() - arrived)

    def post(self, event: Event) -> None:
        """Hand `event` to the run loop: handled before this returns, after the events
        posted before it (see the module docstring).  After shutdown was handled nothing
        is (a caller still awaiting a future was answered by the shutdown)."""
        if self._exited:
            return
        self._pending.append(event)
        if self._started and not self._handling:
            self._drain()

    def spawn(self, work: Coroutine[object, None, None], name: str) -> asyncio.Task[None]:
        """Run `work` as a tracked task: cancelled and awaited at shutdown, never lost."""
        task = self.running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ Effects

    def model_state(self, model: str) -> ProcessState | None:
        """The model's state as the scheduler must see it before deciding on a request:
        polled, so a child that has just died is STOPPED (and is restarted), not a READY
        server a request would be granted to."""
        proc = self.processes.get(model)
        return None if proc is None else proc.poll()

    def running_models(self) -> Sequence[str]:
        return sorted(m for m, p in self.processes.items() if p.state.occupies_memory)

    def start_swap(self, model: str, evict: tuple[str, ...]) -> None:
        log.debug("swap: starting %s%s", model, f", stopping {', '.join(evict)}" if evict else "")
        # Swaps to one model run one after another, so their SwapDone events arrive in the
        # order they were started: a scheduler that released a swap (unload) can tell its
        # late outcome from the outcome of a swap started after it.
        self._evicted(evict, "swap")
        previous = self._swaps.get(model)
        task = self.spawn(
            self._swap(model, evict, previous, self._generation), f"swap:{model}"
        )
        self._swaps[model] = task
        task.add_done_callback(
            lambda t: self._swaps.pop(model) if self._swaps.get(model) is t else None
        )

    def grant_admission(self, request: Request) -> bool:
        waiter = self._waiters.get(request.id)
        if waiter is None or waiter.future.done():
            self._take_waiter(request.id)  # gone: the scheduler drops it
            return False
        if waiter.on_admitted is not None and request.id not in self._admitted:
            # a hot reload hands waiting requests to a new scheduler, which admits them again
            self._admitted.add(request.id)
            try:
                waiter.on_admitted()
            except Exception:
                log.exception("admission callback failed")
        return True

    def grant_serve(self, request: Request) -> bool:
        waiter = self._take_waiter(request.id)
        if waiter is None or waiter.future.done():
            return False
        waiter.future.set_result(Lease(self.processes[request.model].model, self.post))
        self._last_use[request.model] = self._clock()
        self._leased += 1
        self._inflight_changed = True  # emitted after the scheduler has counted the grant
        return True

    def grant_error(self, request: Request, error: RouteError) -> None:
        waiter = self._take_waiter(request.id)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_exception(RouteFailure(error))

    def stop_processes(self, models: tuple[str, ...]) -> None:
        # The scheduler stops models for unloads and ttl expiry: each gets its unloadTimeout.
        for model in models:
            if model in self.processes:
                self.spawn(self._stop(model, self.unload_grace(model)), f"stop:{model}")

    def unload_grace(self, model: str) -> float:
        """Seconds `model` may take to stop on an unload or ttl expiry (its unloadTimeout)."""
        proc = self.processes.get(model)
        if proc is not None:
            return float(proc.model.unloadTimeout)
        return float(self.plan.settings.unloadTimeout)

    def queue_positions(self, positions: Mapping[int, int]) -> None:
        for request_id, position in positions.items():
            waiter = self._waiters.get(request_id)
            if waiter is not None and waiter.on_position is not None:
                try:
                    waiter.on_position(position)
                except Exception:
                    log.exception("queue position callback failed")

    def observe(self) -> Observed:
        if self._pins_of[0] is not self.plan:  # the plan's own pins, once per plan
            self._pins_of = (self.plan, pinned_by_plan(self.plan))
        return self.observations.observe(self._last_use, self._pins_of[1])

    def run_probes(self, resources: tuple[str, ...]) -> None:
        budget = self.plan.routing.budget
        commands = budget.probes if budget is not None else {}
        self.observations.start_probes(
            resources, commands, self.spawn, lambda results: self.post(ProbesDone(results))
        )

    def evicting(self, target: str, evicted: tuple[Evicted, ...]) -> None:
        self.observations.note_evictions(target, evicted)

    # ------------------------------------------------------------------ the run loop

    def _drain(self) -> None:
        """Handle the pending events in order, including those posted meanwhile; the only
        caller of `_process`.  Not re-entered: a `post` made while handling only queues."""
        self._handling = True
        try:
            while self._pending and not self._exited:
                if self._process(self._pending.popleft()):
                    self._exited = True
                    self._pending.clear()  # as a stopped queue reader would leave them
        finally:
            self._handling = False

    def _process(self, event: Event) -> bool:
        """Handle one event (only `_drain` calls this); True to exit."""
        try:
            if self._handle(event):
                return True
            self._hotswap.after_event()  # advance processes draining after a reload
        except Exception:  # a bug; keep serving rather than hang every caller
            log.exception("router: error handling %r", event)
            future = _future_of(event)
            if future is not None and not future.done():
                future.set_exception(RouteFailure(RouteError(500, "internal router error")))
        finally:
            if self._inflight_changed:
                self._inflight_changed = False
                self._emit_inflight()
        return False

    def _handle(self, event: Event) -> bool:
        """Apply one event; True when the loop must exit."""
        sched = self.scheduler
        match event:
            case RequestArrived():
                self._on_request_arrived(event)
            case RequestCancelled(request_id=rid):
                if self._take_waiter(rid) is not None:
                    sched.on_cancel(rid)
            case SwapDone():
                self._on_swap_done(event)
            case ServeDone(model=model):
                log.debug("serve done: %s", model)
                self._last_use[model] = self._clock()
                self._leased -= 1
                self._inflight_changed = True
                sched.on_serve_done(model)
            case ProcessStopped(model=model):
                sched.on_process_stopped(model)
            case StateChanged(model=model, old=old, new=new):
                self._on_state_changed(model, old, new)
            case TtlTick():
                self._check_ttl()
                budget = self.plan.routing.budget
                if budget is not None and budget.probes:  # probe results age out
                    sched.on_conditions_changed()
            case ProbesDone(results=results):
                self.observations.store(results)
                sched.on_conditions_changed()
            case PinsChanged(models=models):
                self.observations.pinned = models
                sched.on_conditions_changed()
            case UnloadRequested(models=models, error=error, done=done):
                sched.on_unload(models, error)
                _resolve(done, None)
            case PlanApplied():
                self._on_plan_applied(event)
            case ShutdownRequested():
                self._on_shutdown_requested(event)
                return True
        return False

    def _on_request_arrived(self, event: RequestArrived) -> None:
        future = event.future
        if self._closing:
            if not future.done():
                future.set_exception(RouteFailure(errors.shutting_down()))
        elif not future.done():  # a caller already gone never triggers a load
            self._waiters[event.request.id] = event
            self._arrived[event.request.id] = self._clock()
            self.scheduler.on_request(event.request)

    def _on_swap_done(self, event: SwapDone) -> None:
        if event.error is not None:
            log.warning("swap: %s failed: %s", event.model, event.error.message)
        if isinstance(event, StampedSwapDone) and event.generation != self._generation:
            log.debug("swap: dropping the outcome of a swap to %s that a replaced "
                      "scheduler started", event.model)
        else:
            self.scheduler.on_swap_done(event.model, event.error)

    def _on_plan_applied(self, event: PlanApplied) -> None:
        """Runs on the loop, so hot swap may replace `self.plan`, add, stop or replace
        processes and rebuild the scheduler in one step without locks."""
        try:
            diff = self._hotswap.replace_plan(event.plan)
        except Exception as exc:  # reported to the caller of apply_plan; nothing changed
            if not event.done.done():
                event.done.set_exception(exc)
        else:
            _resolve(event.done, diff)

    def _on_shutdown_requested(self, event: ShutdownRequested) -> None:
        self._closing = True
        self.scheduler.on_shutdown(event.error)
        for waiter in self._waiters.values():  # belt and braces: nobody waits forever
            if not waiter.future.done():
                waiter.future.set_exception(RouteFailure(event.error))
        self._waiters.clear()
        self._admitted.clear()
        self._arrived.clear()
        _resolve(event.done, None)

    def _on_state_changed(self, model: str, old: ProcessState, new: ProcessState) -> None:
        log.debug("process %s: %s -> %s", model, old, new)
        self._state_since[model] = self._clock()
        self.observations.forget_probes()
        if new is ProcessState.READY:
            self._last_use[model] = self._clock()
        if old is ProcessState.READY and new is ProcessState.STOPPED:
            log.warning("process %s exited unexpectedly", model)
            self.scheduler.on_process_stopped(model)
        if self._on_event is not None:
            self._on_event({"type": "state", "model": model, "old": str(old), "new": str(new)})

    def _check_ttl(self) -> None:
        now = self._clock()
        for mid, proc in self.processes.items():
            ttl = proc.model.ttl
            if (
                ttl > 0
                and proc.state is ProcessState.READY
                and self.scheduler.in_flight(mid) == 0
                and now - self._last_use.get(mid, 0.0) > ttl
            ):
                log.info("unloading model %s, TTL of %ss reached", mid, ttl)
                self._evicted((mid,), "ttl")
                self.scheduler.on_ttl_expired(mid)

    # ------------------------------------------------------------------ tasks

    async def _swap(
        self,
        model: str,
        evict: tuple[str, ...],
        previous: asyncio.Task[None] | None = None,
        generation: int = 0,
    ) -> None:
        error: RouteError | None = None
        try:
            if previous is not None and not previous.done():
                await asyncio.wait({previous})  # see start_swap: one swap per model at a time
            grace = STOP_GRACE
            # A hot reload may have dropped a process entry meanwhile: skip it.
            stopping = [p for p in (self.processes.get(m) for m in evict) if p is not None]
            if stopping:
                await asyncio.gather(*(p.stop(grace) for p in stopping))
            target = self.processes.get(model)
            if target is None:
                raise RouteFailure(errors.unknown_model(model))
            await target.start()
        except RouteFailure as exc:
            error = exc.error
        except Exception as exc:  # spawn trouble the process layer did not classify
            log.exception("swap to %s failed", model)
            error = errors.start_failed(model, f"{type(exc).__name__}: {exc}")
        self.post(StampedSwapDone(model, error, generation))

    async def _stop(self, model: str, grace: float) -> None:
        try:
            proc = self.processes.get(model)
            if proc is not None:
                await proc.stop(grace)
        finally:
            self.post(ProcessStopped(model))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_interval)
            self.post(TtlTick())

    async def _shutdown(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + max(timeout, 0.001)
        self._closing = True
        await self._stop_run_loop()
        stops = await self._shutdown_processes(timeout, deadline)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *stops, return_exceptions=True)

    async def _stop_run_loop(self) -> None:
        """Stop the TTL ticker; let the loop fail every waiter and exit."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._started and not self._exited:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.post(ShutdownRequested(errors.shutting_down(), done))
            await done

    async def _shutdown_processes(
        self, timeout: float, deadline: float
    ) -> list[asyncio.Task[None]]:
        """Stop every process by `deadline`, SIGKILLing what is left then; returns the
        stop tasks (finished or cancelled) for the caller to await."""
        grace = max(0.001, timeout * 0.8)
        stops = [asyncio.ensure_future(p.shutdown(grace)) for p in self.processes.values()]
        if not stops:
            return stops
        left = max(0.001, deadline - asyncio.get_running_loop().time())
        _, pending = await asyncio.wait(stops, timeout=left)
        if pending:
            # Out of time: kill what is left ourselves rather than leave it to the
            # parent-death signal and the orphan guard, then let the stops reap it.
            log.warning("shutdown: %d process(es) did not stop within %.1fs: SIGKILL",
                        len(pending), timeout)
            for proc in self.processes.values():
                proc.kill()
            _, pending = await asyncio.wait(pending, timeout=KILL_REAP_WAIT)
        for task in pending:
            log.warning("shutdown: a process was not reaped %.1fs after SIGKILL", KILL_REAP_WAIT)
            task.cancel()
        return stops

    # ------------------------------------------------------------------ helpers

    def _take_waiter(self, request_id: int) -> RequestArrived | None:
        """Forget a waiter (answered, cancelled or gone); returns it if it was waiting."""
        self._admitted.discard(request_id)
        self._arrived.pop(request_id, None)
        return self._waiters.pop(request_id, None)

    def _state_callback(self, model: str, old: ProcessState, new: ProcessState) -> None:
        self.post(StateChanged(model, old, new))

    def _evicted(self, models: Sequence[str], reason: str) -> None:
        """Tell listeners which running models are being stopped, and why (`/metrics`)."""
        if self._on_event is None:
            return
        for model in models:
            proc = self.processes.get(model)
            if proc is not None and proc.state.occupies_memory:
                self._on_event({"type": "evict", "model": model, "reason": reason})

    def _emit_inflight(self) -> None:
        if self._on_event is not None:
            self._on_event({"type": "inflight", "total": self._leased})


# What a caller awaits for the events that carry a future.
CallerFuture = asyncio.Future[Lease] | asyncio.Future[None] | asyncio.Future[PlanDiff]


def _future_of(event: Event) -> CallerFuture | None:
    """The future a caller awaits for `event`, if it carries one."""
    match event:
        case RequestArrived(future=future):
            return future
        case UnloadRequested(done=done) | ShutdownRequested(done=done):
            return done
        case PlanApplied(done=done):
            return done
    return None


def _resolve(future: asyncio.Future[_T], value: _T) -> None:
    """Answer a caller's future unless the caller already left (cancelled it)."""
    if not future.done():
        future.set_result(value)
