"""The hardware snapshot (runtime/http/observe/hardware.py): parsers on sample text, and
detection against a fake filesystem root and fake tools on PATH."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from llama_swap.runtime.http.observe.hardware import (
    Host,
    cpuinfo,
    detect,
    known,
    merged,
    nvidia_csv,
    os_release,
    zoneinfo_present,
)

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6130
physical id\t: 0
core id\t: 0

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6130
physical id\t: 0
core id\t: 0

processor\t: 2
physical id\t: 1
core id\t: 3
"""
ZONEINFO = """Node 0, zone      DMA
  pages free     3840
        present  3998
Node 0, zone   Normal
        present  1000
Node 0, zone   Device
        present  777777
"""
NVIDIA = "0, NVIDIA GeForce RTX 4090, GPU-abc, 00000000:01:00.0, 24564, 550.54, 450.00\n" \
         "1, [N/A], GPU-def, 00000000:02:00.0, [N/A], [N/A], [N/A]\n"
NOW = datetime(2026, 8, 3, 12, 0, tzinfo=UTC)


def test_known_turns_placeholders_into_null() -> None:
    assert [known(v) for v in ("", " n/a ", "Unknown", "[N/A]", None, " x ")] == [
        None, None, None, None, None, "x"]


def test_cpuinfo_counts_sockets_and_physical_cores() -> None:
    assert cpuinfo(CPUINFO) == {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Gold 6130",
                                "socket_count": 2, "physical_core_count": 2}
    assert cpuinfo("") == {"vendor": None, "model": None, "socket_count": None,
                           "physical_core_count": None}


def test_zoneinfo_leaves_out_device_zones() -> None:
    assert zoneinfo_present(ZONEINFO, 4096) == (3998 + 1000) * 4096
    assert zoneinfo_present("", 4096) is None


def test_os_release() -> None:
    assert os_release('ID=ubuntu\nVERSION_ID="24.04"\n# c\nbad\n') == {"ID": "ubuntu", "VERSION_ID": "24.04"}


def test_nvidia_records_and_merging_by_device() -> None:
    records = nvidia_csv(NVIDIA)
    assert records[0]["memory"] == {"kind": "dedicated", "capacity_bytes": 24564 * 1024 * 1024}
    assert records[0]["driver"] == {"name": "NVIDIA", "version": "550.54"}
    assert records[0]["power_limit_watts"] == 450.0
    assert records[1]["model"] is None and records[1]["driver"] is None
    drm = {"identity": "0000:01:00.0", "kind": "gpu", "vendor": "NVIDIA", "model": "other name",
           "architecture": "Ada", "memory": {"kind": "dedicated", "capacity_bytes": 1},
           "driver": None, "power_limit_watts": 1.0}
    out = merged([*records, drm])
    assert [a["index"] for a in out] == [0, 1]
    assert out[0]["model"] == "NVIDIA GeForce RTX 4090" and out[0]["architecture"] == "Ada"
    assert out[0]["memory"]["capacity_bytes"] == 24564 * 1024 * 1024  # the first known value
    assert "identity" not in out[0]


def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "proc/cpuinfo").write_text(CPUINFO)
    (root / "proc/meminfo").write_text("MemTotal:       16384 kB\n")
    (root / "proc/zoneinfo").write_text("")
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    return root


def tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_without_any_tool_the_accelerator_list_is_empty(tmp_path: Path) -> None:
    snap = detect("1.0", Host(fake_root(tmp_path), path=str(tmp_path / "empty-bin")), NOW)
    assert snap["schema_version"] == 1 and snap["captured_at"] == "2026-08-03T12:00:00Z"
    assert snap["capture"] == {"scope": "inference_host", "method": "detected",
                               "detector": {"name": "llama-swap", "version": "1.0"}}
    assert snap["operating_system"]["name"] == "debian" and snap["operating_system"]["version"] == "12"
    assert snap["environment"] == {"kind": "unknown", "name": None, "version": None}
    assert snap["memory"] == {"capacity_bytes": 16384 * 1024}
    assert snap["cpu"]["socket_count"] == 2 and snap["cpu"]["logical_thread_count"] == os.cpu_count()
    assert snap["accelerators"] == []


def test_nvidia_smi_and_the_environment_tools_are_read_when_present(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/memory.max").write_text("8192\n")
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "nvidia-smi", f"printf '{NVIDIA.splitlines()[0]}\\n'\n")
    tool(bin_dir, "systemd-detect-virt", "echo kvm\n")
    snap = detect("1.0", Host(root, path=str(bin_dir)), NOW)
    assert snap["environment"] == {"kind": "virtual_machine", "name": "KVM", "version": None}
    assert snap["memory"] == {"capacity_bytes": 8192}  # the cgroup's limit
    (gpu,) = snap["accelerators"]
    assert (gpu["index"], gpu["vendor"], gpu["model"]) == (0, "NVIDIA", "NVIDIA GeForce RTX 4090")


def test_a_container_marker_wins(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (root / ".dockerenv").write_text("")
    snap = detect("1.0", Host(root, path=str(tmp_path / "empty-bin")), NOW)
    assert snap["environment"] == {"kind": "container", "name": "Docker", "version": None}
