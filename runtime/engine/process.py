"""One upstream model server as a child process: spawn, health-check, stop, watch.

Why this module exists: it is the only place that touches the operating system's process
machinery for model servers, so the router can treat a model as a small state machine
(`ProcessState`) with three coroutines: `start`, `stop`, `shutdown`.

Invariants:
- states move stopped -> starting -> ready -> stopping -> stopped (a failed or aborted start
  goes starting -> stopped or starting -> stopping -> stopped); `shutdown` is terminal.
  `on_state_change(model_id, old, new)` is called synchronously for every transition.
- the child runs `model.cmd` (no shell) with os.environ + `model.env`, in its own session and
  process group, and (on Linux) dies with SIGKILL if the thread that spawned it dies (spawned
  by vfork where runtime/engine/spawn.py can, not by a fork of the whole proxy); its
  whole group (a wrapper's forked server included) is registered with the orphan guard
  (runtime/engine/orphans.py), which kills it if llama-swap dies without stopping it;
- its whole process tree is marked (`LLAMA_SWAP_TREE=<token>` in the environment it
  inherits), so a descendant that left the group (`setsid`) is signalled with it, killed
  once it exited, and killed by the orphan guard;
- its stdout and stderr go, merged and decoded, into a per-run buffer that feeds `self.log`
  (a cmdStop's into one of its own); runtime notes about the child ("started pid", "exited
  with code", "still alive ... SIGKILL") are written to `self.log` directly, as a different
  writer, so a note never continues a line the child (or cmdStop) left unfinished;
- when the child (the group leader) exits, whatever is left of its process group and its
  marked tree is killed,
  and pipes still held open by an escaped descendant are closed after `PIPE_DRAIN` seconds,
  so neither `stop()` nor a failed `start()` can hang on them;
- at most one start and one stop run at a time; concurrent callers join them;
- `kill()` SIGKILLs at once whatever this model still has alive (its server's group and a
  running `cmdStop`'s group): the last resort of a shutdown that ran out of time.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import itertools
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.auth import inherited_env, redact
from llama_swap.runtime.core.errors import RouteError, RouteFailure, health_timeout, start_failed
from llama_swap.runtime.core.process_state import ProcessState
from llama_swap.runtime.engine import spawn
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.orphans import GUARD_INSTANCE, TREE_VAR, marked_pids

_log = logging.getLogger(__name__)

StateCallback = Callable[[str, ProcessState, ProcessState], None]
Note = Callable[[str], None]  # writes one runtime note (a line of its own) to the model log

PIPE_DRAIN = 1.0  # seconds to wait for pipe EOF after the child exited
TAIL_LINES = 10  # log lines quoted in a start-failure error
START_GRACE = 5.0  # grace used when a failed health check kills the child
PORT_PROBE_TIMEOUT = 0.5  # seconds a "is the model's port already taken?" connect may take
# `poll` asks the kernel at most this often (seconds) per model.  The router asks before
# every request; at thousands a second the waitid call alone was ~5 % of the proxy's CPU.
# A child that died within this long of the last look is treated like one that dies just
# after it: the request it is granted fails as it would have anyway.
EXIT_POLL_INTERVAL = 0.001
FAST_POLL = 0.002  # seconds between health polls early in a start (see next_poll_delay)
FAST_POLL_WINDOW = 0.25  # seconds after the spawn during which FAST_POLL applies


def next_poll_delay(attempt: int, elapsed: float) -> float:
    """Seconds to wait before health poll number `attempt + 1` (attempt 0 is immediate).

    Every 2 ms for the first 250 ms: a small model's server is up in 15-30 ms, and a swap
    is that start plus the time until the proxy notices, so a coarser poll is what a swap
    would be measured by (a 5/10/20 ms backoff took ~15 ms longer than the server did).
    A refused connection costs well under a millisecond, so this costs at most ~125
    polls.  Then 5 ms doubling up to 25 ms, so a server up in the first seconds is seen
    within ~25 ms of listening; a slow loader is polled more gently: every 100 ms after
    5 s, every 250 ms after 30 s.
    """
    if attempt <= 0:
        return 0.0
    if elapsed < FAST_POLL_WINDOW:
        return FAST_POLL
    cap = 0.025 if elapsed < 5.0 else 0.1 if elapsed < 30.0 else 0.25
    return min(0.005 * 2.0 ** (attempt - 1), cap)


def build_env(
    extra: Sequence[str], base: Mapping[str, str] | None = None, secrets: Sequence[str] = ()
) -> dict[str, str]:
    """os.environ (or `base`) without the variables holding one of `secrets` (the
    proxy's API keys: a config often reads them with `${env.NAME}`, and a model server
    has no business with them), plus `NAME=value` entries; later duplicates win.  The
    model's own entries are the config author's choice and are never filtered."""
    env = inherited_env(os.environ if base is None else base, secrets)
    for item in extra:
        name, sep, value = item.partition("=")
        if sep and name:
            env[name] = value
    return env


def resolve_argv(argv: Sequence[str]) -> list[str]:
    """argv with argv[0] resolved through the runtime's PATH (unchanged if it has a slash)."""
    args = list(argv)
    if args and os.sep not in args[0]:
        found = shutil.which(args[0])
        if found:
            args[0] = found
    return args


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGKILL the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Feeds pipe output into a LogBuffer; reports exit separately from pipe closure.

    asyncio's `Process.wait()` in 3.11 waits for the pipes too, which a forked grandchild can
    hold open forever; this protocol lets the owner see the exit at once.
    """

    def __init__(self, log: LogBuffer):
        loop = asyncio.get_running_loop()
        self.log = log
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._decoders: dict[int, codecs.IncrementalDecoder] = {}

    def _decoder(self, fd: int) -> codecs.IncrementalDecoder:
        dec = self._decoders.get(fd)
        if dec is None:
            dec = self._decoders[fd] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return dec

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        text = self._decoder(fd).decode(data) if isinstance(data, bytes) else data
        if text:
            self.log.write(text)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        tail = self._decoder(fd).decode(b"", final=True)
        if tail:
            self.log.write(tail)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.pipes_closed.done():
            self.pipes_closed.set_result(None)


class _Child:
    """A spawned process: transport, protocol, pid, tree token, and the task that reaps it.

    Its notes go through `note`, not into its own output buffer: written there, a note
    would be the same writer as the child and continue its unfinished last line."""

    def __init__(
        self,
        transport: asyncio.SubprocessTransport | spawn.PidfdTransport,
        proto: _ChildProtocol,
        token: str,
        note: Note,
    ):
        self.transport = transport
        self.proto = proto
        self.note = note
        self.pid: int = transport.get_pid()
        self.token = token
        self.returncode: int | None = None
        # its group and marked tree die with llama-swap, even if SIGKILLed
        GUARD_INSTANCE.track(self.pid, token)
        self.reaped: asyncio.Task[int] = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> int:
        await self.proto.exited
        code = self.transport.get_returncode()
        self.returncode = -1 if code is None else code
        self._kill_leftovers()
        GUARD_INSTANCE.forget(self.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.proto.pipes_closed), PIPE_DRAIN)
        if not self.proto.pipes_closed.done():
            self.note(f"pid {self.pid}: closing output pipes held open by a descendant")
        self.transport.close()
        return self.returncode

    @property
    def alive(self) -> bool:
        return not self.proto.exited.done()

    def exit_code(self) -> int | None:
        """The exit code if the child has exited, None while it runs; never blocks.

        Unlike `alive`, this asks the kernel, so it also sees an exit the event loop has
        not processed yet (the loop learns of exits a few callbacks later).  It does not
        reap: reaping stays with asyncio's child watcher.
        """
        if not self.alive:
            return self.returncode if self.returncode is not None else -1
        code = self.transport.get_returncode()
        if code is not None:
            return code
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped by the child watcher; the loop hears of it soon
            return -1
        if info is None:
            return None
        # The leader is an unreaped zombie, so its group id cannot have been reused yet:
        # kill what is left of the group now rather than when the loop reaps it.
        self._kill_leftovers()
        if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
            return -info.si_status
        return info.si_status

    def signal(self, sig: int) -> None:
        """Signal the group, and the marked descendants outside it (each process once: a
        server may treat a second SIGTERM as "quit now")."""
        if self.alive:
            _signal_group(self.pid, sig, fallback=True)
            for pid in marked_pids(self.token):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(pid) != self.pid:
                        os.kill(pid, sig)

    def _kill_leftovers(self) -> None:
        """The leader exited: SIGKILL what is left of its group and of its marked tree."""
        _signal_group(self.pid, signal.SIGKILL)
        for pid in marked_pids(self.token):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    async def kill_after(self, grace: float) -> int:
        """Wait up to `grace` s for the exit, then SIGKILL the group; return the exit code."""
        if self.alive:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proto.exited), max(0.0, grace))
        if self.alive:
            self.note(f"pid {self.pid} still alive after {grace:g}s: SIGKILL")
            self.signal(signal.SIGKILL)
        return await asyncio.shield(self.reaped)


def _signal_group(pgid: int, sig: int, *, fallback: bool = False) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        if fallback:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pgid, sig)
    except PermissionError:  # pragma: no cover - the group id was reused by someone else
        pass


async def _spawn(
    argv: Sequence[str], env: Mapping[str, str], log: LogBuffer, note: Note
) -> _Child:
    """Start `argv`; its output goes to `log`, the runtime's notes about it to `note`."""
    loop = asyncio.get_running_loop()
    token = f"{_TREE_PREFIX}{next(_tree_ids)}"
    env = {**env, TREE_VAR: token}
    if spawn.available():  # vfork, not a fork of the whole proxy (see runtime/engine/spawn.py)
        proto = _ChildProtocol(log)
        fast = await spawn.spawn(resolve_argv(argv), env, proto)
        return _Child(fast, proto, token, note)
    transport, proto = await loop.subprocess_exec(
        lambda: _ChildProtocol(log),
        *resolve_argv(argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
        preexec_fn=_PREEXEC,
    )
    return _Child(transport, proto, token, note)


_PREEXEC = _pdeathsig_preexec()
# Tree tokens: unique per spawn, and unlike any other llama-swap's on the machine.
_TREE_PREFIX = f"{os.getpid()}.{uuid.uuid4().hex[:8]}."
_tree_ids = itertools.count(1)


class ModelSlot(Protocol):
    """What the router holds per model and what it, the HTTP layer and hot swap use of it.

    Usually a `ModelProcess`; while a hot reload drains a model's old process, a
    `runtime.engine.hotswap.ReplacingProcess` that serves from the old process and
    starts the new definition once the old one has exited.
    """

    model: Model  # the definition new requests are served with
    health_check_timeout: float  # for the next start

    @property
    def state(self) -> ProcessState: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def log(self) -> LogBuffer: ...

    def poll(self) -> ProcessState:
        """The state, after noticing an exit the event loop has not processed yet."""

    async def start(self) -> None:
        """Make the model READY; raises RouteFailure when it cannot be."""

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the child and return once it has exited."""

    async def shutdown(self, grace: float) -> None:
        """Stop, then refuse every later start."""

    def kill(self) -> None:
        """SIGKILL whatever is still alive, now."""


class ModelProcess:
    """One model's upstream server process and its lifecycle (a `ModelSlot`)."""

    def __init__(
        self,
        model: Model,
        *,
        health_check_timeout: float,
        log: LogBuffer,
        on_state_change: StateCallback | None = None,
        secrets: Sequence[str] = (),
    ):
        self.model = model
        self.secrets = tuple(secrets)  # kept out of the child's environment and the log
        self.health_check_timeout = health_check_timeout
        self.log = log
        self.on_state_change = on_state_change
        self.state = ProcessState.STOPPED
        self.pid: int | None = None
        self._child: _Child | None = None
        self._polled_at = float("-inf")  # time.monotonic() of poll's last look (see poll)
        self._stopper: _Child | None = None  # a running cmdStop
        self._start_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._abort: asyncio.Event | None = None

    # -- public API ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Make the model READY (idempotent); raises RouteFailure when it cannot be."""
        while True:
            if self.state is ProcessState.READY:
                return
            if self.state is ProcessState.SHUTDOWN:
                raise RouteFailure(RouteError(503, f"[{self.model.id}] shutdown"))
            if self.state is ProcessState.STOPPING and self._stop_task is not None:
                await asyncio.shield(self._stop_task)
                continue
            if self.state is ProcessState.STARTING and self._start_task is not None:
                await asyncio.shield(self._start_task)
                return
            self._abort = asyncio.Event()
            self._set_state(ProcessState.STARTING)
            self._start_task = asyncio.get_running_loop().create_task(self._run_start(self._abort))
            self._start_task.add_done_callback(_consume_exception)
            await asyncio.shield(self._start_task)
            return

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the child (idempotent) and return once it has exited; aborts a start."""
        if self.state in (ProcessState.STOPPED, ProcessState.SHUTDOWN):
            return
        if self.state is not ProcessState.STOPPING or self._stop_task is None:
            if self.state is ProcessState.STARTING and self._abort is not None:
                self._abort.set()
            self._set_state(ProcessState.STOPPING)
            self._stop_task = asyncio.get_running_loop().create_task(self._run_stop(grace))
            self._stop_task.add_done_callback(_consume_exception)
        # return after THIS stop: looping could abort a start that began right after it
        await asyncio.shield(self._stop_task)

    async def shutdown(self, grace: float) -> None:
        """Stop, then enter the terminal SHUTDOWN state (later starts fail with 503)."""
        while self.state is not ProcessState.SHUTDOWN:
            await self.stop(grace)
            if self.state is ProcessState.STOPPED:
                self._set_state(ProcessState.SHUTDOWN)

    def kill(self) -> None:
        """SIGKILL the process groups of the server and of a running cmdStop, now.

        For a shutdown out of time: a stop in progress then sees the exits and finishes
        (and reaps them) promptly instead of waiting out its grace periods."""
        for child in (self._child, self._stopper):
            if child is not None and child.alive:
                self._note(f"pid {child.pid} still alive at the shutdown deadline: SIGKILL")
                child.signal(signal.SIGKILL)

    def poll(self) -> ProcessState:
        """The state, after noticing an exit of a READY child that `_watch` has not seen yet.

        The router asks this before it lets the scheduler decide on a request: a child
        that died a moment ago still looks READY until the loop processes its exit, and a
        request granted to it would fail with "connection refused" instead of restarting
        the model.  Seen here, the exit is handled as any unexpected exit (READY -> STOPPED).
        """
        child = self._child
        if self.state is ProcessState.READY and child is not None:
            now = time.monotonic()
            if now - self._polled_at < EXIT_POLL_INTERVAL:
                return self.state
            self._polled_at = now
            code = child.exit_code()
            if code is not None:
                self._exited_unexpectedly(child, code)
        return self.state

    def __repr__(self) -> str:
        return f"<ModelProcess {self.model.id} {self.state.value} pid={self.pid}>"

    # -- internals ----------------------------------------------------------------------------
    def _set_state(self, new: ProcessState) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        if self.on_state_change is not None:
            try:
                self.on_state_change(self.model.id, old, new)
            except Exception:  # a listener's bug must not corrupt the state machine
                _log.exception("on_state_change listener failed for %s", self.model.id)

    def _argv_text(self, argv: Sequence[str]) -> str:
        """A command line for the log, with any configured key in it redacted."""
        return redact(_argv_text(argv), self.secrets)

    def _note(self, message: str) -> None:
        self.log.write(f"[llama-swap] [{self.model.id}] {message}\n")

    async def _run_start(self, abort: asyncio.Event) -> None:
        try:
            await self._start_child(abort)
        except RouteFailure:
            raise
        except BaseException:
            # a bug or a cancelled loop: never leave a half-started child or a STARTING state
            child = self._child
            if child is not None and self.state is ProcessState.STARTING:
                child.signal(signal.SIGKILL)
            self._fail_start()
            raise

    async def _start_child(self, abort: asyncio.Event) -> None:
        model = self.model
        t0 = time.monotonic()
        if not model.cmd:
            self._fail_start()
            raise RouteFailure(start_failed(model.id, "empty command"))
        # this run's own output, forwarded to the model log: the tail quoted in a start
        # failure must not show lines of an earlier run
        run_log = LogBuffer(f"{model.id}#run", capacity=16 * 1024, parent=self.log)
        taken = await _port_taken(model.proxy)
        if taken is not None:
            detail = _port_taken_detail(taken, "before the model was started")
            self._note(detail)
            self._fail_start()
            raise RouteFailure(start_failed(model.id, detail))
        try:
            child = await _spawn(model.cmd, build_env(model.env, secrets=self.secrets), run_log, self._note)
        except (OSError, ValueError) as exc:
            detail = f"failed to start command '{self._argv_text(model.cmd)}': {exc}"
            self._note(detail)
            self._fail_start()
            raise RouteFailure(start_failed(model.id, detail)) from None
        self._child, self.pid = child, child.pid
        self._note(f"started pid {child.pid}: {self._argv_text(model.cmd)}")
        if abort.is_set():
            raise RouteFailure(RouteError(503, f"[{model.id}] aborted"))

        error = await self._wait_healthy(child, abort, run_log, t0)
        if error is not None:
            raise RouteFailure(error)
        if model.checkEndpoint.strip().lower() != "none":
            self._note(f"health ok after {(time.monotonic() - t0) * 1000:.0f} ms")
        self._set_state(ProcessState.READY)
        self._watch_task = asyncio.get_running_loop().create_task(self._watch(child))
        self._watch_task.add_done_callback(_consume_exception)

    async def _wait_healthy(
        self, child: _Child, abort: asyncio.Event, run_log: LogBuffer, t0: float
    ) -> RouteError | None:
        """None once healthy; otherwise the error (the child is stopped or being stopped)."""
        model = self.model
        if model.checkEndpoint.strip().lower() == "none":
            return RouteError(503, f"[{model.id}] aborted") if abort.is_set() else None
        aborted = asyncio.ensure_future(abort.wait())
        health = asyncio.ensure_future(self._poll_health(_health_url(model), t0))
        try:
            done, _ = await asyncio.wait(
                {aborted, health, child.reaped}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for fut in (aborted, health):
                if not fut.done():
                    fut.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fut
        if aborted in done:
            return RouteError(503, f"[{model.id}] aborted")
        healthy = health in done and health.result()
        if child.reaped in done or (healthy and child.exit_code() is not None):
            # An answer while our child is dead came from someone else on the port.
            code = await asyncio.shield(child.reaped)
            return await self._exited_while_starting(code, run_log)
        if healthy:
            return None
        return await self._health_timed_out(child)

    async def _exited_while_starting(self, code: int, run_log: LogBuffer) -> RouteError:
        """The child died before it was healthy: a 502 quoting its last output (and naming
        the port when another program listens there, the usual reason a server cannot bind)."""
        self._note(f"exited with code {code} while starting")
        self._fail_start()
        detail = f"upstream command exited prematurely with code {code}"
        taken = await _port_taken(self.model.proxy)
        if taken is not None:
            detail += "; " + _port_taken_detail(taken, "while the model was starting")
        tail = run_log.tail_lines(TAIL_LINES)
        if tail:
            detail += "; last output:\n" + "\n".join(tail)
        return start_failed(self.model.id, detail)

    async def _health_timed_out(self, child: _Child) -> RouteError:
        """The health deadline passed: kill the child ourselves (unless a stop() took over)."""
        self._note(f"health check timed out after {self.health_check_timeout:g}s")
        if self.state is ProcessState.STARTING:
            child.signal(signal.SIGTERM)
            await child.kill_after(START_GRACE)
            self._fail_start()
        return health_timeout(self.model.id, self.health_check_timeout)

    async def _poll_health(self, url: str, t0: float) -> bool:
        import aiohttp  # the runtime has it loaded already; keeps this module light to import

        deadline = t0 + self.health_check_timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2.0, sock_read=5.0)
        connector = aiohttp.TCPConnector(force_close=True, limit=1)
        loopback = _loopback_address(url)  # None: not a loopback address, no pre-check
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            attempt = 0
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return False
                delay = next_poll_delay(attempt, now - t0)
                if delay:
                    await asyncio.sleep(min(delay, deadline - now))
                attempt += 1
                if loopback is not None:
                    if not _accepts(loopback):
                        continue  # not listening yet: no HTTP request to make
                    loopback = None  # listening: from now on only the health GET decides
                try:
                    async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
                        async with session.get(url, allow_redirects=False) as resp:
                            await resp.read()
                            if resp.status == 200:
                                return True
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass

    def _fail_start(self) -> None:
        """A start ended without READY: go back to STOPPED (unless a stop() owns the state)."""
        if self.state is ProcessState.STARTING:
            self._child = None
            self.pid = None
            self._set_state(ProcessState.STOPPED)

    async def _watch(self, child: _Child) -> None:
        """Notice an exit nobody asked for: READY -> STOPPED."""
        code = await asyncio.shield(child.reaped)
        self._exited_unexpectedly(child, code)

    def _exited_unexpectedly(self, child: _Child, code: int) -> None:
        """`child` exited while READY (seen by `_watch` or `poll`, whichever is first)."""
        if self._child is child and self.state is ProcessState.READY:
            self._note(f"exited unexpectedly with code {code}")
            self._child = None
            self.pid = None
            self._set_state(ProcessState.STOPPED)

    async def _run_stop(self, grace: float) -> None:
        start = self._start_task
        if start is not None and not start.done():
            await asyncio.wait({start})  # the abort makes it return promptly
        child = self._child
        if child is not None:
            await self._terminate(child, grace)
        self._child = None
        self.pid = None
        self._set_state(ProcessState.STOPPED)

    async def _terminate(self, child: _Child, grace: float) -> None:
        stopper: _Child | None = None
        if child.alive:
            cmd_stop = self.model.cmdStop
            if cmd_stop:
                argv = [tok.replace("${PID}", str(child.pid)) for tok in cmd_stop]
                self._note(f"stopping pid {child.pid} with cmdStop: {self._argv_text(argv)}")
                stop_log = LogBuffer(f"{self.model.id}#stop", capacity=16 * 1024, parent=self.log)
                try:
                    stopper = self._stopper = await _spawn(
                        argv, build_env(self.model.env, secrets=self.secrets), stop_log, self._note
                    )
                except (OSError, ValueError) as exc:
                    self._note(f"cmdStop failed to start ({exc}); sending SIGTERM")
                    child.signal(signal.SIGTERM)
            else:
                self._note(f"stopping pid {child.pid} with SIGTERM")
                child.signal(signal.SIGTERM)
        code = await child.kill_after(grace)
        self._note(f"exited with code {code}")
        if stopper is not None:
            try:
                if stopper.alive:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(stopper.proto.exited), 1.0)
                stopper.signal(signal.SIGKILL)
                stop_code = await asyncio.shield(stopper.reaped)
            finally:
                self._stopper = None
            if stop_code != 0:
                self._note(f"cmdStop exited with code {stop_code}")


def _argv_text(argv: Sequence[str]) -> str:
    """argv as one shell-quoted log line."""
    return shlex.join(argv).replace("\n", "\\n")


async def _port_taken(proxy: str) -> str | None:
    """"host:port" of `proxy` if something already accepts connections there, else None.

    Why: a model server that cannot bind its port exits, but a health check on that port
    would be answered by whatever holds it (a second llama-swap using the same startPort,
    any other server) and requests would silently go there.  A connect probe, not a bind
    probe, because the proxy host need not be local.  A probe that times out counts as
    free: the start then fails or succeeds on its own merits.
    """
    parts = urlsplit(proxy)
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if not host:
        return None
    try:
        async with asyncio.timeout(PORT_PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"


def _loopback_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a plain-HTTP loopback `url`, else None."""
    parts = urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.scheme != "http" or host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return host, port


def _accepts(address: tuple[str, int]) -> bool:
    """Whether a loopback port accepts connections: a connect there is answered at once
    (refused or accepted), so this blocking call costs microseconds, where a refused
    health GET through aiohttp's connector costs a large share of a swap's CPU."""
    try:
        with socket.create_connection(address, timeout=0.05):
            return True
    except OSError:
        return False


def _port_taken_detail(address: str, when: str) -> str:
    return (
        f"another program is already listening on {address} ({when}); it would receive this "
        "model's requests. Stop it, or give this model a free port (for models using "
        "${PORT}, set startPort to a range no other server uses)"
    )


def _health_url(model: Model) -> str:
    endpoint = model.checkEndpoint.strip() or "/health"
    if not endpoint.startswith("/"):
        endpoint = "/" + endpoint
    return model.proxy.rstrip("/") + endpoint


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
