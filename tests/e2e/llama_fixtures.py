"""Fixtures and helpers for end-to-end tests against a real llama.cpp `llama-server`.

Why a module of its own: these tests need things the fake-upstream suite does not: the
binary built by `scripts/build_llama_server.py`, tiny GGUF models from
`scripts/make_tiny_gguf.py`, YAML configs compiled by the real `llama-swap --config`, and a
process-table check that no `llama-server` outlives the proxy.

Binary lookup: `$LLAMA_SERVER_BIN` if set, else the build script's cache. When it is absent the
tests skip with the command that builds it, unless `$CI` is set: CI builds it first, so there a
missing binary is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

from tests.e2e.procs import free_port, live_descendants, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
LLAMA_SWAP = str(Path(sys.executable).parent / "llama-swap")
BUILD_HINT = f"{sys.executable} scripts/build_llama_server.py"


def load_script(name: str) -> ModuleType:
    """Import `scripts/<name>.py` by path (scripts/ is not a package)."""
    module_name = f"_llama_swap_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def find_llama_server() -> Path | None:
    """`$LLAMA_SERVER_BIN`, else the build script's cached binary, else None."""
    env = os.environ.get("LLAMA_SERVER_BIN")
    if env:
        path = Path(env)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    cached: Path | None = load_script("build_llama_server").find_cached_binary()
    return cached


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """Status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return None


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200; fail early (with the log) if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"process exited with {proc.returncode} before {url} answered:\n{tail(log)}"
            )
        if http_status(url) == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"{url} not healthy within {timeout} s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def llama_servers_mentioning(marker: str) -> list[psutil.Process]:
    """Live, non-zombie llama-server processes whose command line contains `marker`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if (
                cmdline
                and Path(cmdline[0]).name == "llama-server"
                and proc.info["status"] != psutil.STATUS_ZOMBIE
                and any(marker in a for a in cmdline[1:])
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The real llama-server binary; skip (locally) or fail (under CI) when it is absent."""
    path = find_llama_server()
    if path is not None:
        return path
    if os.environ.get("LLAMA_SERVER_BIN"):
        pytest.fail(f"LLAMA_SERVER_BIN={os.environ['LLAMA_SERVER_BIN']} is not an executable file")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but llama-server is not built; .ci/run must run: {BUILD_HINT}")
    pytest.skip(f"llama-server not built (about 8 min once); build it with: {BUILD_HINT}")


@dataclass(frozen=True)
class TinyModels:
    """Two distinct tiny GGUFs in one directory (the directory marks our processes)."""

    dir: Path
    a: Path
    b: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    make = load_script("make_tiny_gguf")
    root = tmp_path_factory.mktemp("llama-models")
    a = make.write_tiny_gguf(root / "tiny-a.gguf", seed=1, name="tiny-a")
    b = make.write_tiny_gguf(root / "tiny-b.gguf", seed=2, name="tiny-b")
    return TinyModels(root, a, b)


def server_argv(binary: Path, model: Path, port: int | str, alias: str, *extra: str) -> list[str]:
    """The llama-server command line every test uses (small context, one slot, one thread)."""
    return [
        str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--alias", alias, "-c", "512", "-np", "1", "-t", "1", *extra,
    ]  # fmt: skip


@dataclass
class DirectServer:
    """A llama-server started by the test itself (no proxy)."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@pytest.fixture
def direct_server(llama_server_bin: Path, tiny_models: TinyModels, tmp_path: Path) -> Iterator[Any]:
    """Factory: `direct_server(alias, *extra_flags)` starts llama-server on tiny model A."""
    started: list[DirectServer] = []

    def start(alias: str = "tiny-a", *extra: str) -> DirectServer:
        port = free_port()
        log = tmp_path / f"llama-server-{len(started)}.log"
        argv = server_argv(llama_server_bin, tiny_models.a, port, alias, *extra)
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        server = DirectServer(proc, f"http://127.0.0.1:{port}", log)
        started.append(server)
        wait_healthy(f"{server.url}/health", proc, log)
        return server

    yield start
    for server in started:
        stop_process(server.proc, grace=5)


@dataclass
class SwapProxy:
    """A `llama-swap --config` subprocess; remembers every child it ever saw."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    seen_children: dict[int, str] = field(default_factory=dict)

    def llama_children(self) -> list[psutil.Process]:
        """Live llama-server processes under the proxy (also remembered for the teardown)."""
        alive = []
        for kid, cmdline in live_descendants(self.proc.pid):
            if cmdline and Path(cmdline[0]).name == "llama-server":
                self.seen_children.setdefault(kid.pid, " ".join(cmdline))
                alive.append(kid)
        return alive

    def log_tail(self) -> str:
        return tail(self.log, 60)


def model_yaml(binary: Path, model_id: str, gguf: Path, *extra: str) -> str:
    """One `models:` entry served by llama-server. An explicit free port (instead of
    `${PORT}` from `startPort`) keeps suites running side by side from colliding."""
    port = free_port()
    argv = server_argv(binary, gguf, port, model_id, *extra)
    return (
        f"  {model_id}:\n"
        f"    cmd: {' '.join(argv)}\n"
        f"    proxy: http://127.0.0.1:{port}\n"
        f"    checkEndpoint: /health\n"
    )


def config_yaml(scheduler: str, entries: list[str]) -> str:
    return (
        "healthCheckTimeout: 60\n"
        "logLevel: debug\n"
        f"routing:\n  scheduler:\n    use: {scheduler}\n"
        "models:\n" + "".join(entries)
    )


@pytest.fixture
def llama_config(llama_server_bin: Path, tmp_path: Path) -> Any:
    """Factory: `llama_config(scheduler, {model_id: (gguf, [extra llama-server flags])})`
    writes a YAML config for `llama-swap --config` and returns its path."""
    counter = iter(range(1000))

    def write(scheduler: str, models: dict[str, tuple[Path, list[str]]]) -> Path:
        entries = [
            model_yaml(llama_server_bin, model_id, gguf, *extra)
            for model_id, (gguf, extra) in models.items()
        ]
        path = tmp_path / f"config-{scheduler}-{next(counter)}.yaml"
        path.write_text(config_yaml(scheduler, entries))
        return path

    return write


@pytest.fixture
def swap_proxy(tiny_models: TinyModels, tmp_path: Path) -> Iterator[Any]:
    """Factory: `swap_proxy(config_path, *extra_args)` runs `llama-swap --config` on a free
    port, polls `/health`, and at teardown stops it and proves no llama-server child survived."""
    started: list[SwapProxy] = []

    def start(config: Path, *extra: str) -> SwapProxy:
        port = free_port()
        log = tmp_path / f"llama-swap-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [LLAMA_SWAP, "--config", str(config), "--listen", f"127.0.0.1:{port}", *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        proxy = SwapProxy(proc, f"http://127.0.0.1:{port}", log)
        started.append(proxy)
        wait_healthy(f"{proxy.url}/health", proc, log)
        return proxy

    yield start

    problems: list[str] = []
    for proxy in started:
        proxy.llama_children()  # remember the children's pids before stopping
        stop_process(proxy.proc)
        if proxy.proc.returncode not in (0, -signal.SIGTERM):
            problems.append(f"llama-swap exited with {proxy.proc.returncode}")
    # Every llama-server we ever started has our models directory on its command line.
    deadline = time.monotonic() + 5
    survivors = llama_servers_mentioning(str(tiny_models.dir))
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors = llama_servers_mentioning(str(tiny_models.dir))
    for proc in survivors:
        with contextlib.suppress(psutil.NoSuchProcess):
            problems.append(f"llama-server survived the proxy: pid {proc.pid} {proc.cmdline()}")
            proc.kill()
    if problems:
        logs = "\n".join(p.log_tail() for p in started)
        pytest.fail("\n".join(problems) + "\n" + logs)
