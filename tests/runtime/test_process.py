"""ModelProcess: one model server as a real child process (the fake upstream, or tiny scripts).

No mocks: every test spawns real processes on 127.0.0.1 and the fixture checks, after each
test, that no process of any group it started is left alive.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import psutil
import pytest
import pytest_asyncio

from llama_swap.compiler.plan import Model
from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.core.process_state import ProcessState as S
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.process import ModelProcess, next_poll_delay
from tests.e2e.procs import free_port

PY = sys.executable

# a child that ignores SIGTERM and says so once the handler is installed
# The handlers write with os.write: a print() from a handler that interrupts the main code's own
# print (the proxy may send SIGTERM as soon as it has read a line whose flush has not returned
# yet) raises "reentrant call" and the child dies instead of ignoring the signal.
IGNORES_SIGTERM = textwrap.dedent("""
    import os, signal, time
    signal.signal(signal.SIGTERM, lambda *a: os.write(1, b"got SIGTERM, ignoring\\n"))
    print("handler installed", flush=True)
    while True:
        time.sleep(1)
""")


def fake_model(mid: str = "m1", *args: str, port: int | None = None, **kw: object) -> Model:
    port = port or free_port()
    cmd = (PY, "-m", "llama_swap.runtime.fake_upstream", "--port", str(port), "--model", mid, *args)
    fields = {"cmdStop": None, "checkEndpoint": "/health", "ttl": 0, **kw}
    return Model(id=mid, cmd=cmd, proxy=f"http://127.0.0.1:{port}", **fields)  # type: ignore[arg-type]


def script_model(mid: str, code: str, **kw: object) -> Model:
    fields = {"cmd": (PY, "-c", code), "cmdStop": None, "checkEndpoint": "none", "ttl": 0,
              "proxy": "http://127.0.0.1:9", **kw}
    return Model(id=mid, **fields)  # type: ignore[arg-type]


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def said(p: ModelProcess, text: str) -> bool:
    """True once a line of the child's own output starts with `text`."""
    return re.search(rf"^{re.escape(text)}", p.log.history(), re.M) is not None


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


@dataclass
class Harness:
    """Builds ModelProcesses, records their state events, and cleans up after the test."""

    upstream: LogBuffer = field(default_factory=lambda: LogBuffer("upstream"))
    events: list[tuple[str, S, S]] = field(default_factory=list)
    procs: list[ModelProcess] = field(default_factory=list)
    extra_pids: list[int] = field(default_factory=list)

    def make(self, model: Model, health_check_timeout: float = 20.0) -> ModelProcess:
        proc = ModelProcess(
            model,
            health_check_timeout=health_check_timeout,
            log=LogBuffer(model.id, parent=self.upstream),
            on_state_change=lambda mid, old, new: self.events.append((mid, old, new)),
        )
        self.procs.append(proc)
        return proc

    def states(self, mid: str) -> list[S]:
        return [new for m, _, new in self.events if m == mid]

    def started_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"started pid (\d+)", self.upstream.history())]


