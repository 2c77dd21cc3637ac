"""`python -m bench all`: llama-swap side by side with the peers one would pick instead.

In ONE run on loopback, the same workloads through: no proxy (the limit), llama-swap
(fast path and `--no-fast-path`), nginx as a plain reverse proxy, LiteLLM's proxy as a
pass-through, and, for swaps, llama.cpp's own router mode.  Upstreams: a real
llama-server with the project's tiny generated models, and the fake upstream for the
highest request rates.  What is run where: bench/_suite.py; how a figure is taken:
bench/_measure.py; the report: bench/_report.py; the peers: bench/_peers.py.

Output: a Markdown report, the raw figures as JSON and PNG charts under bench/results/
(`latest.*`, or `quick.*` for `--quick`), with the machine and each peer's version.
Targets are printed next to the figures, never asserted.

Run: .venv/bin/python -m bench all [--quick] [--dry-run] [--no-install]
     [--only front,swaps,reload,compile] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import Row  # type: ignore[import-not-found]  # noqa: E402
from _peers import ensure_litellm, ensure_nginx, llama_server_binary  # type: ignore[import-not-found]  # noqa: E402
from _report import (  # type: ignore[import-not-found]  # noqa: E402
    charts,
    load_line,
    machine,
    main_table,
    stream_table,
    swap_table,
)
from _suite import SECTIONS, Config, Peers, Results, llama_server_version, run  # type: ignore[import-not-found]  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def find(rows: list[Row], name: str) -> Row | None:
    return next((r for r in rows if r.target == name and r.latencies), None)


def verdicts(res: Results) -> list[str]:
    """Each target of the issue that filed this suite, with the figure that decides it."""
    out: list[str] = []

    def line(what: str, figure: str, met: bool | None) -> None:
        mark = "n/a" if met is None else ("met" if met else "MISSED")
        out.append(f"- {what}: {figure} -> **{mark}**")

    one = res.chat.get(1, [])
    d, ls, ng = find(one, "direct"), find(one, "llama-swap"), find(one, "nginx")
    if d and ls:
        added = (ls.p(50) - d.p(50)) * 1000
        line("added p50 at 1 client < 1 ms", f"{added:.3f} ms", added < 1)
        if ng:
            ng_added = (ng.p(50) - d.p(50)) * 1000
            ok = added <= 2 * ng_added if ng_added > 0 else added <= 0
            line("... and within 2x nginx's added p50",
                 f"{added:.3f} vs {ng_added:.3f} ms ({added / ng_added:.1f}x)" if ng_added > 0
                 else f"{added:.3f} vs {ng_added:.3f} ms", ok)
    c32 = res.chat.get(32, [])
    d, ls, ng, lt = (find(c32, n) for n in ("direct", "llama-swap", "nginx", "LiteLLM"))
    if d and ls:
        share = ls.rps / d.rps
        line("throughput at 32 clients >= 90% of direct", f"{share * 100:.0f}%", share >= 0.9)
        if ng and ng.cpu_per_1000 and ls.cpu_per_1000:
            ratio = ls.cpu_per_1000 / ng.cpu_per_1000
            line("proxy CPU per request within 2.5x nginx's",
                 f"{ls.cpu_per_1000 / 1000 * 1e3:.3f} vs {ng.cpu_per_1000 / 1000 * 1e3:.3f} ms "
                 f"per request ({ratio:.1f}x)", ratio <= 2.5)
        if lt:
            ratio = ls.rps / lt.rps
            line("throughput at 32 clients >= 4x LiteLLM's", f"{ratio:.1f}x", ratio >= 4)
    d, ls = find(res.stream, "direct"), find(res.stream, "llama-swap")
    if d and ls:
        added = ls.extra.get("ttfb_ms", 0) - d.extra.get("ttfb_ms", 0)
        line("streaming: first chunk adds < 1 ms", f"{added:.3f} ms", added < 1)
        ev, dev = ls.extra.get("events", 0), d.extra.get("events", 0)
        reads, dreads = ls.extra.get("reads", 0), d.extra.get("reads", 0)
        line("streaming: no buffering (SSE events and reads per answer kept)",
             f"events {ev:.1f} vs {dev:.1f}, reads {reads:.1f} vs {dreads:.1f}",
             abs(ev - dev) < 0.5 and reads >= 0.9 * dreads)
    router = next((r for r in res.swaps if "router" in r.target and r.latencies), None)
    for r in res.swaps:
        if "llama-swap" not in r.target or not r.latencies:
            continue
        if router:
            ratio = r.p(50) / router.p(50)
            line(f"swap, {r.target}: at most half of llama.cpp's router",
                 f"{r.p(50) * 1000:.1f} vs {router.p(50) * 1000:.1f} ms ({ratio:.2f}x)", ratio <= 0.5)
        if res.cold and res.cold.latencies:
            ratio = r.p(50) / res.cold.p(50)
            line(f"swap, {r.target}: within 1.5x of the upstream's cold start + 1 inference",
                 f"{r.p(50) * 1000:.1f} vs {res.cold.p(50) * 1000:.1f} ms ({ratio:.2f}x)",
                 ratio <= 1.5)
    return out


def report(res: Results, info: dict[str, str], notes: list[str], quick: bool, out: Path,
           pngs: list[Path]) -> str:
    lines = [f"# llama-swap side by side: `python -m bench all{' --quick' if quick else ''}`", "",
             "| machine | |", "|---|---|", *(f"| {k} | {v} |" for k, v in info.items()), ""]
    if notes:
        lines += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    lines += ["## Targets (ratios from this run)", "", *verdicts(res), ""]
    plain = [*(res.chat[c] for c in sorted(res.chat)), *(res.real[c] for c in sorted(res.real))]
    plain += [g for g in (res.big, res.embed, res.reload, res.compile) if g]
    lines += ["## Requests", "", "Latency is send to last byte; ratios are to `direct` in the "
              "same workload; proxy CPU and peak RSS are the proxy's processes only.", "",
              *main_table(plain), ""]
    if res.stream:
        lines += ["## Streaming (256 tokens, one at a time)", "", *stream_table(res.stream), ""]
    if res.swaps:
        lines += ["## Swaps between two tiny llama-server models", "",
                  *swap_table(res.swaps, res.cold), ""]
    if pngs:
        lines += ["## Charts", "", *(f"![{p.stem}]({p.name})" for p in pngs), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=("all",))
    parser.add_argument("--quick", action="store_true", help="a reduced set, under 3 minutes")
    parser.add_argument("--dry-run", action="store_true",
                        help="say what would run (peers found, workloads) and stop")
    parser.add_argument("--no-install", action="store_true",
                        help="do not install missing peers (nginx via apt-get, LiteLLM via pip)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections among {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline", metavar="EXE",
                        help="another build's llama-swap, swapping side by side as 'baseline'")
    args = parser.parse_args(argv)
    only = tuple(s for s in args.only.split(",") if s)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    cfg = Config.make(args.quick)
    cfg.baseline = args.baseline
    install = not args.no_install and not args.dry_run
    binary = llama_server_binary()
    nginx_bin, nginx_version = ensure_nginx(install)
    litellm_exe, litellm_version = ensure_litellm(install)
    peers = Peers(binary, nginx_bin, litellm_exe)
    if binary is None:
        peers.notes.append("llama-server not built (python scripts/build_llama_server.py): "
                           "real-upstream workloads and swaps skipped")
    for found, why in ((nginx_bin, nginx_version), (litellm_exe, litellm_version)):
        if found is None:
            peers.notes.append(why)
    versions = {"llama-server": llama_server_version(binary),
                "nginx": nginx_version if nginx_bin else "skipped",
                "LiteLLM": litellm_version if litellm_exe else "skipped"}
    for note in peers.notes:
        print(note)
    print(f"sections: {', '.join(only)}; {'quick' if args.quick else 'full'}: "
          f"chat at {', '.join(map(str, cfg.chat_concurrency))} clients x {cfg.chat_requests} "
          f"requests, {cfg.streams} streams, {cfg.swaps} swaps, {cfg.rounds} rounds")
    print("peers: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    if args.dry_run:
        return 0
    peers.notes.append(load_line("load average (1/5/15 min) at the start"))
    t0 = time.perf_counter()
    try:
        import uvloop

        res = uvloop.run(run(cfg, peers, only))
    except ImportError:
        res = asyncio.run(run(cfg, peers, only))
    peers.notes.append(load_line("at the end"))
    peers.notes.append(f"whole run: {time.perf_counter() - t0:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"
    pngs = charts(res.chat, res.swaps, res.cold, args.out, stem)
    info = machine(versions)
    text = report(res, info, peers.notes, args.quick, args.out, pngs)
    (args.out / f"{stem}.md").write_text(text)
    rows = [r.as_dict() for group in (*res.chat.values(), *res.real.values(), res.stream,
                                       res.big, res.embed, res.swaps, [res.cold] if res.cold else [],
                                       res.reload, res.compile) for r in group]
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"machine": info, "notes": peers.notes, "rows": rows}, indent=1))
    print("\n" + "\n".join(verdicts(res)))
    print(f"\nreport: {args.out / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
