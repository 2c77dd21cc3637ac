"""`GET /api/version`: what is running.

The Go binary has its version, commit and build date stamped in at link time.
We have none of that: the version comes from the installed package metadata,
and the commit and date from the git checkout the code runs from (the commit
hash and its committer date), or "unknown" when there is no checkout or no git.
Looked up once per process.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

DIST_NAME = "llama-swap-py"
UNKNOWN = "unknown"


@functools.cache
def package_version() -> str:
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return UNKNOWN


@functools.cache
def git_info(root: Path | None = None) -> tuple[str, str]:
    """(commit hash, commit date ISO 8601) of the checkout holding this package."""
    where = root if root is not None else Path(__file__).resolve().parents[3]
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


def build_info(version: str = "") -> dict[str, str]:
    """`{"version","commit","build_date"}`; `version` overrides the package metadata
    unless empty or "0" (the AppState default)."""
    commit, date = git_info()
    return {
        "version": version if version not in ("", "0") else package_version(),
        "commit": commit,
        "build_date": date,
    }
