"""Session fixtures for the shipping tests: one wheel build, one virtualenv holding it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.wheel_fixtures import WheelVenv, build_wheel, make_wheel_venv


@pytest.fixture(scope="session")
def wheel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory, wheel_file: Path) -> WheelVenv:
    return make_wheel_venv(tmp_path_factory.mktemp("wheel-venv") / "venv", wheel_file)
