"""The compiled build (mypyc): which copy of the listed modules runs, and when the Python
source must run instead.

An install compiles `NATIVE_MODULES` when it can; the runtime runs the compiled copies only
while every source still matches the digest the build recorded, and never when
`LLAMA_SWAP_PURE_PYTHON=1`.  CI sets `LLAMA_SWAP_EXPECT_COMPILED=1` (scripts/test.sh), so
there the suite must be running the compiled modules.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from llama_swap.runtime import native

RUNTIME = Path(native.__file__).resolve().parent
REPO = RUNTIME.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def build(root: Path, sources: dict[str, str], compiled: set[str], record: dict[str, str] | None) -> None:
    """Lay out what an install leaves: sources, compiled files (their bytes are not read)
    and the build's digest record."""
    for name, text in sources.items():
        path = root / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name in compiled:
            path.with_name(path.stem + SUFFIX).write_bytes(b"not really a library")
    if record is not None:
        (root / native.STAMP).write_text(json.dumps({"modules": record}))


def digest(text: str) -> str:
    return f"{len(text.encode())}:{zlib.crc32(text.encode()):08x}"


SOURCES = {"core.a": "A = 1\n", "http.b": "B = 2\n"}
MATCHING = {name: digest(text) for name, text in SOURCES.items()}


class TestWhichCopyRuns:
    def test_the_compiled_copies_when_every_source_matches_the_record(self, tmp_path: Path) -> None:
        build(tmp_path, SOURCES, set(SOURCES), MATCHING)
        state = native.decide(str(tmp_path), list(SOURCES), pure_asked=False)
        assert state.compiled
        assert state.describe() == "compiled (mypyc): 2 modules"

    def test_the_sources_when_asked(self, tmp_path: Path) -> None:
        build(tmp_path, SOURCES, set(SOURCES), MATCHING)
        state = native.decide(str(tmp_path), list(SOURCES), pure_asked=True)
        assert not state.compiled
        assert state.reason == "LLAMA_SWAP_PURE_PYTHON=1"

    def test_the_sources_when_nothing_was_compiled(self, tmp_path: Path) -> None:
        build(tmp_path, SOURCES, set(), None)
        state = native.decide(str(tmp_path), list(SOURCES), pure_asked=False)
        assert not state.compiled
        assert "nothing was compiled" in state.reason

    def test_all_sources_when_one_module_was_edited_after_the_build(self, tmp_path: Path) -> None:
        build(tmp_path, SOURCES, set(SOURCES), MATCHING)
        (tmp_path / "http" / "b.py").write_text("B = 3\n")
        state = native.decide(str(tmp_path), list(SOURCES), pure_asked=False)
        assert not state.compiled
        assert state.reason == "http.b changed since it was compiled; reinstall"

    def test_all_sources_when_a_compiled_file_is_missing(self, tmp_path: Path) -> None:
        build(tmp_path, SOURCES, {"core.a"}, MATCHING)
        state = native.decide(str(tmp_path), list(SOURCES), pure_asked=False)
        assert not state.compiled
        assert state.reason == "http.b was not compiled; reinstall"

    def test_all_sources_when_the_record_lacks_a_listed_module(self, tmp_path: Path) -> None:
        build(tmp_path, SOURCES, set(SOURCES), {"core.a": MATCHING["core.a"]})
        assert not native.decide(str(tmp_path), list(SOURCES), pure_asked=False).compiled

    def test_an_unreadable_record_means_nothing_compiled(self, tmp_path: Path) -> None:
        build(tmp_path, SOURCES, set(SOURCES), None)
        (tmp_path / native.STAMP).write_text("{not json")
        assert not native.decide(str(tmp_path), list(SOURCES), pure_asked=False).compiled


def test_the_source_first_finder_loads_the_py_file_beside_a_compiled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "nativeprobe"
    build(package, {"__init__": "", "hot": "WHERE = 'source'\n"}, {"hot"}, None)
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = native.SourceFirst(str(package), package="nativeprobe")
    # Without the finder Python would prefer the (here unloadable) compiled file.
    with pytest.raises(ImportError):
        importlib.import_module("nativeprobe.hot")
    sys.modules.pop("nativeprobe.hot", None)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    module = importlib.import_module("nativeprobe.hot")
    assert module.WHERE == "source"
    assert module.__file__ == str(package / "hot.py")
    for name in ("nativeprobe.hot", "nativeprobe"):
        sys.modules.pop(name, None)


class TestTheList:
    def test_every_listed_module_exists_and_the_guard_itself_is_not_listed(self) -> None:
        for name in native.NATIVE_MODULES:
            assert (RUNTIME / (name.replace(".", "/") + ".py")).is_file(), name
        assert "native" not in native.NATIVE_MODULES
        assert len(set(native.NATIVE_MODULES)) == len(native.NATIVE_MODULES)

    def test_no_plain_python_class_subclasses_a_compiled_one(self) -> None:
        """A compiled class refuses instances of an interpreted subclass (mypyc's default),
        so a class outside the list may not derive from one inside it (tests included)."""
        listed = {RUNTIME / (name.replace(".", "/") + ".py") for name in native.NATIVE_MODULES}
        compiled_classes: dict[str, Path] = {}
        for path in listed:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and not _is_protocol(node):
                    compiled_classes[node.name] = path
        offenders = []
        for path in [*RUNTIME.rglob("*.py"), *(REPO / "tests").rglob("*.py")]:
            if path in listed:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    for base in node.bases:
                        name = _base_name(base)
                        if name in compiled_classes:
                            offenders.append(f"{path.name}: {node.name}({name})")
        assert offenders == []


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_protocol(node: ast.ClassDef) -> bool:
    return any(_base_name(b) == "Protocol" for b in node.bases)


class TestThisInstall:
    def test_what_runs_agrees_with_the_decision(self) -> None:
        state = native.state()
        for name in native.NATIVE_MODULES:
            module = importlib.import_module(f"{native.PACKAGE}.{name}")
            assert str(module.__file__).endswith(SUFFIX if state.compiled else ".py"), name

    def test_ci_runs_the_compiled_modules(self) -> None:
        """Where the build can compile (CI says so), the suite tests the compiled copies."""
        expected = os.environ.get("LLAMA_SWAP_EXPECT_COMPILED", "") == "1"
        assert native.state().compiled or not expected, native.state().describe()

    def test_a_process_asked_for_pure_python_runs_the_sources(self) -> None:
        code = ("from llama_swap.runtime import native\n"
                "import llama_swap.runtime.http.fast.server as s\n"
                "print(native.state().describe()); print(s.__file__)")
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
            env={**os.environ, native.PURE_ENV: "1"},
        ).stdout.splitlines()
        assert out == ["pure Python: LLAMA_SWAP_PURE_PYTHON=1",
                       str(RUNTIME / "http" / "fast" / "server.py")]
