"""Stamp the commit and build time into wheels and sdists.

Why: the Go original has its commit and build date linked into the binary, and
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
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from setuptools import setup
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


setup(cmdclass={"build_py": StampedBuildPy, "sdist": StampedSdist})
