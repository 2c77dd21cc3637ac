"""A line the proxy writes into a log always starts on a line of its own.

Model servers often end their last words without a newline (a crash message, a progress
bar).  When the proxy then writes its own line into the same log -- "exited with code 3"
into the model's log, any proxy log line into the shared one -- the unfinished line is
ended first, in every log it reaches (model, upstream, the shared "mux" and the terminal
it is echoed to).  Output of one writer that continues an unfinished line of its own is
left alone.

The process tests spawn real children and use the real log wiring of `serve.wire_logs`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from llama_swap.compiler.plan import Model, Plan, Settings
from llama_swap.runtime.core.errors import RouteFailure
from llama_swap.runtime.engine.logs import LogBuffer
from llama_swap.runtime.engine.process import ModelProcess
from llama_swap.runtime.serve import EchoLogBuffer, wire_logs
from tests.e2e.procs import free_port

WAIT = 20.0


# -- the rule, on plain buffers -------------------------------------------------------------


def test_a_direct_write_after_a_childs_unfinished_line_starts_a_new_line() -> None:
    model = LogBuffer("m")
    run = LogBuffer("m#run", parent=model)
    run.write("boom - out of memory")
    model.write("[llama-swap] [m] exited with code 3\n")
    assert model.history() == "boom - out of memory\n[llama-swap] [m] exited with code 3\n"


def test_one_writer_continuing_its_own_line_is_not_split() -> None:
    model = LogBuffer("m")
    run = LogBuffer("m#run", parent=model)
    run.write("loading ")
    run.write("50%")
    run.write(" 100%\n")
    model.write("[llama-swap] ready\n")
    assert model.history() == "loading 50% 100%\n[llama-swap] ready\n"


def test_two_children_interleaving_unfinished_lines_are_separated() -> None:
    upstream = LogBuffer("upstream")
    a = LogBuffer("a", parent=upstream)
    b = LogBuffer("b", parent=upstream)
    a.write("a: 10%")
    b.write("b: 20%")
    a.write(" 90%\n")
    assert upstream.history() == "a: 10%\nb: 20%\n 90%\n"


def test_nothing_is_inserted_after_a_finished_line_or_into_an_empty_log() -> None:
    model = LogBuffer("m")
    run = LogBuffer("m#run", parent=model)
    model.write("[llama-swap] starting\n")
    run.write("line\n")
    model.write("[llama-swap] done\n")
    assert model.history() == "[llama-swap] starting\nline\n[llama-swap] done\n"
    model.clear()
    run.write("partial")
    model.clear()
    model.write("[llama-swap] after a clear\n")
    assert model.history() == "[llama-swap] after a clear\n"


def test_the_separating_newline_reaches_the_parent_subscribers_and_the_terminal() -> None:
    terminal = io.StringIO()
    mux = EchoLogBuffer("mux", terminal)
    proxy = LogBuffer("proxy", parent=mux)
    upstream = LogBuffer("upstream", parent=mux)
    model = LogBuffer("m", parent=upstream)
    run = LogBuffer("m#run", parent=model)
    sub = model.subscribe()
    run.write("boom")
    proxy.write("[INFO] proxy line\n")
    model.write("[llama-swap] [m] exited with code 3\n")
    assert mux.history() == "boom\n[INFO] proxy line\n[llama-swap] [m] exited with code 3\n"
    assert terminal.getvalue() == mux.history()
    assert upstream.history() == "boom\n[llama-swap] [m] exited with code 3\n"
    assert "".join(sub._chunks) == model.history()


# -- real children, the real wiring ---------------------------------------------------------


@dataclass
class Wired:
    """The logs as `serve` wires them with `logToStdout: both`, and the terminal they reach."""

    proxy: LogBuffer
    upstream: LogBuffer
    terminal: io.StringIO

    @property
    def mux(self) -> LogBuffer:
        assert self.upstream.parent is not None
        return self.upstream.parent


@pytest.fixture
def wired() -> Iterator[Wired]:
    logger = logging.getLogger("llama_swap")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    terminal = io.StringIO()
    try:
        proxy, upstream = wire_logs(Plan(settings=Settings(logToStdout="both")), stdout=terminal)
        yield Wired(proxy, upstream, terminal)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest_asyncio.fixture
async def processes() -> AsyncIterator[list[ModelProcess]]:
    made: list[ModelProcess] = []
    try:
        yield made
    finally:
        for proc in made:
            await asyncio.wait_for(proc.shutdown(0.5), 15)


def child(mid: str, code: str, upstream: LogBuffer, made: list[ModelProcess]) -> ModelProcess:
    """A model whose server is `python -c code`, never healthy (nothing listens on its port)."""
    port = free_port()
    model = Model(id=mid, cmd=(sys.executable, "-c", code), cmdStop=None,
                  proxy=f"http://127.0.0.1:{port}", checkEndpoint="/health", ttl=0)
    proc = ModelProcess(model, health_check_timeout=60, log=LogBuffer(mid, parent=upstream))
    made.append(proc)
    return proc


async def until(cond: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


CRASHY = "import sys; sys.stdout.write('boom - out of memory'); sys.stdout.flush(); sys.exit(3)"


async def test_a_crash_message_without_newline_and_the_exit_note_are_two_lines(
    wired: Wired, processes: list[ModelProcess]
) -> None:
    proc = child("crashy", CRASHY, wired.upstream, processes)
    with pytest.raises(RouteFailure):
        await asyncio.wait_for(proc.start(), WAIT)
    expected = "boom - out of memory\n[llama-swap] [crashy] exited with code 3"
    for log in (proc.log, wired.upstream, wired.mux):
        assert expected in log.history(), (log.name, log.history())
    assert expected in wired.terminal.getvalue()
    assert "out of memory[" not in wired.terminal.getvalue()


SLOW_LOADER = "import sys, time; sys.stdout.write('loading'); sys.stdout.flush(); time.sleep(60)"


async def test_a_proxy_log_line_after_an_unfinished_upstream_line_starts_a_new_line(
    wired: Wired, processes: list[ModelProcess]
) -> None:
    proc = child("slow", SLOW_LOADER, wired.upstream, processes)
    start = asyncio.ensure_future(proc.start())
    try:
        await until(lambda: wired.mux.history().endswith("loading"), "the child's partial line")
        logging.getLogger("llama_swap.test").warning("a proxy line")
        mux_text = wired.mux.history()
        assert "loading\n[WARN] a proxy line\n" in mux_text, mux_text
        assert wired.terminal.getvalue().endswith("loading\n[WARN] a proxy line\n")
    finally:
        await proc.stop(0.5)
        with pytest.raises(RouteFailure):
            await start
