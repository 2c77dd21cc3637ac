"""`GET /api/version`: what is running.

The Go binary has its version, commit and build date stamped in at link time.
Here the version comes from the installed package metadata; the commit and date
come from `llama_swap/runtime/_build_info.py`, which the build (setup.py) writes
into wheels and sdists, else from the git checkout the code runs from (an
editable install: the commit hash and its committer date), else "unknown".
Looked up once per process.
"""

from __future__ import annotations

import functools
import importlib
import subprocess
from importlib import metadata
from pathlib import Path

DIST_NAME = "llama-swap-py"
UNKNOWN = "unknown"
STAMP_MODULE = "llama_swap.runtime._build_info"


@functools.cache
def package_version() -> str:
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return UNKNOWN


@functools.cache
def stamped_info() -> tuple[str, str] | None:
    """(commit, build date) written into this copy at build time, or None (not built)."""
    try:
        module = importlib.import_module(STAMP_MODULE)
    except ImportError:
        return None
    commit, date = getattr(module, "COMMIT", None), getattr(module, "BUILD_DATE", None)
    if isinstance(commit, str) and isinstance(date, str):
        return commit, date
    return None


@functools.cache
def git_info(root: Path | None = None) -> tuple[str, str]:
    """(commit hash, commit date ISO 8601) of the checkout holding this package.

    Only a folder with its own `.git` counts: an installed copy under a virtualenv that
    happens to sit inside some other repository must not report that repository's commit.
    """
    where = root if root is not None else Path(__file__).resolve().parents[3]
    if not (where / ".git").exists():
        return UNKNOWN, UNKNOWN
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "log", "-1", "--format=%H %cI"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN, UNKNOWN
    if len(out) != 2:
        return UNKNOWN, UNKNOWN
    return out[0], out[1]


def commit_and_date() -> tuple[str, str]:
    """The build stamp when there is one, else the checkout's commit, else unknowns."""
    return stamped_info() or git_info()


def version_line() -> str:
    """What `llama-swap --version` prints (the Go original's wording)."""
    commit, date = commit_and_date()
    return f"version: {package_version()} ({commit}), built at {date}"


def build_info(version: str = "") -> dict[str, str]:
    """`{"version","commit","build_date"}`; `version` overrides the package metadata
    unless empty or "0" (the AppState default)."""
    commit, date = commit_and_date()
    return {
        "version": version if version not in ("", "0") else package_version(),
        "commit": commit,
        "build_date": date,
    }
