"""Run mypy (strict, configured in pyproject.toml) over the `llama_swap` package.

Why a script: the repository keeps `compiler/`, `runtime/` and `schema/` as top-level
folders and installs them under one import name (setuptools' package-dir mapping).
The editable install resolves `llama_swap.*` with an import hook, which mypy does not
run, so this script lays out the same mapping as symlinks under `build/typecheck/`
and points mypy there.  Exit status is mypy's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("compiler", "runtime", "schema")


def main() -> int:
    base = ROOT / "build" / "typecheck"
    package = base / "llama_swap"
    package.mkdir(parents=True, exist_ok=True)
    for name in FOLDERS:
        link = package / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)
    cmd = [
        sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
        "--cache-dir", str(base / ".mypy_cache"),
        "-p", "llama_swap.compiler", "-p", "llama_swap.runtime",
    ]
    return subprocess.run(cmd, cwd=base, env={**os.environ, "MYPYPATH": str(base)}).returncode


if __name__ == "__main__":
    sys.exit(main())
