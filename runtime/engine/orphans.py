"""A sidecar that kills the model servers' process groups if llama-swap itself is killed.

Why: the parent-death signal (`PR_SET_PDEATHSIG`, runtime/engine/process.py) reaches only the
*direct* child.  A model started through a wrapper -- `sh -c "source env; server ..."`,
a launcher script, anything that forks the real server instead of exec'ing it -- leaves
the real server behind as an orphan when llama-swap is SIGKILLed or crashes, still
holding its port and its GPU memory.  Every model runs in its own process group, so
killing the group is enough; but a dead process cannot do it, hence a tiny guard process.

How: the first spawned model starts the guard (`python -S -c GUARD`), which detaches
(double fork: not a child of llama-swap, so process-tree checks see only models) and
reads `+PGID` / `-PGID` lines from a pipe whose write end only llama-swap holds (close on
exec, so model children never inherit it).  When the pipe reaches EOF -- llama-swap exited,
however it died -- the guard sends SIGTERM to every group still registered, waits up to
`GUARD_GRACE` s, SIGKILLs what is left, and exits.  After a clean shutdown every group was
already stopped and unregistered, so the guard simply exits.

Failures to start or write to the guard are logged once and otherwise ignored: the guard is
a safety net, never a reason to fail a model start.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

_log = logging.getLogger(__name__)

GUARD_GRACE = 2.0  # seconds between SIGTERM and SIGKILL to orphaned groups

GUARD = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork():
    os._exit(0)
groups, buf = set(), b""
while True:
    try:
        data = os.read(0, 4096)
    except InterruptedError:
        continue
    except OSError:
        data = b""
    if not data:
        break
    buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        try:
            pgid = int(line[1:])
        except ValueError:
            continue
        if line[:1] == b"+":
            groups.add(pgid)
        elif line[:1] == b"-":
            groups.discard(pgid)

def signal_all(sig):
    for pgid in list(groups):
        try:
            os.killpg(pgid, sig)
        except OSError:
            groups.discard(pgid)

signal_all(signal.SIGTERM)
deadline = time.monotonic() + float(sys.argv[1])
while groups and time.monotonic() < deadline:
    time.sleep(0.05)
    signal_all(0)
signal_all(signal.SIGKILL)
"""


class OrphanGuard:
    """The llama-swap side of the guard: register and unregister process groups."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = -1  # the process that owns the guard (a forked copy must not reuse it)
        self._failed = False
        self._lock = threading.Lock()

    def track(self, pgid: int) -> None:
        """Kill group `pgid` if llama-swap dies before `forget(pgid)`."""
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        """Group `pgid` is gone (its leader was reaped): the guard must not touch it."""
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        if sys.platform == "win32":  # pragma: no cover - process groups are POSIX
            return
        with self._lock:
            fd = self._ensure()
            if fd is None:
                return
            try:
                os.write(fd, line.encode())
            except OSError as exc:
                self._give_up(f"cannot write to the orphan guard: {exc}")

    def _ensure(self) -> int | None:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        if self._failed:
            return None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-I", "-c", GUARD, str(GUARD_GRACE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C must not reach it
                close_fds=True,
            )
            proc.wait(10)  # the intermediate exits at once; the guard lives on, detached
        except (OSError, subprocess.SubprocessError) as exc:
            self._give_up(f"cannot start the orphan guard: {exc}")
            return None
        assert proc.stdin is not None
        self._fd = os.dup(proc.stdin.fileno())  # ours alone: non-inheritable (PEP 446)
        proc.stdin.close()
        self._pid = os.getpid()
        return self._fd

    def _give_up(self, why: str) -> None:
        self._failed = True
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None
        _log.warning("%s; a killed llama-swap may leave model processes behind", why)


GUARD_INSTANCE = OrphanGuard()
