"""The peers the side-by-side suite (`python -m bench all`) runs next to llama-swap, and
how each is brought up: nginx (the Debian package, installed with apt-get when missing
and allowed), the LiteLLM proxy (from PyPI, in its own virtualenv so its many pins never
touch the project's), llama.cpp's own router mode, and plain llama-server processes.

Every process is started in a `with` block that stops it (and its children) on exit,
so an interrupted run leaves nothing behind.  Readiness is polled over HTTP, never
slept for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from _runtime_harness import (  # type: ignore[import-not-found]
    ROOT,
    free_port,
    kill_pids,
    live_descendants,
    stop_process,
)

CACHE = Path(os.environ.get("LLAMA_SWAP_CACHE", Path.home() / ".cache" / "llama-swap-py"))
LITELLM_VENV = CACHE / "litellm-venv"
LITELLM_SPEC = os.environ.get("LLAMA_SWAP_BENCH_LITELLM", "litellm[proxy]")
MASTER_KEY = "sk-bench-master"


def load_script(name: str) -> object:
    """A module from scripts/ (the llama-server build and the tiny model writer)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def llama_server_binary() -> Path | None:
    found: Path | None = load_script("build_llama_server").find_cached_binary()  # type: ignore[attr-defined]
    return found


def tiny_model(path: Path, seed: int, size: str = "tiny") -> Path:
    """A generated random-weight model: "tiny" (~0.5 MB, thousands of tokens/s) or
    "small" (~25 MB, hundreds of tokens/s: streams whose chunks come ms apart)."""
    make = load_script("make_tiny_gguf")
    written: Path = make.write_tiny_gguf(path, seed=seed, spec=make.SPECS[size])  # type: ignore[attr-defined]
    return written


# ---------------------------------------------------------------- readiness, versions

def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 120,
              headers: dict[str, str] | None = None, interval: float = 0.02) -> float:
    """Poll `url` until it answers 200; seconds it took.  Raises when `proc` exits first."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(interval)
    raise TimeoutError(url)


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


# ---------------------------------------------------------------- process groups

@dataclass
class Proc:
    """A running peer: its URL and the processes whose CPU and memory are its cost."""

    url: str
    pids: list[int]

    def processes(self) -> list[psutil.Process]:
        out = []
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(pid))
        return out


@contextlib.contextmanager
def spawned(argv: list[str], env: dict[str, str] | None = None,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` for the block; stop it and whatever it started afterwards."""
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    try:
        yield proc
    finally:
        kids = [kid.pid for kid, _ in live_descendants(proc.pid)]
        stop_process(proc, grace=10)
        kill_pids(kids)
        if log is not None:
            out.close()  # type: ignore[union-attr]


# ---------------------------------------------------------------- nginx

def ensure_nginx(install: bool) -> tuple[str | None, str]:
    """The nginx binary, installing the Debian package `nginx-light` when missing and
    `install`; else (None, why it is skipped)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None and install and shutil.which("apt-get") is not None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "nginx-light"]
        if os.geteuid() != 0 and shutil.which("sudo"):
            cmd = ["sudo", "-n", *cmd]
        ok = subprocess.run(cmd, capture_output=True, env=env).returncode == 0
        if not ok:  # the package lists may be missing: refresh once and retry
            subprocess.run([*cmd[:-4], "update", "-q"], capture_output=True, env=env)
            subprocess.run(cmd, capture_output=True, env=env)
        binary = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        return None, ("nginx skipped: not installed" + (
            " and `apt-get install nginx-light` failed" if install else
            " (run without --no-install to install the Debian package nginx-light)"))
    return binary, version_of([binary, "-v"]).replace("nginx version: ", "")


# ---------------------------------------------------------------- LiteLLM

def ensure_litellm(install: bool) -> tuple[Path | None, str]:
    """LiteLLM's proxy in its own virtualenv under the cache; (None, why) when absent."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists() and install:
        print(f"  installing {LITELLM_SPEC} into {LITELLM_VENV} (once; a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q", LITELLM_SPEC]
        if subprocess.run(pip, capture_output=True).returncode != 0:
            return None, f"LiteLLM skipped: `pip install {LITELLM_SPEC}` failed"
    if not exe.exists():
        return None, "LiteLLM skipped: not installed (run without --no-install)"
    version = version_of([str(LITELLM_VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('litellm'))"])
    return exe, version


def litellm_config(models: dict[str, str]) -> str:
    """A DB-less pass-through config: each model name forwarded to `api_base` as an
    OpenAI-compatible server, with a master key (the proxy refuses to start without)."""
    lines = ["model_list:"]
    for name, base in models.items():
        lines += [f"  - model_name: {name}", "    litellm_params:",
                  f"      model: openai/{name}", f"      api_base: {base}/v1",
                  "      api_key: none"]
    lines += ["litellm_settings:", "  drop_params: true", "  telemetry: false",
              "general_settings:", f"  master_key: {MASTER_KEY}"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def litellm(exe: Path, models: dict[str, str], workdir: Path) -> Iterator[Proc]:
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(models))
    port = free_port()
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "LITELLM_LOG": "ERROR"}
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with spawned(argv, env, workdir / "litellm.log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/liveliness", proc, timeout=180, interval=0.2)
        pids = [proc.pid, *(k.pid for k, _ in live_descendants(proc.pid))]
        yield Proc(url, pids)


# ---------------------------------------------------------------- llama.cpp

def llama_server_args(binary: Path, model: Path, port: int, *extra: str) -> list[str]:
    return [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-c", "4096", "-np", "4", "-t", "1", "--no-webui", *extra]


@contextlib.contextmanager
def llama_router(binary: Path, models_dir: Path) -> Iterator[Proc]:
    """llama.cpp's router mode: one server that starts a child per model on demand and,
    with `--models-max 1`, stops the loaded one to load another (a swap)."""
    port = free_port()
    argv = [str(binary), "--models-dir", str(models_dir), "--models-max", "1",
            "--host", "127.0.0.1", "--port", str(port), "-c", "4096", "-np", "4", "-t", "1"]
    with tempfile.TemporaryDirectory() as tmp, spawned(argv, log=Path(tmp) / "router.log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v1/models", proc)
        yield Proc(url, [proc.pid])


def peak_rss(procs: list[psutil.Process]) -> int:
    """Sum of the processes' peak resident set (VmHWM, Linux) in bytes; current RSS
    where the peak is not readable."""
    total = 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                hwm = next((line for line in f if line.startswith("VmHWM:")), None)
            total += int(hwm.split()[1]) * 1024 if hwm else p.memory_info().rss
        except (OSError, psutil.Error, ValueError):
            continue
    return total


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total
