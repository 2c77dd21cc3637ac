"""Watch the config sources and report each settled, real change once.

Why this module exists: editors and deployment tools save files in many ways
(write in place; write a temp file and rename it over; delete and re-create;
`git checkout` rewriting several fragments at once; a Kubernetes ConfigMap
volume whose entries are symlinks through a `..data` symlink that is swapped
atomically).  Watching the files themselves misses most of these (the inode a
watch was put on is replaced), so we watch the *directories* that hold them,
treat any relevant event as "something may have changed", wait for a quiet
period (debounce), and then compare a content snapshot -- the sha256 of every
relevant file, read through symlinks -- with the snapshot last reported.  Only
a real difference fires the callback, once per burst.

Invariants:
- the callback fires only when the set of relevant files or one of their
  contents differs from the last fired snapshot; the first one is the
  *baseline*: the digests of the sources the running plan was compiled from
  (`baseline=plan.sources`), or, without one, the sources as `start()` finds them;
- no edit goes unseen between the compile and the arming of the watches:
  `start()` arms the watches first, then compares the sources with the
  baseline and fires at once on a difference (a watched file the baseline does
  not know, such as a `--plan` file, counts as a difference: it is checked once);
- a burst of events separated by less than `debounce` seconds gives at most
  one callback (bursts are capped at `max_delay` so constant noise cannot
  starve a reload);
- an incomplete state (a watched file missing, e.g. between the delete and the
  create of a save) never fires: the next complete state does;
- the callback runs on the asyncio loop given (via `call_soon_threadsafe`),
  never on a watchdog thread;
- `stop()` returns after the observer and the debounce thread have exited.

Relevant files: the `--config` (or `--plan`) file, and the top-level
`*.yml`/`*.yaml` entries of `--config-dir` (symlinks followed, directories
skipped), the same set the compiler merges.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

log = logging.getLogger("llama_swap.watcher")

YAML_SUFFIXES = (".yml", ".yaml")
DEFAULT_DEBOUNCE = 0.2
DEFAULT_MAX_DELAY = 2.0

# A content snapshot: absolute path of each relevant file -> sha256 of its bytes.
Snapshot = Mapping[str, str]


class RecordedSource(Protocol):
    """A source file as a plan records it (`compiler.plan.Source`): its path as given to the
    compiler, possibly relative to the working directory, and the sha256 of its bytes."""

    @property
    def path(self) -> str: ...

    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True, slots=True)
class WatchChange:
    """What differed between the last fired snapshot and the new one (paths, sorted)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted(self.added + self.removed + self.modified))

    def describe(self) -> str:
        names = [os.path.basename(p) for p in self.paths]
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        return shown or "no files"


