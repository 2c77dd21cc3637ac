"""`python -m bench all` wires up: the command parses, finds its peers (or says why one
is skipped) and lists what it would run, without starting anything (`--dry-run`).
Figures are never asserted anywhere: they are printed by the bench itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_a_quick_dry_run_names_every_section_and_peer_and_starts_nothing() -> None:
    out = bench("all", "--quick", "--dry-run", "--no-install")
    assert out.returncode == 0, out.stderr
    assert "sections: front, swaps, reload, compile; quick:" in out.stdout
    peers = next(line for line in out.stdout.splitlines() if line.startswith("peers: "))
    for name in ("llama-server", "nginx", "LiteLLM"):
        assert name in peers


def test_a_section_it_does_not_know_is_refused() -> None:
    out = bench("all", "--dry-run", "--no-install", "--only", "front,warp")
    assert out.returncode == 2
    assert "unknown section(s): warp" in out.stderr


def test_only_all_is_a_suite() -> None:
    assert bench("some", "--dry-run").returncode == 2
