"""The `llama-server` image target serves a GGUF model from mounted folders, no other setup.

`podman run -v models:/models -v config:/config` with a one-model fragment in the config
folder: a chat request through llama-swap starts the CPU llama-server inside the container and
gets its answer; SIGTERM stops both with exit code 0. The llama-server binary comes from the
suite's cached build of the same sdist (LLAMA_BUILD_IMAGE), so this costs seconds, not a
compile; like the other llama-server tests it fails under CI when that build is missing.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.containers import Podman, build_image, llama_server_stage
from tests.e2e.llama_fixtures import TinyModels, http_status, llama_server_bin, tiny_models
from tests.e2e.procs import free_port

__all__ = ["llama_server_bin", "tiny_models"]  # fixtures used below
pytestmark = [pytest.mark.timeout(1800), pytest.mark.llama_server]
IMAGE = "localhost/llama-swap-py:cpu-test"


@pytest.fixture(scope="module")
def podman() -> Podman:
    return Podman.for_this_machine()


@pytest.fixture(scope="module")
def cpu_image(podman: Podman, llama_server_bin: Path) -> str:
    stage = llama_server_stage(podman, llama_server_bin)
    build_image(podman, "llama-server", IMAGE, "--build-arg", f"LLAMA_BUILD_IMAGE={stage}")
    return IMAGE


@pytest.fixture
def container_name(podman: Podman) -> Iterator[str]:
    name = f"llama-swap-cpu-test-{free_port()}"
    yield name
    subprocess.run(podman.argv("rm", "-f", "-t", "0", name), env=podman.env(),
                   capture_output=True, check=False)


def readable_by_anyone(*paths: Path) -> None:
    """The container's user (10001) must read what the root-owned test folders hold."""
    for path in paths:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_the_cpu_image_serves_a_gguf_from_mounted_folders(
    podman: Podman, cpu_image: str, tiny_models: TinyModels, tmp_path: Path, container_name: str
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "10-models.yaml").write_text(
        "models:\n"
        "  tiny:\n"
        "    cmd: llama-server --host 127.0.0.1 --port ${PORT} --alias ${MODEL_ID}\n"
        "      -m /models/tiny-a.gguf -c 512 -np 1 -t 1\n"
        "    checkEndpoint: /health\n"
    )
    readable_by_anyone(tmp_path, config, config / "10-models.yaml", tiny_models.dir,
                       tiny_models.a)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    podman(
        "run", "-d", "--name", container_name, "--network=host", "--read-only",
        "-v", f"{config}:/config:ro", "-v", f"{tiny_models.dir}:/models:ro",
        cpu_image, "--config-dir", "/config", "--watch-config", "--listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while http_status(f"{base}/health") != 200:
        logs = podman("logs", container_name)
        assert time.monotonic() < deadline, logs.stdout + logs.stderr
        time.sleep(0.2)

    req = urllib.request.Request(
        f"{base}/v1/chat/completions", headers={"content-type": "application/json"},
        data=json.dumps({"model": "tiny", "max_tokens": 4, "ignore_eos": True,
                         "messages": [{"role": "user", "content": "hi"}]}).encode(),
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        answer = json.loads(resp.read())
    assert answer["usage"]["completion_tokens"] == 4, answer
    assert "llama-server" in podman("top", container_name, "args").stdout

    podman("kill", "--signal", "TERM", container_name)
    assert podman("wait", container_name, timeout=60).stdout.strip() == "0"
