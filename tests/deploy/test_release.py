"""Release files and what a built wheel carries.

A wheel has no git checkout to ask, so it must carry its own license, the demo, and the commit
and time it was built from; `llama-swap --version` run from it (in a directory far from any
checkout) reports them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.deploy.wheel_fixtures import REPO_ROOT, WheelVenv, run

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


def expected_commit() -> str:
    """HEAD of the checkout the wheel was built from, marked -dirty like the build stamp."""
    head = run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]).stdout.strip()
    status = run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"])
    return head + ("-dirty" if status.stdout.strip() else "")


def test_the_license_file_is_the_mit_license_pyproject_declares() -> None:
    assert PROJECT["license"] == "MIT"
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_the_changelog_follows_keep_a_changelog_and_has_this_version() -> None:
    text = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "keepachangelog.com" in text
    assert "## [Unreleased]" in text
    assert re.search(rf"^## \[{re.escape(PROJECT['version'])}\] - \d{{4}}-\d\d-\d\d$", text, re.M)
    headings = re.findall(r"^### (\w+)", text, re.M)
    assert headings and set(headings) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed",
                                          "Security"}


def test_the_wheel_carries_license_demo_and_build_stamp(wheel_file: Path) -> None:
    with zipfile.ZipFile(wheel_file) as whl:
        names = set(whl.namelist())
        stamp = whl.read("llama_swap/runtime/_build_info.py").decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    assert "llama_swap/runtime/demo/config.yaml" in names
    assert "llama_swap/runtime/fake_upstream.py" in names
    assert f"COMMIT = {expected_commit()!r}" in stamp


def test_version_from_an_installed_wheel_names_the_commit_it_was_built_from(
    wheel_venv: WheelVenv, tmp_path: Path
) -> None:
    where = run(
        [str(wheel_venv.bin / "python"), "-c", "import llama_swap.runtime as r; print(r.__file__)"],
        cwd=tmp_path, env=wheel_venv.env(),
    ).stdout.strip()
    assert Path(where).is_relative_to(wheel_venv.root), where  # the wheel, not the checkout
    out = run([str(wheel_venv.bin / "llama-swap"), "--version"], cwd=tmp_path,
              env=wheel_venv.env()).stdout.strip()
    assert re.fullmatch(
        rf"version: {re.escape(PROJECT['version'])} \({re.escape(expected_commit())}\), "
        rf"built at {ISO_TIME}",
        out,
    ), out


def test_a_checkout_without_a_stamp_reports_its_git_commit() -> None:
    """The editable install runs from the checkout: no stamp, git answers instead."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "llama-swap"), "--version"],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    ).stdout.strip()
    head = run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]).stdout.strip()
    assert out.startswith(f"version: {PROJECT['version']} ({head}), built at "), out
