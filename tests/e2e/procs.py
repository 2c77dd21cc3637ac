"""Process plumbing shared by the end-to-end fixtures and the benchmarks (bench/).

Why one module: every suite that runs real processes needs the same three things --
a free port on 127.0.0.1, a "SIGTERM, then SIGKILL" stop, and a look at a
process's live descendants -- and copies of them drifted apart.  Only the
standard library and psutil here (no pytest), so bench scripts can import it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterable

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace` s (and reap it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def live_descendants(pid: int) -> list[tuple[psutil.Process, list[str]]]:
    """The non-zombie descendants of `pid` with their command lines ([] once it is gone)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    alive = []
    for kid in kids:
        try:
            if kid.status() != psutil.STATUS_ZOMBIE:
                alive.append((kid, kid.cmdline()))
        except psutil.NoSuchProcess:
            continue
    return alive


# Every llama-swap runs its activity store's writer as a child (store_process.py): not a
# model server, so the checks of which model processes run leave it out.
STORE_WRITER = "llama_swap.runtime.http.observe.store_process"


def is_store_writer(cmdline: list[str]) -> bool:
    return STORE_WRITER in " ".join(cmdline)


def model_descendants(pid: int) -> list[tuple[psutil.Process, list[str]]]:
    """`live_descendants` but the store writer: the model servers (and their wrappers)."""
    return [(kid, cmd) for kid, cmd in live_descendants(pid) if not is_store_writer(cmd)]


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL every pid in `pids` that still exists (teardown of remembered children)."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
