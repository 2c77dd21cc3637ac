"""The README's two commands work on a stock Debian 12 machine.

A fresh Debian 12 root made with debootstrap (its own python3, 3.11.2; the same base image as
the container test) gets a copy of this working tree and nothing else: no virtualenv, no pip or
llama-server cache. The machine-specific part is only how it reaches PyPI (the host's CA bundle)
and the listen port (a free one instead of 8080, which other runs on this machine may hold).

The second command (`bash scripts/test.sh`) runs with `LLAMA_SWAP_CLEAN_ROOT_TEST=1`, which
keeps it from running this test again and from compiling llama-server (the source is still
downloaded and unpacked: that step once broke on Python 3.11.2), and with a subset of the
suite, CLEAN_ROOT_SUBSET: every pure and component test (compiler, runtime, web, layering,
the sdist unpacking); the end-to-end, fault and deployment tests need the llama-server binary,
containers or browsers and run on the host. Lint and the type check run in full.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.containers import HOST_CA_BUNDLE, REPO_ROOT, Podman, base_image, run
from tests.e2e.llama_fixtures import http_status
from tests.e2e.procs import free_port

pytestmark = pytest.mark.timeout(3600)
GUARD = "LLAMA_SWAP_CLEAN_ROOT_TEST"
CLEAN_ROOT_SUBSET = (
    "tests/compiler", "tests/runtime", "tests/web", "tests/test_layering.py",
    "tests/deploy/test_safe_extract.py",
    # Asserts a wall-clock bound, which a machine busy with the host's own run can miss.
    "--deselect", "tests/compiler/test_no_traceback.py::test_alias_bombs_fail_fast",
)


def readme_commands() -> tuple[str, str]:
    """The two commands of the README's first code block: the first line that is not a
    comment after `# 1.` and after `# 2.` (their comments may run over several lines)."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README has no bash block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if re.match(r"# [12]\. ", line)]
    commands = [
        next(line for line in lines[i + 1:] if not line.lstrip().startswith("#")) for i in starts
    ]
    assert len(commands) == 2, lines
    return commands[0], commands[1]


def copy_working_tree(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files: what a fresh clone plus this change holds."""
    listed = run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard"]).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Podman, str, Path]:
    if os.environ.get(GUARD):
        pytest.skip(f"{GUARD} is set: this is the clean-root run itself")
    podman = Podman.for_this_machine()
    image = base_image(podman)
    src = tmp_path_factory.mktemp("clean-root") / "llama-swap-py"
    copy_working_tree(src)
    return podman, image, src


def run_argv(podman: Podman, image: str, src: Path, name: str, *extra: str) -> list[str]:
    return podman.argv(
        "run", "--name", name, "--network=host", "-v", f"{src}:/src", "-w", "/src",
        "-v", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro",
        "-e", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", *extra, image,
    )  # fmt: skip


def remove(podman: Podman, name: str) -> None:
    subprocess.run(podman.argv("rm", "-f", "-t", "0", name), env=podman.env(),
                   capture_output=True, check=False)


def test_the_clean_root_is_debian_12_with_its_own_python(
    clean_root: tuple[Podman, str, Path],
) -> None:
    podman, image, _ = clean_root
    out = podman("run", "--rm", image, "sh", "-c",
                 ". /etc/os-release; echo $VERSION_ID; python3 --version; ls /root").stdout
    version_id, python, *root_home = out.splitlines()
    assert version_id == "12"
    assert python.startswith("Python 3.11.")
    assert root_home == []  # no caches


def test_readme_command_1_serves_the_demo(clean_root: tuple[Podman, str, Path]) -> None:
    podman, image, src = clean_root
    demo, _ = readme_commands()
    port = free_port()
    assert "127.0.0.1:8080" in demo
    command = demo.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    name = f"llama-swap-readme1-{port}"
    try:
        subprocess.run([*run_argv(podman, image, src, name, "-d"), "bash", "-c", command],
                       env=podman.env(), check=True, capture_output=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 900  # creates the venv and installs from PyPI first
        while http_status(f"{base}/health") != 200:
            state = podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
            logs = podman("logs", name)
            assert state == "running", logs.stdout + logs.stderr
            assert time.monotonic() < deadline, logs.stdout + logs.stderr
            time.sleep(0.5)
        req = urllib.request.Request(
            f"{base}/v1/chat/completions", headers={"content-type": "application/json"},
            data=json.dumps({"model": "small",
                             "messages": [{"role": "user", "content": "hi"}]}).encode(),
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert json.loads(resp.read())["model"] == "small"
        # Stop llama-swap itself (the shell running the command is PID 1 and waits for it).
        rows = podman("top", name, "hpid", "args").stdout.splitlines()[1:]
        proxy = [int(r.split()[0]) for r in rows if "llama-swap --demo" in r]
        assert len(proxy) == 1, rows
        os.kill(proxy[0], signal.SIGTERM)
        assert podman("wait", name, timeout=60).stdout.strip() == "0"
    finally:
        remove(podman, name)


def test_readme_command_2_runs_lint_typecheck_and_the_suite(
    clean_root: tuple[Podman, str, Path],
) -> None:
    podman, image, src = clean_root
    _, suite = readme_commands()
    assert suite == "bash scripts/test.sh"
    name = f"llama-swap-readme2-{free_port()}"
    try:
        result = subprocess.run(
            [*run_argv(podman, image, src, name, "-e", f"{GUARD}=1"),
             "bash", "-c", f"{suite} -p no:cacheprovider {' '.join(CLEAN_ROOT_SUBSET)}"],
            env=podman.env(), capture_output=True, text=True, timeout=3000, check=False,
        )
    finally:
        remove(podman, name)
    output = result.stdout + result.stderr
    tail = "\n".join(result.stdout.splitlines()[-60:] + result.stderr.splitlines()[-20:])
    assert result.returncode == 0, tail
    assert "All checks passed!" in output and "Success: no issues found" in output, tail
    assert re.search(r"\b\d+ passed\b", tail) and " failed" not in tail, tail
    assert re.search(r"^/\S+/llama\.cpp$", output, re.M), tail  # the sdist was unpacked
