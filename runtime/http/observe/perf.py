"""System statistics for `GET /api/performance` and `GET /metrics`.

Why read /proc directly: the figures are a handful of numbers from three small
files (`/proc/stat`, `/proc/meminfo`, `/proc/loadavg`); no dependency is needed,
and reading them takes microseconds, so sampling runs on the event loop.

`Sampler` takes one sample every `performance.every` into a ring holding an
hour of samples, as the Go original does.  CPU use per core is the share of
non-idle time between two readings, so the sampler reads a baseline when it
starts; its first sample comes after at most one second (not a whole period)
so a dashboard opened right after start has something to show.  Settings are
read on every round, so a reload that changes `every` or `disabled` applies at
the next sample.  GPU statistics come from `nvidia-smi` when it is on PATH;
without it the GPU list stays empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from llama_swap.compiler.defaults import parse_duration

log = logging.getLogger("llama_swap.perf")

PROC = Path("/proc")
FIRST_SAMPLE_AFTER = 1.0  # seconds
RING_SPAN = 3600.0  # seconds of samples kept
NVIDIA_QUERY = (
    "index,name,uuid,temperature.gpu,utilization.gpu,utilization.memory,"
    "memory.used,memory.total,fan.speed,power.draw"
)
NVIDIA_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative jiffies of one core: `busy` (all but idle and iowait) and `total`."""

    busy: int
    total: int


@dataclass(frozen=True, slots=True)
class SysStat:
    timestamp: datetime
    cpu_util_per_core: tuple[float, ...]
    mem_total_mb: int
    mem_used_mb: int
    mem_free_mb: int
    swap_total_mb: int
    swap_used_mb: int
    load_avg_1: float
    load_avg_5: float
    load_avg_15: float

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp.isoformat(),
            "cpu_util_per_core": list(self.cpu_util_per_core),
            "mem_total_mb": self.mem_total_mb,
            "mem_used_mb": self.mem_used_mb,
            "mem_free_mb": self.mem_free_mb,
            "swap_total_mb": self.swap_total_mb,
            "swap_used_mb": self.swap_used_mb,
            "load_avg_1": self.load_avg_1,
            "load_avg_5": self.load_avg_5,
            "load_avg_15": self.load_avg_15,
        }


def parse_cpu_times(text: str) -> list[CpuTimes]:
    """Per-core times from /proc/stat text (`cpuN ...` lines, the aggregate `cpu` skipped)."""
    out: list[CpuTimes] = []
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        fields = [int(x) for x in line.split()[1:]]
        # user nice system idle iowait irq softirq steal [guest guest_nice: part of user/nice]
        values = fields[:8]
        idle = sum(values[3:5])
        total = sum(values)
        out.append(CpuTimes(total - idle, total))
    return out


