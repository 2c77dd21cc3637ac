"""Starting a model server without copying the proxy: `subprocess.Popen` (vfork + exec)
watched through a pidfd, instead of the event loop's `subprocess_exec`.

Why: a swap is a stop, a start and the wait for health, and the start was the largest
cost the proxy added to it.  uvloop's `subprocess_exec` forks the whole proxy process
(and a `preexec_fn` forces a fork under plain asyncio too): ~10 ms of event-loop time
per spawn with a proxy-sized heap, during which no request is served.  Popen without
a `preexec_fn` uses vfork, ~0.3 ms.  The one thing the `preexec_fn` did -- ask Linux to
SIGKILL the child when the spawning thread dies (`PR_SET_PDEATHSIG`) -- is done by
util-linux's `setpriv --pdeathsig KILL`, which sets it and execs the command (the
setting survives exec).  Without `setpriv` or `os.pidfd_open` (not Linux, or an old
kernel) `available()` is False and process.py keeps the loop's `subprocess_exec`.

What process.py sees is unchanged: a transport with `get_pid`, `get_returncode` and
`close`, and its `asyncio.SubprocessProtocol` told `pipe_data_received(1, ...)`,
`pipe_connection_lost(1, ...)`, `process_exited()` and, once the output pipe closed,
`connection_lost()`.  The child is reaped here (waitpid once its pidfd is readable);
nothing else waits for it, since it is not one of the loop's children.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def available() -> bool:
    return SETPRIV is not None and hasattr(os, "pidfd_open")


class _PipeReader(asyncio.Protocol):
    """The child's merged stdout/stderr, handed to its protocol as fd 1."""

    def __init__(self, proto: asyncio.SubprocessProtocol) -> None:
        self.proto = proto

    def data_received(self, data: bytes) -> None:
        self.proto.pipe_data_received(1, data)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.proto.pipe_connection_lost(1, exc)
        self.proto.connection_lost(exc)


class PidfdTransport:
    """The part of `asyncio.SubprocessTransport` process.py uses, over a Popen child."""

    def __init__(self, loop: asyncio.AbstractEventLoop, popen: subprocess.Popen[bytes],
                 proto: asyncio.SubprocessProtocol) -> None:
        self._loop = loop
        self._popen = popen
        self._proto = proto
        self._returncode: int | None = None
        self._pipe: asyncio.BaseTransport | None = None
        self._pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._on_exit)

    async def connect_output(self) -> None:
        assert self._popen.stdout is not None
        self._pipe, _ = await self._loop.connect_read_pipe(
            lambda: _PipeReader(self._proto), self._popen.stdout)

    def get_pid(self) -> int:
        return self._popen.pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def _on_exit(self) -> None:
        self._stop_watching()
        try:
            pid, status = os.waitpid(self._popen.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: the code is lost
            pid, status = self._popen.pid, -1
        if pid == 0:  # not exited after all (cannot happen with a pidfd): look again
            self._pidfd = os.pidfd_open(self._popen.pid)
            self._loop.add_reader(self._pidfd, self._on_exit)
            return
        code = os.waitstatus_to_exitcode(status) if status != -1 else -1
        self._returncode = self._popen.returncode = code
        self._proto.process_exited()

    def _stop_watching(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def close(self) -> None:
        """Close the output pipe (process.py calls this once the child was reaped)."""
        if self._pipe is not None:
            self._pipe.close()
        elif self._popen.stdout is not None:
            self._popen.stdout.close()
        if self._returncode is None:  # closed while running: stop watching, never reap
            self._stop_watching()


def _check_executable(path: str) -> None:
    """Raise what exec would, naming the command (not setpriv): a missing or
    non-executable program must fail the spawn as it did with subprocess_exec."""
    if os.sep not in path or not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


async def spawn(argv: Sequence[str], env: Mapping[str, str],
                proto: asyncio.SubprocessProtocol) -> PidfdTransport:
    """Start `argv` (already resolved to a path) in a new session, stdin from /dev/null,
    stdout and stderr merged into `proto`; it gets SIGKILL if this thread dies."""
    assert SETPRIV is not None
    _check_executable(argv[0])
    popen = subprocess.Popen(
        [SETPRIV, "--pdeathsig", "KILL", "--", *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(env), start_new_session=True,
    )
    transport = PidfdTransport(asyncio.get_running_loop(), popen, proto)
    await transport.connect_output()
    return transport
