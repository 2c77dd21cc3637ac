"""A sidecar that kills the model servers' process groups if llama-swap itself is killed.

Why: the parent-death signal (`PR_SET_PDEATHSIG`, runtime/engine/process.py) reaches only the
*direct* child.  A model started through a wrapper -- `sh -c "source env; server ..."`,
a launcher script, anything that forks the real server instead of exec'ing it -- leaves
the real server behind as an orphan when llama-swap is SIGKILLed or crashes, still
holding its port and its GPU memory.  Every model runs in its own process group, so
killing the group is enough; but a dead process cannot do it, hence a tiny guard process.

A process group is not the whole tree: a server may fork a helper that calls `setsid`,
leaving the group, and once the server exits the helper is reparented to init where no
walk down from llama-swap finds it.  So every model child is also spawned with
`LLAMA_SWAP_TREE=<token>` in its environment, which its descendants inherit whatever
group or session they move to; `marked_pids` finds them by that entry in
`/proc/PID/environ` (Linux; elsewhere only process groups are covered).  A descendant
that replaces its whole environment (`env -i`) escapes this too.

How: the first spawned model starts the guard (`python -S -c GUARD`), which detaches
(double fork: not a child of llama-swap, so process-tree checks see only models) and
reads `+PGID TOKEN` / `-PGID` lines from a pipe whose write end only llama-swap holds (close
on exec, so model children never inherit it).  When the pipe reaches EOF -- llama-swap
exited, however it died -- the guard sends SIGTERM to every group still registered and to
every process carrying a registered token outside those groups, waits up to `GUARD_GRACE` s,
SIGKILLs what is left, and exits.  After a clean shutdown every group was
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
TREE_VAR = "LLAMA_SWAP_TREE"  # the environment entry that marks a model's process tree

GUARD = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork():
    os._exit(0)
groups, buf = {}, b""
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
        head, _, token = line.partition(b" ")
        try:
            pgid = int(head[1:])
        except ValueError:
            continue
        if head[:1] == b"+":
            groups[pgid] = token
        elif head[:1] == b"-":
            groups.pop(pgid, None)

# (the same search as marked_pids in runtime/engine/orphans.py; this runs without imports)
wanted = {b"%s=%s" % (sys.argv[2].encode(), t) for t in groups.values() if t}

def escaped():  # processes of the registered trees outside the registered groups
    found = []
    for name in os.listdir("/proc") if wanted and os.path.isdir("/proc") else ():
        if not name.isdigit():
            continue
        try:
            with open("/proc/" + name + "/environ", "rb") as f:
                if wanted.isdisjoint(f.read().split(b"\0")):
                    continue
            if os.getpgid(int(name)) not in groups:
                found.append(int(name))
        except OSError:
            continue
    return found

def signal_all(sig):
    for pgid in list(groups):
        try:
            os.killpg(pgid, sig)
        except OSError:
            groups.pop(pgid, None)
    strays = escaped()
    for pid in strays:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    return strays

strays = signal_all(signal.SIGTERM)
deadline = time.monotonic() + float(sys.argv[1])
while (groups or strays) and time.monotonic() < deadline:
    time.sleep(0.05)
    strays = signal_all(0)
signal_all(signal.SIGKILL)
"""


def marked_pids(token: str) -> list[int]:
    """Live processes whose environment holds `TREE_VAR=token`: a model's whole tree,
    including descendants that left its process group or session (see the docstring).

    Reads every readable `/proc/PID/environ` (others' processes are skipped): a few
    milliseconds on a busy machine, paid only when a model stops or dies.
    """
    if not token or not os.path.isdir("/proc"):
        return []
    wanted = f"{TREE_VAR}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if wanted in entries:
            found.append(int(name))
    return found


class OrphanGuard:
    """The llama-swap side of the guard: register and unregister process groups."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = -1  # the process that owns the guard (a forked copy must not reuse it)
        self._failed = False
        self._lock = threading.Lock()

    def track(self, pgid: int, token: str = "") -> None:
        """Kill group `pgid`, and the processes marked with `token` (see `marked_pids`),
        if llama-swap dies before `forget(pgid)`."""
        self._send(f"+{pgid} {token}\n")

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
                [sys.executable, "-S", "-I", "-c", GUARD, str(GUARD_GRACE), TREE_VAR],
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
