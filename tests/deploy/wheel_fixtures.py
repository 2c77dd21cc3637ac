"""Build the project's wheel once per session and install it into a fresh virtualenv.

Why: what users get is the wheel, not the checkout. These fixtures build it the way a user does
(`pip wheel .` in the checkout, with build isolation), and install it with `--no-deps` into a new
virtualenv whose only view of the dependencies (aiohttp, ...) is a `.pth` line naming the test
virtualenv's site-packages: nothing is downloaded, and `llama_swap` itself can only come from the
wheel (the test virtualenv's editable hook is a `.pth` file of its own, which a path added by a
`.pth` line never runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run and fail with the command's output when it exits non-zero."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result  # type: ignore[no-any-return]


def build_wheel(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(REPO_ROOT)])
    wheels = sorted(out_dir.glob("llama_swap_py-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@dataclass(frozen=True)
class WheelVenv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self) -> dict[str, str]:
        """An environment with no trace of the test virtualenv on PATH."""
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = f"{self.bin}:/usr/local/bin:/usr/bin:/bin"
        return env


def make_wheel_venv(root: Path, wheel: Path) -> WheelVenv:
    run([sys.executable, "-m", "venv", str(root)])
    venv = WheelVenv(root)
    python = str(venv.bin / "python")
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    Path(purelib.stdout.strip(), "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv
