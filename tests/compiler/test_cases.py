"""Golden scenarios: every directory under tests/compiler/cases/ is one compile, snapshotted.

A scenario directory holds:
- fragment files (`*.yaml`/`*.yml`): compiled as `--config-dir <scenario>` by default;
- optionally `args`: flags as on the command line (`--strict`, `--config main.yaml`,
  `--config-dir conf.d`; paths are relative to the scenario directory);
- optionally `env`: `NAME=value` lines, the whole environment the compile sees
  (none at all when the file is absent, so snapshots never depend on the machine).

The snapshot is the full outcome: on success the warnings (rendered text) and the
plan JSON (secrets included, it is a test); on failure the rendered error text,
exactly as `swap-compile` prints it.  Paths in it are relative to cases/.
Update after an intended change with `pytest tests/compiler/test_cases.py --snapshot-update`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from llama_swap.compiler.diagnostics import CompileError
from llama_swap.compiler.pipeline import compile_paths
from llama_swap.compiler.plan import plan_to_json
from llama_swap.compiler.render import render_text

CASES = Path(__file__).parent / "cases"
SCENARIOS = sorted(
    p.name for p in CASES.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
)


def read_env(case: Path) -> dict[str, str]:
    env_file = case / "env"
    if not env_file.exists():
        return {}
    env = {}
    for line in env_file.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value
    return env


def read_args(name: str, case: Path) -> tuple[str | None, str | None, bool]:
    args_file = case / "args"
    words = shlex.split(args_file.read_text(encoding="utf-8")) if args_file.exists() else []
    config = config_dir = None
    strict = False
    it = iter(words)
    for word in it:
        if word == "--strict":
            strict = True
        elif word == "--config":
            config = f"{name}/{next(it)}"
        elif word == "--config-dir":
            config_dir = f"{name}/{next(it)}"
        else:
            raise ValueError(f"{case}/args: unsupported flag {word!r}")
    if config is None and config_dir is None:
        config_dir = name
    return config, config_dir, strict


def outcome(name: str) -> str:
    case = CASES / name
    config, config_dir, strict = read_args(name, case)
    try:
        result = compile_paths(config, config_dir, strict=strict, env=read_env(case))
    except CompileError as exc:
        return "FAILS\n" + render_text(exc.diagnostics, getattr(exc, "texts", {}))
    warnings = render_text(result.warnings, result.texts)
    return "COMPILES\n" + warnings + plan_to_json(result.plan)


@pytest.mark.parametrize("name", SCENARIOS)
def test_case(name: str, snapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CASES)
    assert outcome(name) == snapshot


def test_there_are_cases() -> None:
    assert len(SCENARIOS) >= 5
