"""Suite-wide test settings.

Tests are organised by component: tests/compiler (pure compiler + CLI),
tests/runtime (pure scheduler/swapper tests and the process edge),
tests/web (HTTP-surface building blocks), tests/e2e (real child processes
behind the real proxy).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Console scripts (llama-swap, swap-compile, swap-fake-upstream) live next to the
# interpreter running the tests; child processes must find them on PATH.
if str(VENV_BIN) not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def bin_path() -> Path:
    """Directory holding the project's console scripts."""
    return VENV_BIN
