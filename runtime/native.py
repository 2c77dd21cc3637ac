"""The modules an install compiles to C with mypyc, and which copy of them runs.

Why compile: under load the proxy's CPU goes to Python bytecode in a few dozen modules
(the fast path's parser and relay, the router and its scheduler, the activity log).
mypyc turns the same type-checked source into C extension modules, which Python imports
in place of the `.py` files beside them.  `setup.py` loads this file on its own (it needs
only the standard library) for `NATIVE_MODULES` and `source_digest`, and
compiles them when the machine has a C compiler and the Python headers; elsewhere the
package installs as plain Python and behaves the same.

Why a guard: an editable install compiles in place, and Python prefers an extension
module to a source file, so after an edit the old compiled copy would keep running.
The build records a digest of each source it compiled (`_native_build.json`).
mypyc builds the listed modules into one library whose functions call each other
directly, so one stale module makes them all stale.  `install_guard` therefore loads
every listed module from source when any of them differs from what was compiled, or
when `LLAMA_SWAP_PURE_PYTHON=1` asks for it (to compare, or to profile with py-spy).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import ModuleType

PURE_ENV = "LLAMA_SWAP_PURE_PYTHON"
# Written by the build beside the compiled modules: each compiled source's digest.
STAMP = "_native_build.json"

# Dotted names below `llama_swap.runtime`.  Left out on purpose: modules off the request
# path; a few mypyc cannot compile as written (async generators in http/request/body.py, a
# surrogate literal in core/error_body.py, the header rules of core/forwarding.py, generic
# over str and bytes, and observe/prom.py, whose classes derive from prometheus_client's);
# and core/errors.py, whose RouteFailure plain-Python modules subclass (a compiled class
# refuses instances of an interpreted subclass).
NATIVE_MODULES: tuple[str, ...] = (
    "core.admission",
    "core.auth",
    "core.connections",
    "core.headers",
    "core.inference_routes",
    "core.json_codec",
    "core.limits",
    "core.model_choice",
    "core.plan_diff",
    "core.process_state",
    "core.profiles",
    "core.schedulers.base",
    "core.schedulers.fifo",
    "core.schedulers.queueing",
    "core.schedulers.serial",
    "core.schedulers.snapshot",
    "core.selectors",
    "core.swappers.budget",
    "core.swappers.group",
    "core.swappers.matrix",
    "core.websockets",
    "engine.events",
    "engine.hotswap",
    "engine.router",
    "http.fast.headers",
    "http.fast.relay",
    "http.fast.request_head",
    "http.fast.server",
    "http.fast.upstream",
    "http.listeners",
    "http.observe.access_log",
    "http.observe.activity",
    "http.observe.activity_db",
    "http.observe.activity_query",
    "http.observe.activity_store",
    "http.observe.captures",
    "http.observe.events",
    "http.observe.inflight",
    "http.observe.perf",
    "http.observe.recording",
    "http.observe.token_parse",
    "http.request.choose",
    "http.request.extract",
    "http.request.filters",
    "http.request.multipart_scan",
    "http.socket_probe",
)
PACKAGE = "llama_swap.runtime"


@dataclass(frozen=True)
class NativeState:
    """Which copy of the listed modules this process runs, and why."""

    compiled: bool
    reason: str  # one line for --version and the startup log

    def describe(self) -> str:
        return ("compiled (mypyc)" if self.compiled else "pure Python") + f": {self.reason}"


def source_path(root: str, name: str) -> str:
    """The `.py` file of `name` (dotted, below the package) under `root`."""
    return os.path.join(root, *name.split(".")) + ".py"


def _paths(root: str, name: str) -> tuple[str, str]:
    """(source, compiled) file paths of `name` under `root`."""
    source = source_path(root, name)
    return source, source[:-3] + importlib.machinery.EXTENSION_SUFFIXES[0]


def source_digest(path: str) -> str | None:
    """What the build records of a source file, to tell later whether it was edited: its
    length and CRC-32 (zlib's: `hashlib` would load OpenSSL, ~4 MB in every process that
    imports the package, the store writer's included)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return f"{len(data)}:{zlib.crc32(data):08x}"


def read_record(root: str) -> dict[str, str] | None:
    """The digests the build recorded (`STAMP` under `root`), or None (nothing compiled)."""
    try:
        with open(os.path.join(root, STAMP), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    modules = doc.get("modules") if isinstance(doc, dict) else None
    if not isinstance(modules, dict):
        return None
    return {str(k): str(v) for k, v in modules.items()}


def decide(root: str, names: Sequence[str], pure_asked: bool) -> NativeState:
    """Whether the compiled copies under `root` may run (reads files, starts nothing)."""
    if pure_asked:
        return NativeState(False, f"{PURE_ENV}=1")
    record = read_record(root)
    if record is None:
        return NativeState(False, "nothing was compiled at install (its output says why)")
    for name in names:
        source, compiled = _paths(root, name)
        if not os.path.exists(compiled) or name not in record:
            return NativeState(False, f"{name} was not compiled; reinstall")
        if source_digest(source) != record[name]:
            return NativeState(False, f"{name} changed since it was compiled; reinstall")
    return NativeState(True, f"{len(names)} modules")


class SourceFirst:
    """A meta-path finder that loads the package's modules from their `.py` files, even
    where a compiled file sits beside one (a module an earlier build compiled included)."""

    def __init__(self, root: str, package: str = PACKAGE) -> None:
        self._root = root
        self._prefix = package + "."

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not fullname.startswith(self._prefix):
            return None
        source = source_path(self._root, fullname[len(self._prefix):])
        if not os.path.exists(source):
            return None  # a package (its __init__ has no compiled twin) or no such module
        return importlib.util.spec_from_file_location(fullname, source)


_state: NativeState | None = None


def install_guard(root: str) -> NativeState:
    """Decide once per process, before any listed module is imported; returns the state."""
    global _state
    if _state is None:
        _state = decide(root, NATIVE_MODULES, os.environ.get(PURE_ENV, "") not in ("", "0"))
        if not _state.compiled:
            sys.meta_path.insert(0, SourceFirst(root))
    return _state


def state() -> NativeState:
    """The state `install_guard` decided (the package's `__init__` calls it first)."""
    if _state is None:
        raise RuntimeError("llama_swap.runtime.native.install_guard has not run")
    return _state
