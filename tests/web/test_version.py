"""`/api/version` content: package version, and commit/date from the git checkout or "unknown"."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from llama_swap.runtime.http.render.version import UNKNOWN, build_info, git_info, package_version


def test_version_comes_from_the_package_metadata() -> None:
    assert package_version() == metadata.version("llama-swap-py")
    assert build_info()["version"] == package_version()
    assert build_info("9.9.9")["version"] == "9.9.9"


def test_no_checkout_means_unknown(tmp_path: Path) -> None:
    assert git_info(tmp_path) == (UNKNOWN, UNKNOWN)


def test_a_checkout_gives_commit_and_date() -> None:
    repo = Path(__file__).resolve().parents[2]
    commit, date = git_info(repo)
    if (repo / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", date)
    else:
        assert (commit, date) == (UNKNOWN, UNKNOWN)
