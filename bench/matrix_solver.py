"""Matrix router figures for a big matrix (printed, never asserted).

The matrix no longer has a combination cap, so a config may hold many sets.
This generates a config of `--models` models and `--sets` matrix sets (10,000
by default), each set `mA & (mB | mC) & mD`-shaped (two combinations), model
ids used directly (no vars), and prints:

1. how long the compiler takes for it (`compile_sources`, whole pipeline);
2. how long building the solver (`MatrixSwapper`) takes from the plan;
3. the time per solve (`eviction_for`) for random targets with four models
   running, median and worst over `--solves` decisions.

Run: .venv/bin/python bench/matrix_solver.py [--sets 10000] [--models 300] [--solves 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llama_swap.compiler.pipeline import compile_sources  # noqa: E402
from llama_swap.runtime.core.swappers.matrix import MatrixSwapper  # noqa: E402


def config_text(n_models: int, n_sets: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = ["models:"]
    for i in range(n_models):
        lines.append(f'  m{i}: {{cmd: "srv --port ${{PORT}}"}}')
    lines += [
        "routing:",
        "  scheduler: {use: fifo}",
        "  router:",
        "    use: matrix",
        "    settings:",
        "      matrix:",
        "        evict_costs: {m0: 50, m1: 20}",
        "        sets:",
    ]
    for s in range(n_sets):
        a, b, c, d = (f"m{rng.randrange(n_models)}" for _ in range(4))
        lines.append(f'          s{s}: "{a} & ({b} | {c}) & {d}"')
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=10_000)
    ap.add_argument("--models", type=int, default=300)
    ap.add_argument("--solves", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    text = config_text(args.models, args.sets, args.seed)
    t0 = time.perf_counter()
    result = compile_sources([("matrix.yaml", text)], env={})
    compile_s = time.perf_counter() - t0
    matrix = result.plan.routing.matrix
    assert matrix is not None
    combos = sum(len(s.combinations) for s in matrix.sets)

    t0 = time.perf_counter()
    swapper = MatrixSwapper(matrix)
    build_s = time.perf_counter() - t0

    rng = random.Random(args.seed + 1)
    ids = list(result.plan.models)
    times = []
    for _ in range(args.solves):
        running = rng.sample(ids, 4)
        target = rng.choice(ids)
        t0 = time.perf_counter()
        swapper.eviction_for(target, running)
        times.append(time.perf_counter() - t0)

    print(f"matrix: {len(matrix.sets)} sets, {combos} combinations, {args.models} models")
    print(f"compile (whole pipeline): {compile_s * 1000:.0f} ms")
    print(f"solver build from plan:   {build_s * 1000:.1f} ms")
    print(
        f"solve ({args.solves} decisions, 4 running): median {statistics.median(times) * 1e3:.3f} ms,"
        f" worst {max(times) * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