@pytest_asyncio.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        for proc in harness.procs:
            await asyncio.wait_for(proc.shutdown(0.5), 15)
        leftovers = {pid: group_alive(pid) for pid in harness.started_pids()}
        for pid in [*harness.extra_pids, *(p for g in leftovers.values() for p in g)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not any(leftovers.values()), f"orphaned processes left behind: {leftovers}"


# -- start and readiness --------------------------------------------------------------------

async def test_start_reaches_ready_and_the_upstream_answers(h: Harness) -> None:
    import aiohttp

    p = h.make(fake_model("m1"))
    await p.start()
    assert p.state is S.READY and p.pid is not None
    assert h.states("m1") == [S.STARTING, S.READY]
    async with aiohttp.ClientSession() as s, s.get(p.model.proxy + "/v1/models") as r:
        body = await r.json()
    assert body["fake"]["pid"] == p.pid
    await until(lambda: "listening on" in p.log.history())  # pipe and socket race: wait
    log = p.log.history()
    assert f"started pid {p.pid}" in log and "health ok after" in log
    assert "listening on" in h.upstream.history()  # the model log feeds the upstream log

    await p.stop()
    assert h.states("m1") == [S.STARTING, S.READY, S.STOPPING, S.STOPPED]
    assert p.pid is None and "exited with code" in p.log.history()


async def test_a_custom_check_endpoint_is_polled(h: Harness) -> None:
    p = h.make(fake_model("m1", checkEndpoint="/v1/models"))
    await p.start()
    assert p.state is S.READY


async def test_check_endpoint_none_is_ready_once_spawned(h: Harness) -> None:
    p = h.make(script_model("s", "import time; time.sleep(30)"))
    await p.start()
    assert p.state is S.READY and pid_alive(p.pid or 0)
    await p.stop(grace=2)
    assert p.state is S.STOPPED


async def test_a_bare_command_name_is_found_through_path(h: Harness) -> None:
    p = h.make(script_model("s", "", cmd=("sleep", "30")))
    await p.start()
    assert p.state is S.READY
    # the pid may still be the launcher that sets the parent-death signal and execs the
    # command (runtime/engine/spawn.py): it becomes `sleep` without a new pid
    for _ in range(500):
        if psutil.Process(p.pid).name() == "sleep":
            break
        await asyncio.sleep(0.01)
    assert psutil.Process(p.pid).name() == "sleep"


async def test_concurrent_starts_join_one_start_and_start_when_ready_returns(h: Harness) -> None:
    p = h.make(fake_model("m1"))
    await asyncio.gather(p.start(), p.start(), p.start())
    pid = p.pid
    await p.start()
    assert p.pid == pid
    assert h.states("m1") == [S.STARTING, S.READY]
    assert len(h.started_pids()) == 1


async def test_model_env_is_added_to_the_inherited_environment(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWAP_TEST_INHERITED", "from-parent")
    code = "import os; print('env', os.environ['SWAP_TEST_INHERITED'], os.environ['SWAP_X'], flush=True)"
    p = h.make(script_model("s", code, env=("SWAP_X=first", "SWAP_X=second=with=equals")))
    await p.start()
    await until(lambda: said(p, "env "))
    assert said(p, "env from-parent second=with=equals")


def test_poll_delays_start_near_zero_and_back_off_to_a_cap() -> None:
    delays = [next_poll_delay(i, elapsed=0.5) for i in range(12)]
    assert delays[0] == 0.0 and delays[1] <= 0.005
    assert delays == sorted(delays) and max(delays) <= 0.025  # fast servers are seen fast
    early = [next_poll_delay(i, elapsed=0.05) for i in range(1, 12)]
    assert max(early) <= 0.002  # a small model's server (up in tens of ms) is seen at once
    slow = [next_poll_delay(50, elapsed=e) for e in (1.0, 10.0, 60.0)]
    assert slow == sorted(slow) and slow[0] < slow[-1] <= 0.25  # slow loaders polled gently


# -- start failures -------------------------------------------------------------------------

async def test_exit_during_start_fails_at_once_with_the_last_output_and_502(h: Harness) -> None:
    p = h.make(fake_model("bad", "--fail", "exit-on-start"), health_check_timeout=60)
    with pytest.raises(RouteFailure) as info:
        await asyncio.wait_for(p.start(), 20)  # far below the 60 s health timeout
    err = info.value.error
    assert err.status == 502
    assert "[bad] start failed" in err.message and "exited prematurely with code 1" in err.message
    assert "failed to load the model (exit-on-start)" in err.message
    assert p.state is S.STOPPED and p.pid is None
    assert h.states("bad") == [S.STARTING, S.STOPPED]


async def test_failure_tail_quotes_only_this_runs_output(h: Harness) -> None:
    p = h.make(script_model("s", "import sys; print('run output', flush=True); sys.exit(2)",
                            checkEndpoint="/health"))
    p.log.write("an earlier run's line\n")
    with pytest.raises(RouteFailure) as info:
        await p.start()
    assert "\nrun output" in info.value.error.message
    assert "earlier run" not in info.value.error.message


async def test_a_command_that_cannot_be_spawned_fails_with_502(h: Harness) -> None:
    p = h.make(script_model("s", "", cmd=("no-such-binary-for-swap-tests", "--x")))
    with pytest.raises(RouteFailure) as info:
        await p.start()
    assert info.value.error.status == 502
    assert "failed to start command 'no-such-binary-for-swap-tests --x'" in info.value.error.message
    assert p.state is S.STOPPED


async def test_never_healthy_times_out_with_503_and_the_child_is_killed(h: Harness) -> None:
    p = h.make(fake_model("slow", "--fail", "never-healthy"), health_check_timeout=1)
    with pytest.raises(RouteFailure) as info:
        await p.start()
    assert info.value.error.status == 503
    assert "health check timed out after 1s" in info.value.error.message
    assert p.state is S.STOPPED
    [pid] = h.started_pids()
    assert not pid_alive(pid) and not group_alive(pid)


async def test_a_failed_start_can_be_retried(h: Harness) -> None:
    p = h.make(script_model("s", "import sys; sys.exit(1)", checkEndpoint="/health"))
    with pytest.raises(RouteFailure):
        await p.start()
    p.model = fake_model("s")
    await p.start()
    assert p.state is S.READY


# -- stop -----------------------------------------------------------------------------------

async def test_stop_sends_sigterm_to_the_group_and_is_idempotent(h: Harness) -> None:
    p = h.make(fake_model("m1"))
    await p.start()
    pid = p.pid or 0
    await asyncio.gather(p.stop(), p.stop())
    await p.stop()
    assert h.states("m1") == [S.STARTING, S.READY, S.STOPPING, S.STOPPED]
    assert "SIGTERM, exiting" in p.log.history()  # the fake's own handler ran
    assert not pid_alive(pid)


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace(h: Harness) -> None:
    p = h.make(script_model("stubborn", IGNORES_SIGTERM))
    await p.start()
    await until(lambda: said(p, "handler installed"))
    pid = p.pid or 0
    await asyncio.wait_for(p.stop(grace=1), 10)
    log = p.log.history()
    assert said(p, "got SIGTERM, ignoring")
    assert "still alive after 1s: SIGKILL" in log and "exited with code -9" in log
    assert p.state is S.STOPPED and not pid_alive(pid)


# a child whose output never ends a line, and which ignores SIGTERM (saying so, unfinished)
UNFINISHED_LINE = textwrap.dedent("""
    import os, signal, sys, time
    def say(text):
        sys.stdout.write(text)
        sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *a: os.write(1, b" ignoring SIGTERM"))
    say("loading 42%")
    while True:
        time.sleep(1)
""")


def notes_on_their_own_lines(log: str) -> bool:
    """Every runtime note starts a line: none continues a line the child left unfinished."""
    return all(line.startswith("[llama-swap]") for line in log.splitlines() if "[llama-swap]" in line)


async def test_notes_after_an_unfinished_line_of_the_child_start_a_new_line(h: Harness) -> None:
    p = h.make(script_model("s", UNFINISHED_LINE))
    await p.start()
    await until(lambda: "\nloading 42%" in p.log.history())  # its output, not the argv note
    await asyncio.wait_for(p.stop(grace=1), 10)
    log = p.log.history()
    assert " ignoring SIGTERM\n[llama-swap] [s] pid" in log, log
    assert "still alive after 1s: SIGKILL" in log, log
    assert notes_on_their_own_lines(log), log
    assert notes_on_their_own_lines(h.upstream.history())


async def test_cmd_stop_output_without_a_newline_is_not_continued_by_a_note(h: Harness) -> None:
    stopper = ("import os, signal, sys; sys.stdout.write('stopping ' + sys.argv[1]); "
               "sys.stdout.flush(); os.kill(int(sys.argv[1]), signal.SIGKILL); sys.exit(3)")
    p = h.make(script_model("s", UNFINISHED_LINE, cmdStop=(PY, "-c", stopper, "${PID}")))
    await p.start()
    await until(lambda: "\nloading 42%" in p.log.history())  # its output, not the argv note
    pid = p.pid
    await asyncio.wait_for(p.stop(grace=60), 10)
    log = p.log.history()
    assert f"stopping {pid}\n" in log and "cmdStop exited with code 3" in log, log
    assert notes_on_their_own_lines(log), log
    assert notes_on_their_own_lines(h.upstream.history())


async def test_cmd_stop_runs_with_the_pid_substituted(h: Harness) -> None:
    stopper = "import os, signal, sys; print('cmdStop for', sys.argv[1], flush=True); os.kill(int(sys.argv[1]), signal.SIGKILL)"
    p = h.make(script_model("s", IGNORES_SIGTERM, cmdStop=(PY, "-c", stopper, "${PID}")))
    await p.start()
    await until(lambda: said(p, "handler installed"))
    pid = p.pid
    await asyncio.wait_for(p.stop(grace=60), 10)  # cmdStop, not the grace, ended it
    log = p.log.history()
    assert said(p, f"cmdStop for {pid}") and "exited with code -9" in log
    assert not said(p, "got SIGTERM")


async def test_a_failing_cmd_stop_is_logged_and_the_grace_still_applies(h: Harness) -> None:
    p = h.make(script_model("s", IGNORES_SIGTERM, cmdStop=(PY, "-c", "import sys; sys.exit(4)")))
    await p.start()
    await until(lambda: said(p, "handler installed"))
    await asyncio.wait_for(p.stop(grace=0.3), 10)
    log = p.log.history()
    assert "cmdStop exited with code 4" in log and "SIGKILL" in log
    assert p.state is S.STOPPED


async def test_stop_during_start_aborts_the_start_with_503(h: Harness) -> None:
    p = h.make(fake_model("m1", "--start-delay", "10"), health_check_timeout=30)
    starting = asyncio.ensure_future(p.start())
    await until(lambda: p.pid is not None)
    pid = p.pid or 0
    await asyncio.wait_for(p.stop(), 10)
    with pytest.raises(RouteFailure) as info:
        await starting
    assert info.value.error.status == 503 and "aborted" in info.value.error.message
    assert h.states("m1") == [S.STARTING, S.STOPPING, S.STOPPED]
    assert not pid_alive(pid)


async def test_stop_right_after_start_began_aborts_before_the_child_is_waited_for(h: Harness) -> None:
    p = h.make(fake_model("m1"))
    starting = asyncio.ensure_future(p.start())
    await asyncio.sleep(0)  # start() has begun spawning
    assert p.state is S.STARTING
    await asyncio.wait_for(p.stop(), 10)
    with pytest.raises(RouteFailure, match="aborted"):
        await starting
    assert p.state is S.STOPPED


async def test_start_during_stopping_waits_for_the_exit_then_starts(h: Harness) -> None:
    p = h.make(fake_model("m1"))
    await p.start()
    first = p.pid
    stopping = asyncio.ensure_future(p.stop())
    await asyncio.sleep(0)
    assert p.state is S.STOPPING
    await p.start()
    await stopping
    assert p.state is S.READY and p.pid != first
    assert h.states("m1") == [S.STARTING, S.READY, S.STOPPING, S.STOPPED, S.STARTING, S.READY]


async def test_shutdown_is_terminal(h: Harness) -> None:
    p = h.make(fake_model("m1"))
    await p.start()
    await p.shutdown(2)
    assert p.state is S.SHUTDOWN and h.states("m1")[-2:] == [S.STOPPED, S.SHUTDOWN]
    with pytest.raises(RouteFailure) as info:
        await p.start()
    assert info.value.error.status == 503
    await p.stop()  # nothing to do, no error


# -- exits nobody asked for, descendants ----------------------------------------------------

async def test_an_unexpected_exit_of_a_ready_child_is_reported(h: Harness) -> None:
    p = h.make(fake_model("m1"))
    await p.start()
    os.kill(p.pid or 0, signal.SIGKILL)
    await until(lambda: p.state is S.STOPPED)
    assert h.events[-1] == ("m1", S.READY, S.STOPPED)
    assert "exited unexpectedly with code -9" in p.log.history()
    await p.start()  # and it can be started again
    assert p.state is S.READY


async def test_a_grandchild_holding_the_pipes_does_not_hang_stop(h: Harness) -> None:
    # setsid and a wiped environment: out of the group and unmarked, so out of reach
    code = textwrap.dedent(f"""
        import subprocess, time
        g = subprocess.Popen([{PY!r}, "-c", "import time; time.sleep(60)"],
                             start_new_session=True, env={{}})
        print("grandchild", g.pid, flush=True)
        time.sleep(60)
    """)
    p = h.make(script_model("s", code))
    await p.start()
    await until(lambda: said(p, "grandchild"))
    grandchild = int(re.findall(r"^grandchild (\d+)", p.log.history(), re.M)[0])
    h.extra_pids.append(grandchild)
    await asyncio.wait_for(p.stop(grace=5), 10)
    assert p.state is S.STOPPED
    assert "closing output pipes held open by a descendant" in p.log.history()
    assert pid_alive(grandchild)  # it escaped the group and the marking; the fixture kills it


async def test_a_grandchild_that_left_the_group_is_stopped_with_the_child(h: Harness) -> None:
    # setsid alone leaves the group, not the tree: it gets the SIGTERM too (which it
    # ignores), and a SIGKILL once the child exited, so it does not hold the pipes either
    code = textwrap.dedent(f"""
        import subprocess, time
        g = subprocess.Popen([{PY!r}, "-c", {IGNORES_SIGTERM!r}], start_new_session=True)
        print("grandchild", g.pid, flush=True)
        time.sleep(60)
    """)
    p = h.make(script_model("s", code))
    await p.start()
    await until(lambda: said(p, "handler installed"))
    grandchild = int(re.findall(r"^grandchild (\d+)", p.log.history(), re.M)[0])
    h.extra_pids.append(grandchild)
    assert os.getsid(grandchild) != os.getsid(p.pid or 0)
    await asyncio.wait_for(p.stop(grace=5), 10)
    await until(lambda: not pid_alive(grandchild), timeout=5)
    assert "closing output pipes" not in p.log.history()


async def test_leftovers_of_the_process_group_are_killed_with_the_child(h: Harness) -> None:
    code = textwrap.dedent(f"""
        import subprocess, time
        g = subprocess.Popen([{PY!r}, "-c", {IGNORES_SIGTERM!r}])
        print("grandchild", g.pid, flush=True)
        time.sleep(60)
    """)
    p = h.make(script_model("s", code))
    await p.start()
    await until(lambda: said(p, "handler installed"))  # the grandchild now ignores SIGTERM
    grandchild = int(re.findall(r"^grandchild (\d+)", p.log.history(), re.M)[0])
    pid = p.pid or 0
    assert grandchild in group_alive(pid)
    await asyncio.wait_for(p.stop(grace=5), 10)
    await until(lambda: not group_alive(pid), timeout=5)
    assert not pid_alive(grandchild)


async def test_a_killed_runtime_leaves_no_orphan(h: Harness, tmp_path: object) -> None:
    port = free_port()
    runtime = textwrap.dedent(f"""
        import asyncio, sys, time
        from llama_swap.runtime.engine.logs import LogBuffer
        from llama_swap.runtime.engine.process import ModelProcess
        from llama_swap.compiler.plan import Model
        async def main():
            m = Model(id="m", cmd=({PY!r}, "-m", "llama_swap.runtime.fake_upstream", "--port", "{port}"),
                      cmdStop=None, proxy="http://127.0.0.1:{port}", checkEndpoint="/health", ttl=0)
            p = ModelProcess(m, health_check_timeout=20, log=LogBuffer("m"))
            await p.start()
            print("child", p.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(PY, "-c", runtime, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)  # type: ignore[union-attr]
        child = int(line.split()[1])
        h.extra_pids.append(child)
        assert pid_alive(child)
    finally:
        proc.kill()
        await proc.wait()
    await until(lambda: not pid_alive(child), timeout=5)


async def test_a_killed_runtime_leaves_no_orphan_even_behind_a_wrapper(
    h: Harness, tmp_path: object
) -> None:
    # `sh -c "server; true"` forks the server instead of exec'ing it: the parent-death
    # signal kills only the shell, so the orphan guard must kill the rest of the group
    port = free_port()
    server = f"{PY} -m llama_swap.runtime.fake_upstream --port {port}; true"
    runtime = textwrap.dedent(f"""
        import asyncio, psutil
        from llama_swap.runtime.engine.logs import LogBuffer
        from llama_swap.runtime.engine.process import ModelProcess
        from llama_swap.compiler.plan import Model
        async def main():
            m = Model(id="m", cmd=("sh", "-c", {server!r}),
                      cmdStop=None, proxy="http://127.0.0.1:{port}", checkEndpoint="/health", ttl=0)
            p = ModelProcess(m, health_check_timeout=20, log=LogBuffer("m"))
            await p.start()
            [server] = psutil.Process(p.pid).children()
            print("server", server.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(PY, "-c", runtime, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)  # type: ignore[union-attr]
        grandchild = int(line.split()[1])
        h.extra_pids.append(grandchild)
        assert pid_alive(grandchild)
    finally:
        proc.kill()
        await proc.wait()
    await until(lambda: not pid_alive(grandchild), timeout=15)
