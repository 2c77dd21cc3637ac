"""Hostile configs end in a clean compile error, quickly and in bounded memory.

Each case runs `swap-compile` in a child process with an address-space limit,
so a regression fails the test instead of exhausting the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from .frontend_util import compile_err

_CHILD = textwrap.dedent(
    """
    import io, json, resource, sys, time
    from contextlib import redirect_stderr
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from llama_swap.compiler import cli
    err = io.StringIO()
    start = time.perf_counter()
    with redirect_stderr(err):
        code = cli.main(sys.argv[2:])
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"code": code, "stderr": err.getvalue(), "elapsed": elapsed, "peak_kib": peak_kib}))
    """
)
MEMORY_LIMIT = 1536 * 2**20


def run_limited(*args: str, timeout: float = 60) -> dict[str, object]:
    """swap-compile ARGS in a child with at most MEMORY_LIMIT bytes of address space."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(MEMORY_LIMIT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"child died: {proc.returncode}\n{proc.stderr[-2000:]}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def doubling_macros(levels: int) -> str:
    """`a1` is `a0` twice, `a2` is `a1` twice, ...: 2**levels copies of `a0` in the last one."""
    lines = ["macros:", '  a0: "xx"']
    lines += [f'  a{i}: "${{a{i - 1}}}${{a{i - 1}}}"' for i in range(1, levels + 1)]
    lines += ["models:", "  m:", f'    cmd: "srv ${{a{levels}}} --port ${{PORT}}"']
    return "\n".join(lines) + "\n"


def test_a_macro_bomb_is_a_compile_error_naming_the_macro(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(doubling_macros(30))
    assert path.stat().st_size < 1024
    out = run_limited("--check", "--config", str(path))
    assert out["code"] == 1, out
    err = str(out["stderr"])
    assert "internal error" not in err
    first = err.splitlines()[0]
    # names the macro that went over the limit, where it is defined, and the limit
    assert "bomb.yaml:" in first and "macro 'a" in first and "characters" in first, err
    assert float(out["elapsed"]) < 2.0, out
    assert int(out["peak_kib"]) < 400 * 1024, out


def test_a_macro_bomb_in_a_peer_or_in_metadata_is_caught_too() -> None:
    text = doubling_macros(30).replace('"srv ${a30} --port ${PORT}"', '"srv --port ${PORT}"')
    peer = "peers:\n  p:\n    proxy: http://h:1\n    models: [x]\n    apiKey: ${a30}\n"
    meta = '    metadata:\n      big: ["${a20}", "${a20}", "${a20}", "${a20}", "${a20}"]\n'
    for extra in (peer, meta):
        err = compile_err(("f.yaml", text + extra))
        assert any("exceed the limit" in d.message for d in err.errors), err.errors
