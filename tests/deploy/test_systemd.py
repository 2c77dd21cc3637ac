"""deploy/systemd/llama-swap.service: a hardened unit that still lets model servers use GPUs.

`systemd-analyze verify` checks it as systemd would load it (unknown keys, bad values, a missing
executable), with ExecStart pointed at this checkout's `llama-swap`; the hardening and GPU
settings it must keep are checked by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT = REPO_ROOT / "deploy" / "systemd" / "llama-swap.service"
INSTALLED = "/opt/llama-swap/bin/llama-swap"


def settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, repeated keys kept in order (configparser drops them)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is not installed")
    here = str(Path(sys.executable).parent / "llama-swap")
    unit = tmp_path / "llama-swap.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, here))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_the_unit_is_hardened() -> None:
    s = settings()
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "read-only",
        "PrivateTmp": "yes", "RestrictSUIDSGID": "yes", "CapabilityBoundingSet": "",
        "DynamicUser": "yes", "StateDirectory": "llama-swap",
        "WorkingDirectory": "%S/llama-swap",
    }
    assert {k: s[k][-1] for k in expected} == expected


def test_gpu_devices_stay_usable() -> None:
    s = settings()
    assert s["PrivateDevices"] == ["no"]  # "yes" would hide /dev/nvidia* and /dev/dri
    assert s["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in s["DeviceAllow"]}
    assert {"char-nvidia-frontend", "char-nvidia-uvm", "char-drm", "char-kfd"} <= allowed
    assert set(s["SupplementaryGroups"][0].split()) == {"video", "render"}
    assert "MemoryDenyWriteExecute" not in s  # GPU runtimes compile kernels at run time


def test_the_service_reloads_and_stops_the_way_llama_swap_expects() -> None:
    s = settings()
    argv = s["ExecStart"][0].split()
    assert argv[0] == INSTALLED
    assert "--watch-config" in argv and argv[argv.index("--config-dir") + 1] == "/etc/llama-swap"
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillMode"] == ["mixed"]  # llama-swap stops its model servers itself
    assert int(s["TimeoutStopSec"][0]) > 30  # above llama-swap's own shutdown budget
