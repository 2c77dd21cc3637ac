"""Idle memory: RSS (and USS) of a `llama-swap` process serving a plan of 20 models, none
loaded, after it answered a few admin requests.  Target (printed, not asserted): < 80 MB.

Run: .venv/bin/python bench/idle_memory.py [--models N]
"""

from __future__ import annotations

import argparse
import time
import urllib.request

from _runtime_harness import (  # type: ignore[import-not-found]
    fake_model,
    llama_swap,
    model_processes,
    plan_of,
    proxy_processes,
)


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
        proxy, *writer = proxy_processes(ls.proc.pid)
        info = proxy.memory_full_info()
        extra = [w.memory_full_info() for w in writer]
        children = model_processes(ls.proc.pid)
    print(f"idle memory with {args.models} models configured (none loaded)")
    print(f"  proxy        RSS {info.rss / 2**20:6.1f} MB   USS {info.uss / 2**20:6.1f} MB")
    for w in extra:
        print(f"  store writer RSS {w.rss / 2**20:6.1f} MB   USS {w.uss / 2**20:6.1f} MB")
    total = info.rss + sum(w.rss for w in extra)
    print(f"  together     RSS {total / 2**20:6.1f} MB   (target RSS < 80 MB)")
    print(f"  model processes: {len(children)}")


if __name__ == "__main__":
    main()
