"""The proxy image is built with podman, serves the demo, and stops cleanly on SIGTERM.

Built from the top-level Containerfile on a Debian 12 base made with debootstrap (the same
Containerfile builds on the usual slim Python base elsewhere). The container runs as a non-root
user under tini; SIGTERM (what `docker stop` and Kubernetes send) must end it with exit code 0
and leave no process of it behind. The test fails, never skips, when podman cannot run here.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import psutil
import pytest

from tests.deploy.containers import REPO_ROOT, Podman, build_image, run
from tests.e2e.llama_fixtures import http_status
from tests.e2e.procs import free_port

pytestmark = pytest.mark.timeout(1800)
IMAGE = "localhost/llama-swap-py:proxy-test"


@pytest.fixture(scope="module")
def podman() -> Podman:
    return Podman.for_this_machine()


@pytest.fixture(scope="module")
def proxy_image(podman: Podman) -> str:
    build_image(podman, "proxy", IMAGE)
    return IMAGE


@pytest.fixture
def container_name(podman: Podman) -> Iterator[str]:
    name = f"llama-swap-test-{free_port()}"
    yield name
    subprocess.run(podman.argv("rm", "-f", "-t", "0", name), env=podman.env(),
                   capture_output=True, check=False)


def wait_until_healthy(podman: Podman, name: str, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(url) == 200:
            return
        state = podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
        if state != "running":
            logs = podman("logs", name).stdout + podman("logs", name).stderr
            raise AssertionError(f"container {state} before {url} answered:\n{logs}")
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_the_image_declares_a_non_root_user_a_healthcheck_and_the_config_dir_command(
    podman: Podman, proxy_image: str
) -> None:
    image = json.loads(podman("image", "inspect", proxy_image).stdout)[0]
    config = image["Config"]
    assert config["User"] not in ("", "0", "root")
    assert config["Entrypoint"][:2] == ["tini", "--"]
    assert config["Cmd"][:3] == ["--config-dir", "/config", "--watch-config"]
    healthcheck = image.get("Healthcheck") or config.get("Healthcheck") or {}
    assert "LLAMA_SWAP_HEALTH_URL" in " ".join(healthcheck.get("Test", [])), healthcheck
    assert "LLAMA_SWAP_HEALTH_URL=http://127.0.0.1:8080/health" in config["Env"]


def test_the_demo_runs_in_the_container_and_sigterm_stops_it_cleanly(
    podman: Podman, proxy_image: str, container_name: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    podman(
        "run", "-d", "--name", container_name, "--network=host",
        "--read-only",  # as the Kubernetes manifests run it (podman adds a tmpfs /tmp)
        "-e", f"LLAMA_SWAP_HEALTH_URL={base}/health",
        proxy_image, "--demo", "--listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    wait_until_healthy(podman, container_name, f"{base}/health")

    req = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps({"model": "small", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        answer = json.loads(resp.read())
    assert answer["model"] == "small" and answer["choices"][0]["message"]["content"]

    # The image's own HEALTHCHECK passes, run on demand (no systemd timers here).
    assert podman("healthcheck", "run", container_name).returncode == 0

    rows = [line.split() for line in
            podman("top", container_name, "hpid", "user").stdout.splitlines()[1:]]
    host_pids = [int(row[0]) for row in rows]
    assert len(host_pids) >= 3, rows  # tini, llama-swap, the model server
    assert {row[1] for row in rows} == {"llama"}, rows
    assert "fake_upstream" in podman("top", container_name, "args").stdout

    podman("kill", "--signal", "TERM", container_name)
    exit_code = podman("wait", container_name, timeout=60).stdout.strip()
    logs = podman("logs", container_name)
    assert exit_code == "0", logs.stdout + logs.stderr
    assert "shutdown complete" in logs.stdout + logs.stderr
    # the build stage had a compiler, so the image runs the compiled request path
    assert "llama-swap: running compiled (mypyc)" in logs.stderr, logs.stderr
    left = [pid for pid in host_pids if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert left == [], left


def test_version_inside_the_image_names_the_commit_it_was_built_from(
    podman: Podman, proxy_image: str
) -> None:
    head = run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]).stdout.strip()
    out = podman("run", "--rm", "--network=host", proxy_image, "--version").stdout
    assert f"({head})" in out, out
