"""Suite-wide test settings.

Tests are organised by component: tests/compiler (pure compiler + CLI),
tests/runtime (pure scheduler/swapper tests and the process edge),
tests/web (HTTP-surface building blocks), tests/e2e (real child processes
behind the real proxy).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Console scripts (llama-swap, swap-compile, swap-fake-upstream) live next to the
# interpreter running the tests; child processes must find them on PATH.
if str(VENV_BIN) not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


# The activity store's default file lives in the user's state directory: servers the
# tests start (in-process or as child processes) keep their history in a scratch one,
# a fresh directory per test, and one per module for the servers a module shares.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="llama-swap-test-state-")


@pytest.fixture(autouse=True, scope="module")
def _module_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers a module shares (module-scoped fixtures) get a directory of their own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(autouse=True)
def _fresh_state_dir(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def bin_path() -> Path:
    """Directory holding the project's console scripts."""
    return VENV_BIN