def fragment_files(directory: str | os.PathLike[str]) -> list[str]:
    """Top-level *.yml/*.yaml entries of `directory` that are (or link to) regular files, sorted."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.name.endswith(YAML_SUFFIXES):
            continue
        try:
            if entry.is_file(follow_symlinks=True):
                out.append(os.path.abspath(entry.path))
        except OSError:
            continue
    return sorted(out)


def _sha256_of(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def take_snapshot(files: Sequence[str], dirs: Sequence[str]) -> Snapshot | None:
    """Hash every relevant file; None when the state is incomplete (a watched file is missing,
    or the only sources are directories and none holds a fragment)."""
    snap: dict[str, str] = {}
    for path in files:
        digest = _sha256_of(path)
        if digest is None:
            return None
        snap[os.path.abspath(path)] = digest
    for directory in dirs:
        for path in fragment_files(directory):
            digest = _sha256_of(path)
            if digest is not None:  # vanished or unreadable (dangling editor lock link)
                snap[path] = digest
    if not files and not snap:
        return None
    return snap


def compare(old: Snapshot, new: Snapshot) -> WatchChange:
    return WatchChange(
        added=tuple(sorted(set(new) - set(old))),
        removed=tuple(sorted(set(old) - set(new))),
        modified=tuple(sorted(p for p in set(old) & set(new) if old[p] != new[p])),
    )


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: ConfigWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (including our own hashing) are not changes
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(p and self._watcher.is_relevant(os.fsdecode(p)) for p in paths):
            self._watcher.poke()


class ConfigWatcher:
    """Watches config files and directories; calls `callback(change)` once per settled change."""

    def __init__(
        self,
        files: Iterable[str | os.PathLike[str]] = (),
        dirs: Iterable[str | os.PathLike[str]] = (),
        *,
        callback: Callable[[WatchChange], None],
        loop: asyncio.AbstractEventLoop | None = None,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float = DEFAULT_MAX_DELAY,
        poll_interval: float | None = None,
        baseline: Iterable[RecordedSource] | None = None,
    ) -> None:
        self.files = tuple(os.path.abspath(f) for f in files)
        self.dirs = tuple(os.path.abspath(d) for d in dirs)
        if not self.files and not self.dirs:
            raise ValueError("nothing to watch: give a config file, a config dir or a plan file")
        self._callback = callback
        self._loop = loop
        self.debounce = debounce
        self.max_delay = max(max_delay, debounce)
        self.poll_interval = poll_interval
        self._baseline = None if baseline is None else self._in_scope(baseline)
        self._observer: BaseObserver | None = None
        self._handler = _Handler(self)
        self._watches: dict[str, tuple[ObservedWatch, tuple[int, int]]] = {}
        self._cond = threading.Condition()
        self._dirty = False
        self._first_event = 0.0
        self._last_event = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._fired: Snapshot = {}
        # Read by watchdog threads, replaced (never mutated) by the debounce thread.
        self._config_dirs: frozenset[str] = frozenset()
        self._tracked: frozenset[str] = frozenset()
        self._watched_dirs: frozenset[str] = frozenset()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Arm the watches, compare the sources with the baseline, start the threads.

        The watches are armed before the sources are hashed: an edit after the hashing
        raises an event, an edit before it shows up in the comparison with the baseline
        (the sources the running plan was compiled from), which fires at once.  Hashing
        first and arming after would leave a window in which an edit is never seen.
        """
        if self.poll_interval is not None:
            self._observer = PollingObserver(timeout=self.poll_interval)
        else:
            self._observer = Observer()
        self._rearm(take_snapshot(self.files, self.dirs) or {})
        self._observer.start()  # the scheduled watches are in place when this returns
        snap = self._armed_snapshot()
        self._fired, change = self._against_baseline(snap)
        self._thread = threading.Thread(target=self._debounce_loop, name="config-watcher", daemon=True)
        self._thread.start()
        mode = f"polling every {self.poll_interval:g}s" if self.poll_interval else "inotify"
        log.info("watching %d config file(s) and %d dir(s) (%s)", len(self.files), len(self.dirs), mode)
        if change is not None:
            log.info("config changed since it was compiled: %s", change.describe())
            self._fire(change)

    def _armed_snapshot(self) -> Snapshot | None:
        """Hash the sources with every directory they live in watched.

        A symlinked source (a ConfigMap) can point into a directory that was not watched
        when the watches were first armed; such a directory is watched, then the sources
        are hashed again, so an edit there cannot fall between the two.
        """
        snap = take_snapshot(self.files, self.dirs)
        for _ in range(3):
            watched = self._watched_dirs
            self._rearm(snap or {})
            if self._watched_dirs == watched:
                break
            snap = take_snapshot(self.files, self.dirs)
        return snap

    def _in_scope(self, baseline: Iterable[RecordedSource]) -> dict[str, str]:
        """The baseline's digests by absolute path, keeping only files this watcher covers."""
        files, dirs = set(self.files), set(self.dirs)
        out: dict[str, str] = {}
        for source in baseline:
            path = os.path.abspath(source.path)
            if path in files or os.path.dirname(path) in dirs:
                out[path] = source.sha256
        return out

    def _against_baseline(self, snap: Snapshot | None) -> tuple[Snapshot, WatchChange | None]:
        """The snapshot to count as fired, and the change to report at start (None: none)."""
        if self._baseline is None:
            return snap or {}, None
        if snap is None:  # mid-save: the next complete state is compared with the baseline
            return self._baseline, None
        change = compare(self._baseline, snap)
        return snap, (change if change.paths else None)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; joins the observer and debounce threads. Idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def snapshot(self) -> Snapshot:
        """The last fired (or baseline) snapshot."""
        return self._fired

    # -- called from watchdog threads ------------------------------------------------

    def is_relevant(self, path: str) -> bool:
        """Could an event on `path` change a relevant file? (cheap, no I/O)."""
        parent, name = os.path.split(path)
        if name.startswith(".."):
            return parent in self._watched_dirs  # Kubernetes ConfigMap `..data` machinery
        if path in self._tracked:
            return True
        return parent in self._config_dirs and name.endswith(YAML_SUFFIXES)

    def poke(self) -> None:
        """Note that something happened; the debounce thread settles it."""
        now = time.monotonic()
        with self._cond:
            if not self._dirty:
                self._first_event = now
                self._dirty = True
            self._last_event = now
            self._cond.notify_all()

    # -- the debounce thread ---------------------------------------------------------

    def _debounce_loop(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._stopping:
                    self._cond.wait()
                while not self._stopping:
                    now = time.monotonic()
                    left = min(
                        self._last_event + self.debounce - now,
                        self._first_event + self.max_delay - now,
                    )
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stopping:
                    return
                self._dirty = False
            try:
                self._settle()
            except Exception:  # a bug here must not kill watching for good
                log.exception("config watcher failed to check for changes")

    def _settle(self) -> None:
        snap = take_snapshot(self.files, self.dirs)
        self._rearm(snap or self._fired)
        if snap is None:
            log.debug("config sources incomplete (a file is missing); waiting for the next change")
            return
        change = compare(self._fired, snap)
        if not change.paths:
            return
        self._fired = snap
        log.info("config change detected: %s", change.describe())
        self._fire(change)

    def _fire(self, change: WatchChange) -> None:
        if self._loop is None:
            self._callback(change)
            return
        try:
            self._loop.call_soon_threadsafe(self._callback, change)
        except RuntimeError:  # the loop is closed: we are shutting down
            log.debug("config change after the event loop closed; ignored")

    # -- which directories to watch ----------------------------------------------------

    def _rearm(self, snap: Snapshot) -> None:
        """Watch every directory an event of interest can happen in, re-watching replaced ones."""
        real = os.path.realpath
        config_dirs = {real(d) for d in self.dirs}
        tracked: set[str] = set()
        wanted: set[str] = set(config_dirs)
        for f in self.files:
            parent = real(os.path.dirname(f))
            wanted.add(parent)
            tracked.add(os.path.join(parent, os.path.basename(f)))
        for d in self.dirs:
            parent = real(os.path.dirname(d))
            wanted.add(parent)  # the folder itself being replaced or re-linked
            tracked.add(os.path.join(parent, os.path.basename(d)))
        for path in list(snap) + list(self.files):
            target = real(path)
            tracked.add(target)
            wanted.add(os.path.dirname(target))
        self._config_dirs = frozenset(config_dirs)
        self._tracked = frozenset(tracked)
        self._watched_dirs = frozenset(wanted)
        self._update_watches(wanted)

    def _update_watches(self, wanted: set[str]) -> None:
        observer = self._observer
        if observer is None:
            return
        for path, (watch, watched_as) in list(self._watches.items()):
            if path not in wanted or _identity(path) != watched_as:
                del self._watches[path]
                try:
                    observer.unschedule(watch)
                except (KeyError, OSError):
                    pass  # its emitter already stopped (directory deleted)
        for path in sorted(wanted - set(self._watches)):
            ident = _identity(path)
            if ident is None:
                continue
            try:
                watch = observer.schedule(self._handler, path, recursive=False)
            except OSError as exc:
                log.warning("cannot watch %s: %s", path, exc)
                continue
            self._watches[path] = (watch, ident)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
