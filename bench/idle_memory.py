"""Idle memory: RSS (and USS) of a `llama-swap` process serving a plan of 20 models, none
loaded, after it answered a few admin requests.  Target (printed, not asserted): < 80 MB.

Run: .venv/bin/python bench/idle_memory.py [--models N]
"""

from __future__ import annotations

import argparse
import time
import urllib.request

import psutil
from _runtime_harness import fake_model, llama_swap, plan_of  # type: ignore[import-not-found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    args = parser.parse_args()
    models = [fake_model(f"model-{i:02d}") for i in range(args.models)]
    with llama_swap(plan_of(models)) as ls:
        for path in ("/health", "/running", "/v1/models", "/api/version"):
            with urllib.request.urlopen(ls.url + path, timeout=10) as resp:
                resp.read()
        time.sleep(1.0)
        proc = psutil.Process(ls.proc.pid)
        info = proc.memory_full_info()
        children = proc.children(recursive=True)
    print(f"idle memory with {args.models} models configured (none loaded)")
    print(f"  RSS {info.rss / 2**20:6.1f} MB   USS {info.uss / 2**20:6.1f} MB   (target RSS < 80 MB)")
    print(f"  child processes: {len(children)}")


if __name__ == "__main__":
    main()
