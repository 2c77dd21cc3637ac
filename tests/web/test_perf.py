"""System statistics:
/proc parsing, CPU shares between two readings, the sampler's ring and its `after` filter."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from llama_swap.runtime.http.observe.perf import (
    CpuTimes,
    Sampler,
    cpu_percent,
    every_seconds,
    memory_figures,
    parse_after,
    parse_cpu_times,
    parse_loadavg,
    parse_meminfo,
    parse_nvidia_smi,
)

STAT = """cpu  300 0 100 1500 100 0 0 0 0 0
cpu0 100 0 50 800 50 0 0 0 0 0
cpu1 200 0 50 700 50 0 0 0 0 0
intr 12345
ctxt 999
"""
STAT_LATER = """cpu  500 0 200 1700 100 0 0 0 0 0
cpu0 100 0 50 900 50 0 0 0 0 0
cpu1 350 0 100 750 50 0 0 0 0 0
"""
MEMINFO = """MemTotal:       16000000 kB
MemFree:         4000000 kB
MemAvailable:    9000000 kB
Buffers:          500000 kB
Cached:          3000000 kB
SReclaimable:     500000 kB
SwapTotal:       2048000 kB
SwapFree:        1024000 kB
HugePages_Total:       0
"""


def fake_proc(tmp_path: Path, stat: str = STAT) -> Path:
    (tmp_path / "stat").write_text(stat)
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "loadavg").write_text("0.52 0.41 0.30 2/345 6789\n")
    return tmp_path


def test_per_core_cpu_times_skip_the_aggregate_line() -> None:
    assert parse_cpu_times(STAT) == [CpuTimes(150, 1000), CpuTimes(250, 1000)]


def test_cpu_share_is_busy_time_over_elapsed_time_per_core() -> None:
    assert cpu_percent(parse_cpu_times(STAT), parse_cpu_times(STAT_LATER)) == (0.0, 80.0)
    assert cpu_percent([CpuTimes(5, 10)], [CpuTimes(5, 10)]) == (0.0,)  # no time elapsed


def test_memory_used_is_total_minus_available() -> None:
    mem = parse_meminfo(MEMINFO)
    assert mem["MemTotal"] == 16000000 * 1024 and mem["HugePages_Total"] == 0
    total, used, free, swap_total, swap_used = memory_figures(mem)
    assert (total, free) == (16000000 * 1024, 4000000 * 1024)
    assert used == (16000000 - 9000000) * 1024
    del mem["MemAvailable"]  # old kernels: free, buffers and page cache are not used
    assert memory_figures(mem)[1] == (16000000 - 4000000 - 500000 - 3000000 - 500000) * 1024
    assert (swap_total, swap_used) == (2048000 * 1024, 1024000 * 1024)


def test_loadavg() -> None:
    assert parse_loadavg("0.52 0.41 0.30 2/345 6789\n") == (0.52, 0.41, 0.30)


def test_readings_of_this_machine_agree_with_psutil() -> None:
    sampler = Sampler(lambda: (False, 5.0))
    assert sampler.sample() is None  # the baseline
    stat = sampler.sample()
    assert stat is not None
    assert len(stat.cpu_util_per_core) == psutil.cpu_count()
    assert all(0.0 <= pct <= 100.0 for pct in stat.cpu_util_per_core)
    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    assert stat.mem_total_mb == vm.total // (1024 * 1024)
    assert stat.swap_total_mb == swap.total // (1024 * 1024)
    assert abs(stat.mem_used_mb - vm.used / (1024 * 1024)) < 256  # moments apart
    assert stat.load_avg_1 >= 0 and abs(stat.load_avg_15 - os.getloadavg()[2]) < 1


def test_a_sample_from_a_proc_tree(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    sampler = Sampler(lambda: (False, 5.0), proc=proc)
    sampler.sample()
    (proc / "stat").write_text(STAT_LATER)
    stat = sampler.sample()
    assert stat is not None
    doc = stat.to_json()
    assert doc["cpu_util_per_core"] == [0.0, 80.0]
    assert (doc["mem_total_mb"], doc["swap_total_mb"], doc["swap_used_mb"]) == (15625, 2000, 1000)
    assert (doc["load_avg_1"], doc["load_avg_5"], doc["load_avg_15"]) == (0.52, 0.41, 0.30)
    assert datetime.fromisoformat(doc["timestamp"]).tzinfo is not None
    assert set(doc) == {
        "timestamp", "cpu_util_per_core", "mem_total_mb", "mem_used_mb", "mem_free_mb",
        "swap_total_mb", "swap_used_mb", "load_avg_1", "load_avg_5", "load_avg_15",
    }


def test_the_ring_keeps_an_hour_of_samples(tmp_path: Path) -> None:
    sampler = Sampler(lambda: (False, 900.0), proc=fake_proc(tmp_path))
    for _ in range(10):
        sampler.sample()
    assert len(sampler.sys_stats) == 4  # 3600 s / 900 s


def test_after_keeps_samples_strictly_later(tmp_path: Path) -> None:
    sampler = Sampler(lambda: (False, 5.0), proc=fake_proc(tmp_path))
    for _ in range(4):
        sampler.sample()
    stamps = [s.timestamp for s in sampler.sys_stats]
    assert len(sampler.since(None)[0]) == 3
    later, _ = sampler.since(stamps[0])
    assert [d["timestamp"] for d in later] == [s.isoformat() for s in stamps[1:]]
    assert sampler.since(stamps[-1] + timedelta(seconds=1)) == ([], [])


def test_rfc3339_timestamps() -> None:
    assert parse_after("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_after("2024-05-01T12:00:00.5+02:00").utcoffset() == timedelta(hours=2)
    for bad in ("yesterday", "2024-05-01", "2024-05-01T10:00:00", "", "2024-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            parse_after(bad)


def test_every_is_a_go_duration() -> None:
    assert every_seconds("5s") == 5.0
    assert every_seconds("1m30s") == 90.0
    assert every_seconds("0s") == 5.0


def test_nvidia_smi_lines() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    text = ("0, NVIDIA GeForce RTX 4090, GPU-abc, 45, 87, 30, 12000, 24564, 40, 312.5\n"
            "1, Tesla T4, GPU-def, [N/A], 0, 0, 5, 15360, [N/A], 27.1\ngarbage\n")
    first, second = parse_nvidia_smi(text, now)
    assert first == {
        "timestamp": now.isoformat(), "id": 0, "name": "NVIDIA GeForce RTX 4090",
        "uuid": "GPU-abc", "temp_c": 45, "gpu_util_pct": 87.0, "mem_util_pct": 30.0,
        "mem_used_mb": 12000, "mem_total_mb": 24564, "fan_speed_pct": 40.0,
        "power_draw_w": 312.5,
    }
    assert (second["temp_c"], second["fan_speed_pct"], second["id"]) == (0, 0.0, 1)


async def test_the_sampler_samples_soon_after_start_and_stops_when_cancelled(
    tmp_path: Path,
) -> None:
    sampler = Sampler(lambda: (False, 5.0), proc=fake_proc(tmp_path))
    task = asyncio.ensure_future(sampler.run())
    try:
        for _ in range(300):
            if sampler.sys_stats:
                break
            await asyncio.sleep(0.01)
        assert len(sampler.sys_stats) == 1  # after ~1 s, not a whole 5 s period
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_disabled_sampler_keeps_nothing(tmp_path: Path) -> None:
    disabled = [False]
    sampler = Sampler(lambda: (disabled[0], 0.05), proc=fake_proc(tmp_path))
    task = asyncio.ensure_future(sampler.run())
    try:
        for _ in range(200):
            if sampler.sys_stats:
                break
            await asyncio.sleep(0.01)
        assert sampler.sys_stats
        disabled[0] = True
        for _ in range(200):
            if not sampler.sys_stats:
                break
            await asyncio.sleep(0.01)
        assert not sampler.sys_stats
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
