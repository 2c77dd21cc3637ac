"""The architecture's layering, enforced.

Everything installs and imports as one package, `llama_swap`; the repository's top-level
folders map onto it (`compiler/` is `llama_swap.compiler`, `runtime/` is
`llama_swap.runtime`, `schema/` is `llama_swap.schema`).

- `runtime/core/` is pure: no asyncio, aiohttp, sockets, subprocesses, threads or clocks.
  It holds the scheduling core and the request policy both front doors share.
- The engine (`runtime/engine/`) never imports the HTTP side (`runtime/http/`).
- The fast front door (`runtime/http/fast/`) never imports the aiohttp front door
  (`runtime/http/aio/`); route modules do not import each other; `web.Request` is named
  only inside the aiohttp front door.
- The compiler never imports the runtime, and never does network or process I/O.
- The runtime reads plans, never YAML.
- Nothing imports the folders by their bare names (`compiler`, `runtime`, `schema`).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "llama_swap"

IO_MODULES = {
    "asyncio", "aiohttp", "socket", "subprocess", "threading", "time", "selectors",
    "signal", "watchdog", "multiprocessing", "concurrent", "httptools", "ssl",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def within(name: str, *parts: str) -> bool:
    prefix = ".".join((PACKAGE, *parts))
    return name == prefix or name.startswith(prefix + ".")


def py_files(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    if base.is_file():
        return [base]
    return sorted(base.rglob("*.py")) if base.exists() else []


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


CORE = py_files("runtime", "core")
ENGINE = py_files("runtime", "engine")
FAST = py_files("runtime", "http", "fast")
ROUTES = [p for p in py_files("runtime", "http", "aio", "routes") if p.name != "__init__.py"]
# The fake upstream is a separate program (tests, benchmarks, the demo), not the proxy.
OUTSIDE_AIO = [
    p for p in py_files("runtime")
    if "aio" not in p.relative_to(ROOT).parts and p.name != "fake_upstream.py"
]


@pytest.mark.parametrize("path", CORE, ids=rel)
def test_core_is_pure(path: Path) -> None:
    bad = {m for m in imported_modules(path) if top(m) in IO_MODULES}
    bad |= {m for m in imported_modules(path) if within(m, "runtime") and not within(m, "runtime", "core")}
    assert not bad, f"{rel(path)} imports I/O or non-core modules {sorted(bad)}"


@pytest.mark.parametrize("path", ENGINE, ids=rel)
def test_engine_never_imports_the_http_side(path: Path) -> None:
    bad = {m for m in imported_modules(path) if within(m, "runtime", "http")}
    assert not bad, f"{rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", FAST, ids=rel)
def test_fast_front_door_never_imports_the_aiohttp_front_door(path: Path) -> None:
    bad = {
        m for m in imported_modules(path)
        if within(m, "runtime", "http", "aio") or m == "aiohttp.web" or m.startswith("aiohttp.web.")
    }
    assert not bad, f"{rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", ROUTES, ids=rel)
def test_route_modules_do_not_import_each_other(path: Path) -> None:
    bad = {m for m in imported_modules(path) if within(m, "runtime", "http", "aio", "routes")}
    assert not bad, f"{rel(path)} imports route modules {sorted(bad)}"


@pytest.mark.parametrize("path", OUTSIDE_AIO, ids=rel)
def test_web_request_is_named_only_in_the_aiohttp_front_door(path: Path) -> None:
    text = path.read_text()
    assert "web.Request" not in text and "web.BaseRequest" not in text, (
        f"{rel(path)} names aiohttp's request type; only runtime/http/aio/ may"
    )


@pytest.mark.parametrize("path", py_files("compiler"), ids=rel)
def test_compiler_never_imports_runtime_or_network(path: Path) -> None:
    bad = {
        m for m in imported_modules(path)
        if within(m, "runtime") or top(m) in {"aiohttp", "socket", "subprocess"}
    }
    assert not bad, f"{rel(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", py_files("runtime"), ids=rel)
def test_runtime_never_reads_yaml(path: Path) -> None:
    assert "yaml" not in {top(m) for m in imported_modules(path)}, (
        f"{rel(path)} imports yaml; the runtime loads plans (compile via the compiler's pipeline)"
    )


ALL_CODE = [
    p for d in ("compiler", "runtime", "schema", "tests", "bench", "scripts") for p in py_files(d)
]


@pytest.mark.parametrize("path", ALL_CODE, ids=rel)
def test_nothing_imports_the_folders_by_their_bare_names(path: Path) -> None:
    bad = {m for m in imported_modules(path) if top(m) in {"compiler", "runtime", "schema"}}
    assert not bad, f"{rel(path)} imports {sorted(bad)}; import them as {PACKAGE}.<folder>"


def test_every_package_folder_is_installed() -> None:
    """pyproject.toml lists the packages by hand (the folders map under one name): a new
    folder that is not listed would be missing from a wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {
        ".".join((PACKAGE, *init.parent.relative_to(ROOT).parts))
        for d in ("compiler", "runtime", "schema")
        for init in (ROOT / d).rglob("__init__.py")
    }
    assert folders == listed
    assert config["package-dir"] == {f"{PACKAGE}.{d}": d for d in ("compiler", "runtime", "schema")}


def test_there_is_something_to_check() -> None:
    assert len(py_files("compiler")) >= 3 and len(CORE) >= 5 and len(ENGINE) >= 5
    assert len(FAST) >= 3 and len(ROUTES) >= 3
