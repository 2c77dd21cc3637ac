"""Hostile configs end in a clean compile error, quickly and in bounded memory.

Each case runs `swap-compile` in a child process with an address-space limit,
so a regression fails the test instead of exhausting the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from llama_swap.compiler.render import render_github, render_json, render_text

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


def test_deeply_nested_parentheses_in_a_matrix_set_are_a_compile_error() -> None:
    depth = 300
    dsl = "(" * depth + "a & b" + ")" * depth
    text = (
        "models:\n  m1:\n    cmd: x\n    proxy: http://h:1\n  m2:\n    cmd: y\n    proxy: http://h:2\n"
        "routing:\n  router:\n    use: matrix\n    settings:\n      matrix:\n"
        f"        vars: {{a: m1, b: m2}}\n        sets:\n          s: '{dsl}'\n"
    )
    err = compile_err(("f.yaml", text))
    assert any("nested deeper than" in d.message for d in err.errors), err.errors


def _special_file_cases(tmp_path: Path) -> list[list[str]]:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    in_dir = tmp_path / "d"
    in_dir.mkdir()
    os.mkfifo(in_dir / "10-fifo.yaml")
    return [["--config", str(fifo)], ["--config", "/dev/zero"], ["--config-dir", str(in_dir)]]


def test_a_fifo_or_a_device_is_refused_not_read(tmp_path: Path) -> None:
    for args in _special_file_cases(tmp_path):
        out = run_limited("--check", *args, timeout=20)
        assert out["code"] == 1, (args, out)
        assert "not a regular file" in str(out["stderr"]), (args, out)


def test_a_huge_file_is_refused_with_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.write(b"# padding\n" * (2 * 1024 * 1024))  # 20 MiB of comments
    out = run_limited("--check", "--config", str(big), timeout=20)
    assert out["code"] == 1, out
    assert "big.yaml" in str(out["stderr"]) and "MiB" in str(out["stderr"]), out


def _compile_and_render(n: int) -> float:
    """Seconds to compile a config with `n` unknown keys and render every diagnostic."""
    lines = ["models:", "  m:", "    cmd: x --port ${PORT}"]
    lines += [f"    unknown{i}: {i}" for i in range(n)]
    text = "\n".join(lines) + "\n"
    start = time.perf_counter()
    err = compile_err(("f.yaml", text), strict=True)
    assert len(err.errors) == n
    rendered = render_text(err.diagnostics, err.texts)
    render_json(err.diagnostics)
    render_github(err.diagnostics)
    elapsed = time.perf_counter() - start
    assert rendered.count("\n") >= 3 * n
    return elapsed


def test_reporting_many_errors_takes_linear_time() -> None:
    small = min(_compile_and_render(2_000) for _ in range(2))
    large = _compile_and_render(20_000)
    # 10 times the errors: about 10 times the time when linear, 100 when quadratic
    assert large < 30 * small, (small, large)
