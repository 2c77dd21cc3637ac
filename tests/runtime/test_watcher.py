"""The config watcher sees every common way of saving a file and reports each real change once.

Real files in tmp dirs and the real watchdog observers.  No sleeps-then-assert: each test
waits (generously) for the callback it expects; "exactly once" is proved by a later
sentinel change arriving as the very next callback, carrying only the sentinel file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llama_swap.runtime.engine.watcher import (
    ConfigWatcher,
    WatchChange,
    fragment_files,
    take_snapshot,
)

WAIT = 15.0  # seconds; generous for a loaded 2-core CI machine


class Recorder:
    """Collects callbacks from the watcher (called on its debounce thread here)."""

    def __init__(self) -> None:
        self.changes: list[WatchChange] = []
        self._cond = threading.Condition()

    def __call__(self, change: WatchChange) -> None:
        with self._cond:
            self.changes.append(change)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[WatchChange]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.changes) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} callback(s), got {self.changes}")
                self._cond.wait(left)
            return list(self.changes)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_watcher(recorder: Recorder) -> Iterator[object]:
    started: list[ConfigWatcher] = []

    def make(files: tuple[Path, ...] = (), dirs: tuple[Path, ...] = (), **kw: object) -> ConfigWatcher:
        kw.setdefault("debounce", 0.2)
        w = ConfigWatcher(files, dirs, callback=recorder, **kw)  # type: ignore[arg-type]
        w.start()
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


def write(path: Path, text: str) -> None:
    path.write_text(text)


def names(change: WatchChange) -> list[str]:
    return [os.path.basename(p) for p in change.paths]


def sentinel_follows(recorder: Recorder, path: Path, expected_count: int) -> None:
    """Change `path` and require that the next callback is exactly that change (nothing stray before)."""
    write(path, f"sentinel: {time.monotonic_ns()}\n")
    changes = recorder.wait_for(expected_count)
    assert len(changes) == expected_count, changes
    assert names(changes[-1]) == [path.name]


def test_in_place_write_of_the_config_file_fires_once(tmp_path: Path, recorder, make_watcher) -> None:
    cfg = tmp_path / "config.yaml"
    write(cfg, "models: {}\n")
    make_watcher(files=(cfg,))
    with open(cfg, "w") as fh:  # truncate + write, the way most editors' "save" does it
        fh.write("models: {a: {cmd: x}}\n")
    [change] = recorder.wait_for(1)
    assert change.modified == (str(cfg),)
    sentinel_follows(recorder, cfg, 2)


def test_temp_file_renamed_over_the_config_fires_once(tmp_path: Path, recorder, make_watcher) -> None:
    cfg = tmp_path / "config.yaml"
    write(cfg, "a: 1\n")
    make_watcher(files=(cfg,))
    tmp = tmp_path / ".config.yaml.swp123"
    write(tmp, "a: 2\n")
    os.replace(tmp, cfg)
    [change] = recorder.wait_for(1)
    assert change.modified == (str(cfg),)
    sentinel_follows(recorder, cfg, 2)


def test_delete_then_create_fires_once_for_the_recreated_file(
    tmp_path: Path, recorder, make_watcher
) -> None:
    cfg = tmp_path / "config.yaml"
    write(cfg, "a: 1\n")
    make_watcher(files=(cfg,))
    cfg.unlink()  # a missing config file is an incomplete state: never reported on its own
    write(cfg, "a: 2\n")
    [change] = recorder.wait_for(1)
    assert change.modified == (str(cfg),)
    sentinel_follows(recorder, cfg, 2)


def test_rewriting_identical_content_does_not_fire(tmp_path: Path, recorder, make_watcher) -> None:
    cfg = tmp_path / "config.yaml"
    write(cfg, "a: 1\n")
    make_watcher(files=(cfg,))
    write(cfg, "a: 1\n")
    os.utime(cfg, (1, 1))
    sentinel_follows(recorder, cfg, 1)


def test_several_fragments_saved_together_give_one_callback(
    tmp_path: Path, recorder, make_watcher
) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    for i in range(5):
        write(d / f"{i:02d}-models.yaml", f"n: {i}\n")
    # A longer quiet period here so even a badly stalled machine keeps the burst together.
    make_watcher(dirs=(d,), debounce=0.5)
    for i in range(5):  # what `git checkout` does: rewrite, add and delete files in one go
        if i == 4:
            (d / "04-models.yaml").unlink()
        else:
            write(d / f"{i:02d}-models.yaml", f"n: {i} changed\n")
    write(d / "05-new.yml", "n: 5\n")
    [change] = recorder.wait_for(1)
    assert [os.path.basename(p) for p in change.modified] == [
        "00-models.yaml",
        "01-models.yaml",
        "02-models.yaml",
        "03-models.yaml",
    ]
    assert names(WatchChange(change.added, (), ())) == ["05-new.yml"]
    assert names(WatchChange((), change.removed, ())) == ["04-models.yaml"]
    sentinel_follows(recorder, d / "00-models.yaml", 2)


def test_non_yaml_files_in_the_config_dir_are_ignored(
    tmp_path: Path, recorder, make_watcher
) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d / "10.yaml", "a: 1\n")
    make_watcher(dirs=(d,))
    write(d / "README.md", "notes\n")
    write(d / "10.yaml.swp", "editor swap file\n")
    (d / "sub.yaml").mkdir()  # a directory named like a fragment is not a fragment
    write(d / "sub.yaml" / "x.yaml", "nested: true\n")
    sentinel_follows(recorder, d / "10.yaml", 1)


def _configmap_generation(d: Path, name: str, files: dict[str, str]) -> None:
    gen = d / name
    gen.mkdir()
    for fname, text in files.items():
        write(gen / fname, text)


def _configmap_swap(d: Path, new_generation: str, old_generation: str) -> None:
    """What the kubelet does: new timestamped dir, new `..data` link renamed over the old one."""
    tmp_link = d / "..data_tmp"
    os.symlink(new_generation, tmp_link)
    os.replace(tmp_link, d / "..data")
    shutil.rmtree(d / old_generation)


def test_kubernetes_configmap_data_symlink_swap_fires_once(
    tmp_path: Path, recorder, make_watcher
) -> None:
    d = tmp_path / "config"
    d.mkdir()
    gen1 = "..2026_01_02_03_04_05.000000001"
    _configmap_generation(d, gen1, {"10-a.yaml": "a: 1\n", "20-b.yaml": "b: 1\n"})
    os.symlink(gen1, d / "..data")
    for fname in ("10-a.yaml", "20-b.yaml"):
        os.symlink(f"..data/{fname}", d / fname)
    assert [os.path.basename(p) for p in fragment_files(d)] == ["10-a.yaml", "20-b.yaml"]

    make_watcher(dirs=(d,))
    gen2 = "..2026_01_02_03_09_00.000000002"
    _configmap_generation(d, gen2, {"10-a.yaml": "a: 1\n", "20-b.yaml": "b: 2\n"})
    _configmap_swap(d, gen2, gen1)
    [change] = recorder.wait_for(1)
    assert names(change) == ["20-b.yaml"]
    assert change.modified == (str(d / "20-b.yaml"),)

    # A second swap is seen too (the watch follows the new generation).
    gen3 = "..2026_01_02_03_10_00.000000003"
    _configmap_generation(d, gen3, {"10-a.yaml": "a: 3\n", "20-b.yaml": "b: 2\n"})
    _configmap_swap(d, gen3, gen2)
    changes = recorder.wait_for(2)
    assert len(changes) == 2
    assert names(changes[1]) == ["10-a.yaml"]


def test_configmap_file_used_as_the_config_file(tmp_path: Path, recorder, make_watcher) -> None:
    d = tmp_path / "etc"
    d.mkdir()
    gen1 = "..2026_01_01_00_00_00.1"
    _configmap_generation(d, gen1, {"config.yaml": "a: 1\n"})
    os.symlink(gen1, d / "..data")
    os.symlink("..data/config.yaml", d / "config.yaml")
    make_watcher(files=(d / "config.yaml",))
    gen2 = "..2026_01_01_00_01_00.2"
    _configmap_generation(d, gen2, {"config.yaml": "a: 2\n"})
    _configmap_swap(d, gen2, gen1)
    [change] = recorder.wait_for(1)
    assert change.modified == (str(d / "config.yaml"),)


def test_polling_mode_sees_changes(tmp_path: Path, recorder, make_watcher) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    cfg = tmp_path / "config.yaml"
    write(cfg, "a: 1\n")
    write(d / "10.yaml", "b: 1\n")
    w = make_watcher(files=(cfg,), dirs=(d,), poll_interval=0.1)
    assert type(w._observer).__name__ == "PollingObserver"
    write(d / "10.yaml", "b: 22\n")
    [change] = recorder.wait_for(1)
    assert names(change) == ["10.yaml"]
    write(d / "20.yaml", "c: 1\n")
    changes = recorder.wait_for(2)
    assert changes[1].added == (str(d / "20.yaml"),)


async def test_callback_runs_on_the_event_loop_thread(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    write(cfg, "a: 1\n")
    loop = asyncio.get_running_loop()
    got: asyncio.Future[tuple[WatchChange, int]] = loop.create_future()

    def on_change(change: WatchChange) -> None:
        if not got.done():
            got.set_result((change, threading.get_ident()))

    w = ConfigWatcher([cfg], callback=on_change, loop=loop, debounce=0.1)
    w.start()
    try:
        await asyncio.to_thread(write, cfg, "a: 2\n")
        change, thread_id = await asyncio.wait_for(got, WAIT)
    finally:
        await asyncio.to_thread(w.stop)
    assert thread_id == threading.get_ident()
    assert change.modified == (str(cfg),)


def test_stop_joins_the_threads(tmp_path: Path, recorder) -> None:
    cfg = tmp_path / "config.yaml"
    write(cfg, "a: 1\n")
    w = ConfigWatcher([cfg], callback=recorder)
    w.start()
    w.stop()
    assert w._thread is not None and not w._thread.is_alive()
    assert w._observer is not None and not w._observer.is_alive()
    w.stop()  # idempotent


def test_snapshot_is_incomplete_while_a_watched_file_is_missing(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    assert take_snapshot([], [str(d)]) is None  # no fragments at all
    assert take_snapshot([str(tmp_path / "missing.yaml")], []) is None
    write(d / "a.yaml", "x: 1\n")
    snap = take_snapshot([], [str(d)])
    assert snap is not None and list(snap) == [str(d / "a.yaml")]


def test_nothing_to_watch_is_an_error(recorder) -> None:
    with pytest.raises(ValueError):
        ConfigWatcher(callback=recorder)


# --- the baseline is what the running plan was compiled from ---------------------------------
#
# The plan is compiled before the watches are armed; an edit in between must still be seen.
# Each test below sets up exactly that state -- the baseline (the sources the plan records)
# says one thing, the disk already says another -- before the watcher starts, so nothing
# depends on when the edit happens.


@dataclass(frozen=True)
class Recorded:
    """A source as the plan records it (compiler.plan.Source has the same two fields)."""

    path: str
    sha256: str


def recorded(path: Path, text: str) -> Recorded:
    return Recorded(str(path), hashlib.sha256(text.encode()).hexdigest())


def test_a_fragment_rewritten_before_the_watches_were_armed_fires_at_start(
    tmp_path: Path, recorder: Recorder, make_watcher: Any
) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d / "10-a.yaml", "a: 2\n")  # the plan was compiled from "a: 1"
    make_watcher(dirs=(d,), baseline=[recorded(d / "10-a.yaml", "a: 1\n")])
    [change] = recorder.wait_for(1)
    assert change.modified == (str(d / "10-a.yaml"),)
    sentinel_follows(recorder, d / "10-a.yaml", 2)


def test_a_fragment_renamed_into_the_dir_before_the_watches_were_armed_fires_at_start(
    tmp_path: Path, recorder: Recorder, make_watcher: Any
) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d / "10-a.yaml", "a: 1\n")
    staged = tmp_path / "20-b.yaml"
    write(staged, "b: 1\n")
    os.replace(staged, d / "20-b.yaml")  # arrived after the compile read the dir
    make_watcher(dirs=(d,), baseline=[recorded(d / "10-a.yaml", "a: 1\n")])
    [change] = recorder.wait_for(1)
    assert change.added == (str(d / "20-b.yaml"),)
    assert change.modified == () and change.removed == ()


def test_a_fragment_deleted_before_the_watches_were_armed_fires_at_start(
    tmp_path: Path, recorder: Recorder, make_watcher: Any
) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d / "10-a.yaml", "a: 1\n")
    gone = recorded(d / "20-b.yaml", "b: 1\n")
    make_watcher(dirs=(d,), baseline=[recorded(d / "10-a.yaml", "a: 1\n"), gone])
    [change] = recorder.wait_for(1)
    assert change.removed == (str(d / "20-b.yaml"),)


def test_sources_that_match_the_baseline_do_not_fire(
    tmp_path: Path, recorder: Recorder, make_watcher: Any
) -> None:
    cfg = tmp_path / "config.yaml"
    d = tmp_path / "conf.d"
    d.mkdir()
    write(cfg, "c: 1\n")
    write(d / "10-a.yaml", "a: 1\n")
    make_watcher(
        files=(cfg,), dirs=(d,),
        baseline=[recorded(cfg, "c: 1\n"), recorded(d / "10-a.yaml", "a: 1\n")],
    )
    sentinel_follows(recorder, d / "10-a.yaml", 1)  # the first callback is the sentinel's


def test_relative_baseline_paths_are_read_from_the_working_directory(
    tmp_path: Path, recorder: Recorder, make_watcher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiler records paths as given on the command line (often relative)."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d / "10-a.yaml", "a: 1\n")
    make_watcher(dirs=(Path("conf.d"),), baseline=[recorded(Path("conf.d/10-a.yaml"), "a: 1\n")])
    sentinel_follows(recorder, d / "10-a.yaml", 1)


def test_a_watched_file_the_baseline_does_not_know_is_checked_once_at_start(
    tmp_path: Path, recorder: Recorder, make_watcher: Any
) -> None:
    """A `--plan` file: the plan records the YAML it came from, not the plan file itself, so
    the watcher cannot tell whether the file still holds the running plan and reports it."""
    plan_file = tmp_path / "plan.json"
    write(plan_file, "{}\n")
    elsewhere = recorded(tmp_path / "build" / "config.yaml", "c: 1\n")  # not watched: ignored
    make_watcher(files=(plan_file,), baseline=[elsewhere])
    [change] = recorder.wait_for(1)
    assert change.added == (str(plan_file),) and change.removed == ()
    sentinel_follows(recorder, plan_file, 2)


def test_without_a_baseline_the_sources_at_start_are_the_baseline(
    tmp_path: Path, recorder: Recorder, make_watcher: Any
) -> None:
    cfg = tmp_path / "config.yaml"
    write(cfg, "a: 1\n")
    make_watcher(files=(cfg,))
    sentinel_follows(recorder, cfg, 1)
