"""The architecture's layering, enforced.

- The scheduling core (schedulers, swappers, plan diff) is pure: no asyncio,
  sockets, subprocesses, threads or clocks.
- The compiler never imports the runtime, and never does network or process I/O.
- The runtime reads plans, never YAML.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

IO_MODULES = {
    "asyncio", "aiohttp", "socket", "subprocess", "threading", "time", "selectors",
    "signal", "watchdog", "multiprocessing", "concurrent",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def py_files(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    if base.is_file():
        return [base]
    return sorted(base.rglob("*.py")) if base.exists() else []


PURE = py_files("runtime", "schedulers") + py_files("runtime", "swappers") + py_files(
    "runtime", "plan_diff.py"
)


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_scheduling_core_is_pure(path: Path) -> None:
    bad = {m for m in imported_modules(path) if top(m) in IO_MODULES}
    assert not bad, f"{path.relative_to(ROOT)} imports I/O modules {sorted(bad)}"


@pytest.mark.parametrize("path", py_files("compiler"), ids=lambda p: str(p.relative_to(ROOT)))
def test_compiler_never_imports_runtime_or_network(path: Path) -> None:
    bad = {m for m in imported_modules(path) if top(m) in {"runtime", "aiohttp", "socket", "subprocess"}}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", py_files("runtime"), ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_never_reads_yaml(path: Path) -> None:
    assert "yaml" not in {top(m) for m in imported_modules(path)}, (
        f"{path.relative_to(ROOT)} imports yaml; the runtime loads plans (compile via compiler.pipeline)"
    )


def test_there_is_something_to_check() -> None:
    assert len(py_files("compiler")) >= 3 and len(PURE) >= 1
