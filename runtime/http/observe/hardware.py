"""What machine the models run on, for `GET /api/hardware`: one snapshot, taken at startup.

Why: a bug report or a benchmark needs the host's CPU, memory and accelerators in one
stable shape (schema version 1, shared with the Go original). Unknown facts are `null`,
never placeholders (`n/a`, `unknown` and empty strings become `null`).

Sources, best effort, each optional (Linux; elsewhere only what Python itself knows):
- the architecture and OS family from Python's `platform`; the OS name and version from
  `os-release`, the kernel from `uname`;
- the environment: WSL (kernel name), a container (`/.dockerenv`, `/run/.containerenv`,
  container names in `/proc/1/cgroup`), else `systemd-detect-virt` when installed, else
  `unknown`;
- CPU vendor, model, sockets and physical cores from `/proc/cpuinfo`, logical threads
  from the OS;
- memory: the larger of `MemTotal` and the pages `/proc/zoneinfo` says are present,
  capped by a cgroup memory limit;
- accelerators: `nvidia-smi` when on PATH, and DRM cards under `/sys/class/drm` with an
  accessible render node (vendor by PCI id, VRAM, driver and its version, power cap);
  records of one PCI device merge (first known value wins), then are numbered from 0.

Reading is blocking (a subprocess, small files): the caller runs `detect` in a thread.
The parsers are pure functions of text, tested on their own.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
TOOL_TIMEOUT = 10.0  # seconds for one external tool
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "armv7", "ppc64le": "ppc64le", "riscv64": "riscv64", "s390x": "s390x"}
_OS = {"linux": "linux", "darwin": "macos", "win32": "windows", "windows": "windows"}
_CONTAINERS = {"docker": "Docker", "lxc": "LXC", "podman": "podman", "containerd": "containerd",
               "rkt": "rkt", "systemd-nspawn": "systemd-nspawn"}
_VM_NAMES = {"kvm": "KVM", "vmware": "VMware", "oracle": "VirtualBox", "microsoft": "Hyper-V"}
_PCI_VENDORS = {"0x10de": "NVIDIA", "0x1002": "AMD", "0x1022": "AMD", "0x8086": "Intel",
                "0x106b": "Apple"}
_CARD = re.compile(r"^card\d+$")


def known(value: Any) -> str | None:
    """A reported text, or None when it says nothing."""
    if value is None:
        return None
    text = str(value).strip()
    return None if not text or text.lower() in ("n/a", "unknown", "[n/a]") else text


def architecture(machine: str) -> dict[str, Any]:
    name = _ARCH.get(machine.lower(), "other")
    raw = None if name == machine else machine
    return {"name": name, "raw_name": raw}


def os_release(text: str) -> dict[str, str]:
    """`KEY=value` lines of an os-release file, quotes removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out


def cpuinfo(text: str) -> dict[str, Any]:
    """Vendor, model, socket and physical core counts from /proc/cpuinfo."""
    vendor = model = None
    sockets: set[str] = set()
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for block in text.split("\n\n"):
        physical = core = ""
        for line in block.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "vendor_id" and vendor is None:
                vendor = known(value)
            elif key in ("model name", "Model") and model is None:
                model = known(value)
            elif key == "physical id":
                physical = value
                sockets.add(value)
            elif key == "core id":
                core = value
        if physical and core:
            cores.add((physical, core))
    return {"vendor": vendor, "model": model, "socket_count": len(sockets) or None,
            "physical_core_count": len(cores) or None}


def meminfo_total(text: str) -> int | None:
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(match.group(1)) * 1024 if match else None


def zoneinfo_present(text: str, page_size: int) -> int | None:
    """Bytes of memory the zones say are present (device zones left out)."""
    pages = 0
    include = False
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "Node" and fields[2] == "zone":
            include = fields[3] != "Device"
        elif include and len(fields) == 2 and fields[0] == "present" and fields[1].isdigit():
            pages += int(fields[1])
    return pages * page_size if pages else None