def cpu_percent(before: list[CpuTimes], after: list[CpuTimes]) -> tuple[float, ...]:
    """Per-core busy share (0-100) between two readings; a core with no elapsed time is 0."""
    out: list[float] = []
    for a, b in zip(before, after, strict=False):
        total = b.total - a.total
        busy = b.busy - a.busy
        pct = 100.0 * busy / total if total > 0 else 0.0
        out.append(round(min(100.0, max(0.0, pct)), 2))
    return tuple(out)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {key: bytes}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        out[key.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


def memory_figures(mem: dict[str, int]) -> tuple[int, int, int, int, int]:
    """(total, used, free, swap total, swap used) in bytes.  `used` is total minus
    MemAvailable (as psutil reports it); kernels without MemAvailable: minus free,
    buffers and page cache."""
    total = mem.get("MemTotal", 0)
    free = mem.get("MemFree", 0)
    if "MemAvailable" in mem:
        used = total - mem["MemAvailable"]
    else:
        cached = mem.get("Cached", 0) + mem.get("SReclaimable", 0)
        used = total - free - mem.get("Buffers", 0) - cached
    if used < 0:
        used = total - free
    swap_total = mem.get("SwapTotal", 0)
    swap_used = max(0, swap_total - mem.get("SwapFree", 0))
    return total, used, free, swap_total, swap_used


def parse_loadavg(text: str) -> tuple[float, float, float]:
    parts = text.split()
    return float(parts[0]), float(parts[1]), float(parts[2])


def _read(path: Path) -> str:
    return path.read_text()


def read_cpu_times(proc: Path = PROC) -> list[CpuTimes]:
    return parse_cpu_times(_read(proc / "stat"))


def read_sys_stat(
    before: list[CpuTimes], after: list[CpuTimes], proc: Path = PROC,
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
) -> SysStat:
    total, used, free, swap_total, swap_used = memory_figures(parse_meminfo(_read(proc / "meminfo")))
    try:
        load = parse_loadavg(_read(proc / "loadavg"))
    except (OSError, ValueError, IndexError):
        load = (0.0, 0.0, 0.0)
    mb = 1024 * 1024
    return SysStat(
        timestamp=now(),
        cpu_util_per_core=cpu_percent(before, after),
        mem_total_mb=total // mb,
        mem_used_mb=used // mb,
        mem_free_mb=free // mb,
        swap_total_mb=swap_total // mb,
        swap_used_mb=swap_used // mb,
        load_avg_1=load[0],
        load_avg_5=load[1],
        load_avg_15=load[2],
    )


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return 0.0


def parse_nvidia_smi(text: str, timestamp: datetime) -> list[dict[str, Any]]:
    """`nvidia-smi --query-gpu=<NVIDIA_QUERY> --format=csv,noheader,nounits` output as GPU stats."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != 10:
            continue
        try:
            gpu_id = int(cols[0])
        except ValueError:
            continue
        out.append({
            "timestamp": timestamp.isoformat(),
            "id": gpu_id,
            "name": cols[1],
            "uuid": cols[2],
            "temp_c": int(_num(cols[3])),
            "gpu_util_pct": _num(cols[4]),
            "mem_util_pct": _num(cols[5]),
            "mem_used_mb": int(_num(cols[6])),
            "mem_total_mb": int(_num(cols[7])),
            "fan_speed_pct": _num(cols[8]),
            "power_draw_w": _num(cols[9]),
        })
    return out


async def read_nvidia_smi(binary: str, timestamp: datetime) -> list[dict[str, Any]]:
    """One `nvidia-smi` query; [] when it fails or takes too long."""
    proc = await asyncio.create_subprocess_exec(
        binary, f"--query-gpu={NVIDIA_QUERY}", "--format=csv,noheader,nounits",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), NVIDIA_TIMEOUT)
    except BaseException as exc:  # timed out, or cancelled at shutdown: leave no child behind
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if not isinstance(exc, TimeoutError):
            raise
        return []
    if proc.returncode != 0:
        return []
    return parse_nvidia_smi(out.decode("utf-8", "replace"), timestamp)


def every_seconds(every: str) -> float:
    """`performance.every` (a Go duration, already validated by the compiler) in seconds;
    a zero or unreadable value means the 5 s default."""
    try:
        seconds = parse_duration(every) / 1e9
    except ValueError:
        seconds = 0.0
    return seconds if seconds > 0 else 5.0


def parse_after(text: str) -> datetime:
    """An RFC 3339 timestamp (`?after=`); ValueError unless it has a date, time and zone."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None or "T" not in text.upper():
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    return value


class Sampler:
    """A ring of recent system (and GPU) samples, filled by `run()` while enabled.

    `settings()` returns (disabled, every-seconds) and is read each round."""

    def __init__(
        self,
        settings: Callable[[], tuple[bool, float]],
        *,
        proc: Path = PROC,
        nvidia_smi: str | None = None,
    ) -> None:
        self._settings = settings
        self._proc = proc
        self._nvidia = nvidia_smi
        self.sys_stats: deque[SysStat] = deque(maxlen=self._capacity(settings()[1]))
        self.gpu_stats: deque[list[dict[str, Any]]] = deque(maxlen=self.sys_stats.maxlen)
        self._baseline: list[CpuTimes] | None = None

    @staticmethod
    def _capacity(every: float) -> int:
        return max(1, int(RING_SPAN / every))

    @classmethod
    def for_gpu_tools(cls, settings: Callable[[], tuple[bool, float]]) -> Sampler:
        """A sampler that uses nvidia-smi when it is on PATH."""
        return cls(settings, nvidia_smi=shutil.which("nvidia-smi"))

    def sample(self) -> SysStat | None:
        """Read /proc once and append a sample (None for the baseline reading)."""
        now = read_cpu_times(self._proc)
        before, self._baseline = self._baseline, now
        if before is None:
            return None
        stat = read_sys_stat(before, now, self._proc)
        self.sys_stats.append(stat)
        return stat

    async def sample_gpus(self, timestamp: datetime) -> None:
        if self._nvidia is None:
            return
        gpus = await read_nvidia_smi(self._nvidia, timestamp)
        if gpus:
            self.gpu_stats.append(gpus)

    def latest(self) -> SysStat | None:
        return self.sys_stats[-1] if self.sys_stats else None

    def since(self, after: datetime | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Samples strictly after `after` (all when None), as JSON-ready dicts."""
        sys_out = [s.to_json() for s in self.sys_stats if after is None or s.timestamp > after]
        gpu_out = [
            g for batch in self.gpu_stats for g in batch
            if after is None or datetime.fromisoformat(g["timestamp"]) > after
        ]
        return sys_out, gpu_out

    def _apply(self, every: float) -> None:
        size = self._capacity(every)
        if self.sys_stats.maxlen != size:
            self.sys_stats = deque(self.sys_stats, maxlen=size)
            self.gpu_stats = deque(self.gpu_stats, maxlen=size)

    async def run(self) -> None:
        """Sample until cancelled."""
        first = True
        while True:
            disabled, every = self._settings()
            if disabled:
                self._baseline = None
                self.sys_stats.clear()
                self.gpu_stats.clear()
                first = True
                await asyncio.sleep(every)
                continue
            self._apply(every)
            try:
                if self._baseline is None:
                    self.sample()
                await asyncio.sleep(min(every, FIRST_SAMPLE_AFTER) if first else every)
                first = False
                if self._settings()[0]:
                    continue
                stat = self.sample()
                if stat is not None:
                    await self.sample_gpus(stat.timestamp)
            except (OSError, ValueError) as exc:
                log.error("failed to read system stats: %s", exc)
                await asyncio.sleep(every)
