"""The side-by-side suite's output: the machine it ran on, a Markdown report, PNG charts.

Everything here reads finished `Row`s; nothing is measured.  Ratios are taken against
the row named "direct" of the same workload, from the same run, because on a shared
machine only figures measured side by side compare.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from _measure import Row  # type: ignore[import-not-found]
from _runtime_harness import ROOT  # type: ignore[import-not-found]


def machine(versions: dict[str, str]) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    info = {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cores": str(os.cpu_count()),
        "CPU": cpu,
        "OS": f"{platform.system()} {platform.release()}"
              + (f" (Debian {Path('/etc/debian_version').read_text().strip()})"
                 if Path("/etc/debian_version").exists() else ""),
        "Python": sys.version.split()[0],
        "llama-swap": f"{importlib.metadata.version('llama-swap-py')} (commit {commit})",
    }
    for dist in ("aiohttp", "uvloop"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    info.update(versions)
    return info


def load_line(label: str) -> str:
    one, five, fifteen = os.getloadavg()
    return f"{label}: {one:.2f} {five:.2f} {fifteen:.2f}"


def _f(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _ratio(row: Row, direct: Row | None) -> tuple[str, str]:
    if direct is None or row is direct or not row.latencies or not direct.latencies:
        return "–", "–"
    added = (row.p(50) - direct.p(50)) * 1000
    lat = f"{row.p(50) / direct.p(50):.2f}x ({added:+.3f} ms)"
    thr = f"{row.rps / direct.rps * 100:.0f}%" if direct.rps else "–"
    return lat, thr


def main_table(groups: Sequence[Sequence[Row]]) -> list[str]:
    out = ["| workload | through | p50 ms | p90 ms | p99 ms | req/s | errors "
           "| proxy CPU s / 1k req | proxy peak RSS MB | p50 vs direct | req/s vs direct |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rows in groups:
        direct = next((r for r in rows if r.target == "direct"), None)
        for r in rows:
            lat, thr = _ratio(r, direct)
            rss = None if r.rss is None else r.rss / 2**20
            errors = f"{r.errors}" + (f" ({r.error_sample[:40]})" if r.errors else "")
            out.append(
                f"| {r.workload} | {r.target} | {_f(r.p(50) * 1000, 3)} | {_f(r.p(90) * 1000, 3)} "
                f"| {_f(r.p(99) * 1000, 3)} | {r.rps:.0f} | {errors} | {_f(r.cpu_per_1000, 3)} "
                f"| {_f(rss, 0)} | {lat} | {thr} |")
    return out


def stream_table(rows: Sequence[Row]) -> list[str]:
    out = ["| through | first chunk ms | added | mean gap between reads ms "
           "| added | SSE events / answer | reads / answer | tokens/s delivered | errors "
           "| proxy CPU s / 1k streams |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    direct = next((r for r in rows if r.target == "direct"), None)
    for r in rows:
        e, d = r.extra, (direct.extra if direct else {})
        added_ttfb = e.get("ttfb_ms", 0) - d.get("ttfb_ms", 0) if direct and r is not direct else None
        added_gap = e.get("gap_ms", 0) - d.get("gap_ms", 0) if direct and r is not direct else None
        out.append(
            f"| {r.target} | {_f(e.get('ttfb_ms'), 3)} | {_f(added_ttfb, 3)} "
            f"| {_f(e.get('gap_ms'), 3)} | {_f(added_gap, 3)} | {_f(e.get('events'), 1)} "
            f"| {_f(e.get('reads'), 1)} | {_f(e.get('tokens_per_s'), 0)} | {r.errors} "
            f"| {_f(r.cpu_per_1000, 3)} |")
    return out


def swap_table(rows: Sequence[Row], cold: Row | None) -> list[str]:
    out = ["| path | request to first byte p50 ms | p90 | p99 | swaps | errors "
           "| proxy CPU s / 1k swaps | proxy peak RSS MB | vs llama.cpp router "
           "| vs upstream cold start + 1 inference |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    router = next((r for r in rows if "router" in r.target), None)
    for r in rows:
        vs_router = (f"{r.p(50) / router.p(50):.2f}x" if router and r is not router
                     and router.latencies and r.latencies else "–")
        vs_cold = (f"{r.p(50) / cold.p(50):.2f}x" if cold and cold.latencies and r.latencies
                   else "–")
        rss = None if r.rss is None else r.rss / 2**20
        out.append(f"| {r.target} | {_f(r.p(50) * 1000, 1)} | {_f(r.p(90) * 1000, 1)} "
                   f"| {_f(r.p(99) * 1000, 1)} | {len(r.latencies)} | {r.errors} "
                   f"| {_f(r.cpu_per_1000, 2)} | {_f(rss, 0)} | {vs_router} | {vs_cold} |")
    if cold is not None and cold.latencies:
        start = cold.extra.get("start_ms")
        out.append(f"| {cold.target} | {_f(cold.p(50) * 1000, 1)} | {_f(cold.p(90) * 1000, 1)} "
                   f"| {_f(cold.p(99) * 1000, 1)} | {len(cold.latencies)} | {cold.errors} | – | – "
                   f"| – | 1.00x (of which start to /health 200: {_f(start, 1)} ms) |")
    return out


def charts(chat: dict[int, list[Row]], swaps: list[Row], cold: Row | None,
           out: Path, stem: str) -> list[Path]:
    """PNG charts; [] when matplotlib is missing (the `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []
    if chat:
        concs = sorted(chat)
        names = [r.target for r in chat[concs[0]]]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for name in names:
            rows = [next((r for r in chat[c] if r.target == name), None) for c in concs]
            ax1.plot(concs, [r.p(50) * 1000 if r else float("nan") for r in rows], "o-", label=name)
            ax2.plot(concs, [r.rps if r else float("nan") for r in rows], "o-", label=name)
        for ax, title in ((ax1, "p50 latency (ms, log)"), (ax2, "requests/s")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(concs, [str(c) for c in concs])
            ax.set_xlabel("concurrent clients")
            ax.set_title(f"small chat, fake upstream: {title}")
            ax.grid(alpha=0.3)
        ax1.set_yscale("log")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{stem}-chat.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
        mid = concs[len(concs) // 2] if 32 not in concs else 32
        proxied = [r for r in chat[mid] if r.cpu_per_1000 is not None]
        if proxied:
            fig, ax = plt.subplots(figsize=(7, 4))
            ax.bar([r.target for r in proxied], [r.cpu_per_1000 or 0 for r in proxied])
            ax.set_yscale("log")
            ax.set_ylabel("proxy CPU seconds per 1,000 requests (log)")
            ax.set_title(f"proxy CPU per request, {mid} concurrent clients")
            plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
            fig.tight_layout()
            path = out / f"{stem}-cpu.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    bars = [r for r in [*swaps, *([cold] if cold else [])] if r.latencies]
    if bars:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar([r.target for r in bars], [r.p(50) * 1000 for r in bars],
               yerr=[[0] * len(bars), [(r.p(90) - r.p(50)) * 1000 for r in bars]])
        ax.set_ylabel("ms (p50, bar to p90)")
        ax.set_title("swap between two tiny llama-server models: request to first byte")
        plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
        fig.tight_layout()
        path = out / f"{stem}-swap.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