def cgroup_limit(text: str) -> int | None:
    value = text.strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def nvidia_csv(text: str) -> list[dict[str, Any]]:
    """Accelerator records from `nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,
    memory.total,driver_version,power.limit --format=csv,noheader,nounits` (MiB, W)."""
    out: list[dict[str, Any]] = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) != 7:
            continue
        memory = _float(row[4])
        power = _float(row[6])
        version = known(row[5])
        out.append({
            "identity": _pci_identity(row[3]) or row[2].strip(),
            "kind": "gpu", "vendor": "NVIDIA", "model": known(row[1]), "architecture": None,
            "memory": {"kind": "dedicated",
                       "capacity_bytes": int(memory * 1024 * 1024) if memory else None},
            "driver": {"name": "NVIDIA", "version": version} if version else None,
            "power_limit_watts": power if power and power > 0 else None,
        })
    return out


def _float(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _pci_identity(bus_id: str) -> str:
    """`00000000:01:00.0` and `0000:01:00.0` name the same device."""
    text = bus_id.strip().lower()
    domain, sep, rest = text.partition(":")
    if sep and len(domain) > 4:
        text = domain[-4:] + ":" + rest
    return text


def merged(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per device (first known value wins), sorted by identity then model,
    numbered from 0."""
    by_identity: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    for rec in found:
        ident = rec.get("identity") or ""
        seen = by_identity.get(ident) if ident else None
        if seen is None:
            rec = {**rec, "memory": dict(rec["memory"])}
            if ident:
                by_identity[ident] = rec
            records.append(rec)
            continue
        for key in ("vendor", "model", "architecture", "driver", "power_limit_watts"):
            if seen.get(key) is None:
                seen[key] = rec.get(key)
        if seen["memory"].get("kind") in ("", "unknown", "shared_system") and rec["memory"]["kind"] == "dedicated":
            seen["memory"]["kind"] = "dedicated"
        if seen["memory"].get("capacity_bytes") is None:
            seen["memory"]["capacity_bytes"] = rec["memory"].get("capacity_bytes")
    records.sort(key=lambda r: (r.get("identity") or "", r.get("model") or ""))
    out = []
    for index, rec in enumerate(records):
        item = {k: v for k, v in rec.items() if k != "identity"}
        out.append({"index": index, **item})
    return out


class Host:
    """Where facts are read: a filesystem root (tests use a fake one) and a PATH."""

    def __init__(self, root: Path = Path("/"), path: str | None = None) -> None:
        self.root = root
        self.path = path

    def read(self, name: str) -> str:
        try:
            return (self.root / name.lstrip("/")).read_text(errors="replace")
        except OSError:
            return ""

    def exists(self, name: str) -> bool:
        return (self.root / name.lstrip("/")).exists()

    def run(self, tool: str, *args: str) -> tuple[int, str] | None:
        """(exit code, stdout) of a tool on PATH, or None when it is absent or hangs."""
        binary = shutil.which(tool, path=self.path)
        if binary is None:
            return None
        try:
            done = subprocess.run([binary, *args], capture_output=True, timeout=TOOL_TIMEOUT,
                                  check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.returncode, done.stdout.decode("utf-8", "replace")


def environment(host: Host, kernel: str) -> dict[str, Any]:
    lowered = kernel.lower()
    if "microsoft" in lowered or "wsl" in lowered:
        return {"kind": "wsl", "name": "WSL", "version": None}
    if host.exists("/.dockerenv"):
        return {"kind": "container", "name": "Docker", "version": None}
    if host.exists("/run/.containerenv"):
        return {"kind": "container", "name": "podman", "version": None}
    cgroup = host.read("/proc/1/cgroup")
    for marker, name in (("docker", "Docker"), ("lxc", "LXC"), ("kubepods", "containerd")):
        if marker in cgroup:
            return {"kind": "container", "name": name, "version": None}
    ran = host.run("systemd-detect-virt")
    if ran is not None:
        code, out = ran
        name = out.strip()
        if code == 0 and name and name != "none":
            kind = "container" if name in _CONTAINERS else "virtual_machine"
            shown = _CONTAINERS.get(name) or _VM_NAMES.get(name) or name
            return {"kind": kind, "name": shown, "version": None}
        if code == 1 or name == "none":
            return {"kind": "native", "name": None, "version": None}
    return {"kind": "unknown", "name": None, "version": None}


def drm_cards(host: Host) -> list[dict[str, Any]]:
    """GPUs the kernel's DRM layer shows, when their render node is accessible."""
    out: list[dict[str, Any]] = []
    base = host.root / "sys/class/drm"
    for card in sorted(base.glob("card*")) if base.is_dir() else ():
        if not _CARD.match(card.name):
            continue
        device = card / "device"
        nodes = list((device / "drm").glob("renderD*"))
        if not any(host.exists(f"/dev/dri/{node.name}") for node in nodes):
            continue
        vendor = _PCI_VENDORS.get(_text(device / "vendor").lower())
        if vendor is None:
            continue
        vram = _text(device / "mem_info_vram_total")
        driver_name = device.joinpath("driver").resolve().name if (device / "driver").exists() else ""
        version = _text(host.root / "sys/module" / driver_name / "version") if driver_name else ""
        power = None
        for cap in sorted(device.glob("hwmon/hwmon*/power1_cap")):
            microwatts = _float(_text(cap))
            if microwatts and microwatts > 0:
                power = microwatts / 1_000_000
                break
        out.append({
            "identity": _pci_identity(device.resolve().name),
            "kind": "gpu", "vendor": vendor, "model": known(_text(device / "product_name")),
            "architecture": None,
            "memory": {"kind": "dedicated" if vram.isdigit() and int(vram) > 0 else "shared_system",
                       "capacity_bytes": int(vram) if vram.isdigit() and int(vram) > 0 else None},
            "driver": ({"name": known(driver_name), "version": known(version)}
                       if driver_name or version else None),
            "power_limit_watts": power,
        })
    return out


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def detect(version: str, host: Host | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The hardware snapshot (blocking)."""
    host = host or Host()
    uname = platform.uname()
    family = _OS.get(platform.system().lower()) or _OS.get(sys.platform, "other")
    osr = os_release(host.read("/etc/os-release") or host.read("/usr/lib/os-release"))
    operating: dict[str, Any] = {
        "family": family, "name": known(osr.get("ID")), "version": known(osr.get("VERSION_ID")),
        "kernel": known(uname.release),
    }
    if family == "other":
        operating["raw_family"] = platform.system()
    cpu = cpuinfo(host.read("/proc/cpuinfo"))
    logical = os.cpu_count()
    cores = cpu["physical_core_count"]
    memory = meminfo_total(host.read("/proc/meminfo"))
    present = zoneinfo_present(host.read("/proc/zoneinfo"), os.sysconf("SC_PAGE_SIZE"))
    if present and (memory is None or present > memory):
        memory = present
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        limit = cgroup_limit(host.read(limit_file))
        if limit is not None and memory is not None and limit < memory:
            memory = limit
    found: list[dict[str, Any]] = []
    query = "index,name,uuid,pci.bus_id,memory.total,driver_version,power.limit"
    ran = host.run("nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits")
    if ran is not None and ran[0] == 0:
        found.extend(nvidia_csv(ran[1]))
    found.extend(drm_cards(host))
    return {
        "schema_version": SCHEMA_VERSION,
        "captured_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "capture": {"scope": "inference_host", "method": "detected",
                    "detector": {"name": "llama-swap", "version": version}},
        "architecture": architecture(uname.machine),
        "operating_system": operating,
        "environment": environment(host, uname.release),
        "cpu": {"vendor": cpu["vendor"], "model": cpu["model"], "socket_count": cpu["socket_count"],
                "physical_core_count": cores if cores and (not logical or cores <= logical) else None,
                "logical_thread_count": logical},
        "memory": {"capacity_bytes": memory},
        "accelerators": merged(found),
    }
