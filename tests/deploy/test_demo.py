"""`pip install <wheel> && llama-swap --demo` works from any directory.

The demo config and the fake upstream it runs are part of the package; the demo's models are
started with the interpreter llama-swap itself runs on, so PATH does not have to hold the
installation's scripts (here PATH has only the system directories and the new virtualenv).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from llama_swap.runtime.cli import EXIT_USAGE, main, use_demo_config
from tests.deploy.wheel_fixtures import WheelVenv
from tests.e2e.llama_fixtures import tail, wait_healthy
from tests.e2e.procs import free_port, live_descendants, stop_process


def post_json(url: str, body: dict[str, object]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status), resp.read()


def still_running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a child reparented to init is reaped there, not by us)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_demo_runs_from_an_installed_wheel_in_any_directory(
    wheel_venv: WheelVenv, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    env = wheel_venv.env()
    env["PATH"] = "/usr/bin:/bin"  # not even the virtualenv's scripts
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(wheel_venv.bin / "llama-swap"), "--demo", "--listen", f"127.0.0.1:{port}"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/health", proc, log)
        status, body = post_json(f"{base}/v1/chat/completions", {
            "model": "small", "messages": [{"role": "user", "content": "hi"}],
        })
        answer = json.loads(body)
        assert status == 200 and answer["model"] == "small", body
        assert answer["choices"][0]["message"]["content"].startswith("tok0 tok1")
        kids = live_descendants(proc.pid)
        children = [cmd for _, cmd in kids]
        assert any("llama_swap.runtime.fake_upstream" in " ".join(c) for c in children), children
        assert all(c[0].startswith(str(wheel_venv.root)) for c in children), children

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, tail(log)
        assert [k.pid for k, _ in kids if still_running(k)] == []
    finally:
        stop_process(proc)


@pytest.mark.parametrize("extra", [["--config", "x.yaml"], ["--config-dir", "d"], ["--plan", "p"]])
def test_demo_with_another_config_source_is_a_usage_error(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--demo", *extra]) == EXIT_USAGE
    assert "--demo cannot be combined" in capsys.readouterr().err


def test_the_packaged_demo_config_compiles_without_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llama_swap.compiler.pipeline import compile_paths

    monkeypatch.setenv("LLAMA_SWAP_DEMO_PYTHON", "restored after the test")
    path = use_demo_config()
    result = compile_paths(path, None, strict=True)
    assert sorted(result.plan.models) == ["embed", "large", "small"]
    assert result.plan.models["small"].cmd[:3] == (
        sys.executable, "-m", "llama_swap.runtime.fake_upstream")
