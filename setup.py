"""Stamp the commit and build time into wheels and sdists; compile the request path with mypyc.

Why the stamp: the Go original has its commit and build date linked into the binary, and
`llama-swap --version` should say the same from an installed wheel, where there is no git
checkout to ask. Everything else about the package lives in pyproject.toml; this file only
adds two build steps:

- `build_py` writes `llama_swap/runtime/_build_info.py` into the wheel, from `git` when the
  build runs in a checkout (the usual `pip wheel .` / `pip install .`);
- `sdist` writes the same file into the source archive, so a wheel later built from that
  sdist (as `python -m build` does, in a directory with no `.git`) still carries it.

Editable installs get no stamp: they run from the checkout, whose commit moves, so the
runtime asks git at run time instead. A tree with uncommitted changes is marked `-dirty`.
Where there is no `.git` (a container build copies only the sources), the commit may be given
as `LLAMA_SWAP_BUILD_COMMIT` (the Containerfile passes its `VCS_REF` build argument).
`SOURCE_DATE_EPOCH`, when set, fixes the build time (reproducible builds).

Why compile: the modules `llama_swap.runtime.native.NATIVE_MODULES` lists carry the proxy's
per-request work; mypyc compiles their type-checked source to C extension modules (how mypy
and black ship), which cut the proxy's CPU per request.  The build compiles them when it can
(mypyc importable, a C compiler that builds against the Python headers) and otherwise, or
when `LLAMA_SWAP_PURE_PYTHON=1`, installs the package as plain Python, saying why.  A compile
that fails also falls back to plain Python: the install never fails for want of speed.
The sources live in `runtime/` but import as `llama_swap.runtime`, and mypyc names a module
after its folders, so they are copied under `build/mypyc-src/llama_swap/` to be compiled.
Beside the compiled modules the build writes each source's digest (`_native_build.json`);
the runtime runs them only while every source still matches (see runtime/native.py).
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
STAMP_PACKAGE_DIR = "runtime"  # llama_swap.runtime's folder in the source tree
STAMP_NAME = "_build_info.py"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(HERE), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def stamp_text() -> str | None:
    """The module's source, or None when the commit is unknown (then keep what is there)."""
    commit = os.environ.get("LLAMA_SWAP_BUILD_COMMIT", "").strip() or None
    if commit is None and (HERE / ".git").exists():
        commit = _git("rev-parse", "HEAD")
        if commit and _git("status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"
    if not commit:
        return None
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return (
        '"""Written at build time by setup.py: what this installed copy was built from."""\n\n'
        f"COMMIT = {commit!r}\n"
        f"BUILD_DATE = {when.replace(microsecond=0).isoformat()!r}\n"
    )


class StampedBuildPy(build_py):  # type: ignore[misc]
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            _forget_compiled_in_place()  # build_ext, next, compiles afresh when it can
            return
        text = stamp_text()
        if text is not None:
            target = Path(self.build_lib, "llama_swap", "runtime", STAMP_NAME)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")


class StampedSdist(sdist):  # type: ignore[misc]
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        text = stamp_text()
        if text is not None:
            target = Path(base_dir, STAMP_PACKAGE_DIR, STAMP_NAME)
            if target.exists():
                target.unlink()  # may be a hard link to the source tree's copy
            target.write_text(text, encoding="utf-8")


PURE_ENV = "LLAMA_SWAP_PURE_PYTHON"
NATIVE_LIST = HERE / "runtime" / "native.py"  # NATIVE_MODULES, STAMP, source_digest
STAGE = HERE / "build" / "mypyc-src"
GROUP = "llama_swap.runtime._compiled"  # the shared library the compiled modules live in


def _say(line: str) -> None:
    print(f"llama-swap build: {line}", file=sys.stderr)


@functools.cache
def _native() -> Any:
    """runtime/native.py, loaded on its own (it imports only the standard library): the list
    of modules to compile and the digest the runtime checks them against."""
    spec = importlib.util.spec_from_file_location("llama_swap_native_list", NATIVE_LIST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def _why_not_compile() -> str | None:
    """None when this machine can compile the native modules, else the reason it cannot."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV}=1"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed"
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp, "probe.c")
        probe.write_text("#include <Python.h>\nint probe(void) { return Py_IsInitialized(); }\n")
        compiler = new_compiler()
        customize_compiler(compiler)
        try:
            compiler.compile([str(probe)], output_dir=tmp,
                             include_dirs=[sysconfig.get_paths()["include"]])
        except Exception as exc:  # noqa: BLE001 - any failure means: do not compile
            return f"no working C compiler with the Python headers ({exc.__class__.__name__})"
    return None


def _stage(modules: list[str]) -> list[str]:
    """Copy the package's sources under STAGE/llama_swap/; the staged paths of `modules`."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    package = STAGE / "llama_swap"
    for folder in ("compiler", "runtime", "schema"):
        shutil.copytree(HERE / folder, package / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.json", "*.html"))
    (package / "__init__.py").write_text("")  # lets mypyc name the modules llama_swap.*
    return [_native().source_path(str(package / "runtime"), m) for m in modules]


def _forget_compiled_in_place() -> None:
    """Remove what an earlier editable install compiled into the source tree, so no module
    dropped from the list (or no longer compilable) keeps a compiled copy there."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for path in (HERE / "runtime").rglob("*"):
        if path.name.endswith(suffixes) or path.name == _native().STAMP:
            path.unlink()


def native_extensions() -> list[Extension]:
    """A placeholder for the group library when this machine can compile (mypyc generates
    the real extensions when `build_ext` runs, not each time setup.py is read), else none."""
    reason = _why_not_compile()
    if reason is not None:
        _say(f"installing plain Python: {reason}")
        return []
    return [Extension(GROUP + "__mypyc", sources=[])]


@functools.cache
def mypyc_extensions() -> list[Extension]:
    """Generate the C for the listed modules (type-checked by mypyc on the way); once per
    build, though several commands finalize `build_ext`."""
    from mypyc.build import mypycify

    paths = _stage(list(_native().NATIVE_MODULES))
    # The same C whatever is installed: the build environment holds only the build's own
    # requirements, so third-party packages are left out (their values are plain objects to
    # the compiled code).  Strictness is the type checker's job in CI, not the build's.
    config = STAGE / "mypy.ini"
    config.write_text("[mypy]\nno_site_packages = True\nignore_missing_imports = True\n")
    os.environ["MYPYPATH"] = str(STAGE)
    _say(f"compiling {len(paths)} modules with mypyc (set {PURE_ENV}=1 to skip)")
    extensions: list[Extension] = mypycify(
        ["--config-file", str(config), *paths], opt_level="3", debug_level="0",
        group_name=GROUP, target_dir=str(HERE / "build" / "mypyc-c"),
    )
    return extensions


class NativeBuildExt(build_ext):  # type: ignore[misc]
    """Compiles the listed modules in parallel, records their sources' digests, and falls
    back to plain Python (removing what it built) when the compile fails."""

    def finalize_options(self) -> None:
        if self.distribution.ext_modules:  # the placeholder: this machine can compile
            try:
                self.distribution.ext_modules = mypyc_extensions()
            except (Exception, SystemExit) as exc:  # mypyc refused: install plain Python
                _say(f"mypyc refused the sources (its errors are above: {exc!r}); "
                     "installing plain Python")
                self.distribution.ext_modules = []
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        if not self.extensions:
            return
        outputs = [Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions]
        try:
            super().run()
        except (Exception, SystemExit) as exc:  # a failed compile must not fail the install
            _say(f"the C compile failed ({exc}); installing plain Python")
            for path in outputs:
                path.unlink(missing_ok=True)
            return
        native = _native()
        modules = native.NATIVE_MODULES
        first = Path(self.get_ext_fullpath(f"llama_swap.runtime.{modules[0]}"))
        runtime_dir = first.parents[len(modules[0].split(".")) - 1]
        # the staged copies are what was compiled (a source edited meanwhile must not match)
        staged = str(STAGE / "llama_swap" / "runtime")
        record = {m: native.source_digest(native.source_path(staged, m)) for m in modules}
        (runtime_dir / native.STAMP).write_text(
            json.dumps({"modules": record}, indent=1, sort_keys=True) + "\n", encoding="utf-8")


setup(
    cmdclass={"build_py": StampedBuildPy, "sdist": StampedSdist, "build_ext": NativeBuildExt},
    ext_modules=native_extensions(),
)
