"""Run the fake upstream from a checkout: `python tests/upstream_fake.py --port N ...`.

A thin wrapper so tests and docs can start the fake without the console script being
installed; the server itself lives in `runtime/fake_upstream.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from llama_swap.runtime.fake_upstream import main

    main()
