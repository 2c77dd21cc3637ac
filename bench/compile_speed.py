"""Compiler speed figures (printed, never asserted).

1. compile_paths on a generated config of 1,000 models in 100 fragments
   (target: under 1 s wall on a 2-core machine), with the time per model;
2. the same config recompiled through one `CompileSession` (what hot reload
   does) after editing one fragment, plan digest included: the reload's
   compile cost;
3. `swap-compile --check --config-dir fragments.example` as a subprocess,
   interpreter start included (target: under 300 ms).  When
   fragments.example/ is missing, a small stand-in is generated.

Run: .venv/bin/python bench/compile_speed.py [--models 1000] [--fragments 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llama_swap.compiler.pipeline import compile_paths  # noqa: E402
from llama_swap.compiler.session import CompileSession  # noqa: E402

GLOBAL = """\
healthCheckTimeout: 60
startPort: 10000
macros:
  server: /opt/llama.cpp/llama-server
  common: --ctx-size 8192 --threads 8
apiKeys: [sk-bench]
"""

MODEL = """\
  model-{n:04d}:
    name: Model {n}
    cmd: |
      ${{server}} ${{common}}
      --port ${{PORT}}
      # the weights
      -m /models/model-{n:04d}.gguf
    aliases: [alias-{n:04d}]
    ttl: 300
    filters:
      stripParams: temperature, top_p
    metadata:
      port: ${{PORT}}
      family: bench
"""


def generate(target: Path, models: int, fragments: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    (target / "00-global.yaml").write_text(GLOBAL)
    per = max(1, models // fragments)
    for f in range(fragments):
        ids = range(f * per, min(models, (f + 1) * per))
        body = "models:\n" + "".join(MODEL.format(n=n) for n in ids)
        (target / f"{f + 1:03d}-models.yaml").write_text(body)


def time_compile(config_dir: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        plan = compile_paths(None, str(config_dir), env={}).plan
        times.append(time.perf_counter() - start)
    assert plan.models, "generated config compiled to no models"
    return times


def time_session_recompile(config_dir: Path, runs: int) -> list[float]:
    """One session; each run edits one fragment's ttl, recompiles and digests the plan."""
    session = CompileSession()
    session.plan_digest(session.compile_paths(None, str(config_dir), env={}).plan)
    fragment = sorted(config_dir.glob("*-models.yaml"))[
        len(list(config_dir.glob("*-models.yaml"))) // 2
    ]
    original = fragment.read_text()
    times = []
    for k in range(runs):
        fragment.write_text(original.replace("ttl: 300", f"ttl: {301 + k}", 1))
        start = time.perf_counter()
        session.plan_digest(session.compile_paths(None, str(config_dir), env={}).plan)
        times.append(time.perf_counter() - start)
    fragment.write_text(original)
    return times


def time_check(config_dir: Path, runs: int) -> list[float]:
    exe = Path(sys.executable).parent / "swap-compile"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "llama_swap.compiler.cli"]
    times = []
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(
            [*cmd, "--check", "--config-dir", str(config_dir)], capture_output=True, check=False
        )
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            print(proc.stderr.decode(errors="replace"), file=sys.stderr)
            raise SystemExit(f"swap-compile --check failed with exit {proc.returncode}")
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    print(
        f"  (CPU time per --check run: {cpu / runs * 1000:.0f} ms; wall time suffers on a loaded machine)"
    )
    return times


def time_bombs(runs: int) -> dict[str, list[float]]:
    """Seconds to refuse a 10**9-value alias bomb, by list anchors and by merge keys."""
    from llama_swap.compiler.diagnostics import CompileError
    from llama_swap.compiler.pipeline import compile_sources

    out: dict[str, list[float]] = {}
    for merge in (False, True):
        if merge:
            lines = ["x0: &x0 {" + ", ".join(f"k{i}: lol" for i in range(10)) + "}"]
            lines += [f"x{n}: &x{n} {{<<: [{', '.join([f'*x{n - 1}'] * 10)}]}}" for n in range(1, 10)]
        else:
            lines = ["x0: &x0 [" + ", ".join(["lol"] * 10) + "]"]
            lines += [f"x{n}: &x{n} [{', '.join([f'*x{n - 1}'] * 10)}]" for n in range(1, 10)]
        text = "\n".join([*lines, "models: *x9"]) + "\n"
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            try:
                compile_sources([("bomb.yaml", text)], env={})
            except CompileError:
                pass
            times.append(time.perf_counter() - start)
        out["merge keys" if merge else "lists"] = times
    return out


def report(label: str, times: list[float], target: float | None, per: int | None = None) -> None:
    best, median = min(times), statistics.median(times)
    line = (
        f"{label}: best {best * 1000:.0f} ms, median {median * 1000:.0f} ms over {len(times)} runs"
    )
    if per:
        line += f"; {median / per * 1e6:.0f} µs per model"
    if target is None:
        print(line)
        return
    verdict = "within" if median < target else "OVER"
    print(f"{line}  [{verdict} target {target * 1000:.0f} ms]")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--fragments", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPU(s), load average {load:.1f}")
    with tempfile.TemporaryDirectory(prefix="swap-bench-") as tmp:
        generated = Path(tmp) / "generated"
        generate(generated, args.models, args.fragments)
        report(
            f"compile_paths: {args.models} models in {args.fragments} fragments",
            time_compile(generated, args.runs),
            1.0,
            per=args.models,
        )
        report(
            "  recompile after a one-fragment edit, same CompileSession, digest included",
            time_session_recompile(generated, args.runs),
            None,
            per=args.models,
        )
        example = ROOT / "fragments.example"
        if not example.is_dir() or not any(example.glob("*.y*ml")):
            example = Path(tmp) / "stand-in"
            generate(example, 8, 4)
            print("fragments.example/ missing: timing a generated 8-model stand-in")
        report(
            f"swap-compile --check --config-dir {example.name}", time_check(example, args.runs), 0.3
        )
    for shape, times in time_bombs(args.runs).items():
        report(f"alias bomb of 10**9 values through {shape}, refused", times, 2.0)


if __name__ == "__main__":
    main()
