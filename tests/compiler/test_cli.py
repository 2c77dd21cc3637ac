"""`swap-compile` as users run it: real subprocesses of the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llama_swap.compiler.plan import REDACTED

SWAP_COMPILE = str(Path(sys.executable).parent / "swap-compile")

GOOD = {
    "10-global.yaml": "apiKeys: [sk-secret-1]\nhealthCheckTimeout: 30\n",
    "20-models.yaml": "models:\n  llama:\n    cmd: llama-server --port ${PORT}\n",
    "30-peers.yaml": "peers:\n  remote:\n    proxy: http://10.0.0.9:8080\n    apiKey: peer-secret\n    models: [big]\n",
}
BAD = {
    "a.yaml": "models:\n  llama:\n    cmd: srv --port ${PORT}\n    ttl: soon\n",
    "b.yaml": "models:\n  llama:\n    cmd: other\n",
}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWAP_COMPILE, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


@pytest.fixture
def good(write_files) -> Path:
    return write_files({f"conf/{k}": v for k, v in GOOD.items()}) / "conf"


@pytest.fixture
def bad(write_files) -> Path:
    return write_files({f"bad/{k}": v for k, v in BAD.items()}) / "bad"


def test_valid_config_prints_the_plan_and_exits_0(good: Path) -> None:
    proc = run("--config-dir", str(good))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["planVersion"] == 1
    assert list(plan["models"]) == ["llama"]
    assert [Path(s["path"]).name for s in plan["sources"]] == sorted(GOOD)
    assert proc.stderr == ""


def test_check_prints_nothing_and_exits_0(good: Path) -> None:
    proc = run("--check", "--config-dir", str(good))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_invalid_config_exits_1_with_located_errors_and_no_traceback(bad: Path) -> None:
    proc = run("--check", "--config-dir", str(bad))
    assert proc.returncode == 1
    assert proc.stdout == ""
    a, b = str(bad / "a.yaml"), str(bad / "b.yaml")
    lines = proc.stderr.splitlines()
    assert f"{b}:2:3: models.llama defined in {a}:2 and again in {b}:2" in lines
    assert "Traceback" not in proc.stderr
    assert lines[-1] == "found 1 error"


def test_all_errors_are_reported_in_one_run(write_files) -> None:
    root = write_files({"c/a.yaml": "globalTTL: x\nstartPort: y\n", "c/b.yaml": "logLevel: loud\n"})
    proc = run("--check", "--config-dir", str(root / "c"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == "found 3 errors"
    assert "\n    globalTTL: x\n" in proc.stderr  # the source line is shown...
    assert "\n               ^\n" in proc.stderr  # ...with a caret under the column


def test_errors_github_prints_annotations(write_files) -> None:
    root = write_files({"c/a.yaml": "models:\n  m:\n    cmd: srv\n    ttl: soon\n"})
    proc = run("--check", "--errors", "github", "--config-dir", str(root / "c"))
    assert proc.returncode == 1
    path = str(root / "c" / "a.yaml")
    assert proc.stderr == (
        f"::error file={path},line=4,col=10,title=models.m.ttl::"
        'models.m.ttl: expected an integer, got a string "soon"\n'
    )


def test_errors_json_is_machine_readable(bad: Path) -> None:
    proc = run("--check", "--errors", "json", "--config-dir", str(bad))
    body = json.loads(proc.stderr)
    assert proc.returncode == 1 and body["errors"] == 1
    (d,) = body["diagnostics"]
    assert (Path(d["file"]).name, d["line"], d["column"], d["path"]) == (
        "b.yaml",
        2,
        3,
        "models.llama",
    )
    assert (Path(d["related"]["file"]).name, d["related"]["line"]) == ("a.yaml", 2)


@pytest.mark.parametrize(
    "style",
    [
        ["-config", "{f}", "-config-dir", "{d}"],
        ["-config={f}", "-config-dir={d}"],
        ["--config", "{f}", "--config-dir", "{d}"],
    ],
)
def test_go_single_dash_flags_are_accepted(write_files, style: list[str]) -> None:
    root = write_files({"main.yaml": GOOD["20-models.yaml"], "d/x.yaml": GOOD["10-global.yaml"]})
    args = [a.format(f=root / "main.yaml", d=root / "d") for a in style]
    proc = run("--check", *args)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--check"],
        ["--bogus"],
        ["--config-dir", "x", "--format", "toml"],
        ["--errors", "xml", "--config", "x"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_files_exit_1_not_2(tmp_path: Path) -> None:
    proc = run("--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr


def test_secrets_are_redacted_unless_asked_for(good: Path) -> None:
    plan = json.loads(run("--config-dir", str(good)).stdout)
    assert plan["apiKeys"] == [REDACTED]
    assert plan["peers"]["remote"]["apiKey"] == REDACTED
    shown = json.loads(run("--show-secrets", "--config-dir", str(good)).stdout)
    assert shown["apiKeys"] == ["sk-secret-1"]
    assert shown["peers"]["remote"]["apiKey"] == "peer-secret"


def test_output_file_and_yaml_format(good: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    proc = run("--config-dir", str(good), "--output", str(out))
    assert (proc.returncode, proc.stdout) == (0, "")
    as_json = json.loads(out.read_text())
    as_yaml = yaml.safe_load(run("--config-dir", str(good), "--format", "yaml").stdout)
    assert as_yaml == as_json


def test_warnings_go_to_stderr_and_strict_makes_them_fatal(write_files) -> None:
    root = write_files({"c/a.yaml": "globalTTl: 5\n"})
    proc = run("--check", "--config-dir", str(root / "c"))
    assert proc.returncode == 0
    assert (
        "warning: globalTTl: unknown key 'globalTTl' (ignored); did you mean 'globalTTL'?"
        in proc.stderr
    )
    strict = run("--check", "--strict", "--config-dir", str(root / "c"))
    assert strict.returncode == 1


def test_internal_errors_exit_3_with_a_please_report_line(good: Path, monkeypatch, capsys) -> None:
    from llama_swap.compiler import cli, pipeline

    def broken(doc, sources):
        raise KeyError("oops")

    monkeypatch.setattr(pipeline, "_resolve", broken)
    monkeypatch.delenv("SWAP_COMPILE_DEBUG", raising=False)
    assert cli.main(["--config-dir", str(good)]) == 3
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "please report" in err
    assert "Traceback" not in err


def test_output_does_not_depend_on_file_creation_order(tmp_path) -> None:
    files = {
        "10-a.yaml": "macros:\n  bin: srv\nmodels:\n  zeta:\n    cmd: ${bin} --port ${PORT}\n",
        "20-b.yaml": "models:\n  alpha:\n    cmd: ${bin} --port ${PORT}\n    aliases: [b, a]\n",
        "30-c.yaml": "apiKeys: [k1]\n",
    }
    outputs = []
    for order in (sorted(files), sorted(files, reverse=True)):
        root = tmp_path / str(len(outputs))
        (root / "conf").mkdir(parents=True)
        for name in order:  # directory listing order follows creation order on most file systems
            (root / "conf" / name).write_text(files[name], encoding="utf-8")
        proc = run("--config-dir", "conf", cwd=root)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    assert run("--config-dir", "conf", cwd=tmp_path / "0").stdout == outputs[0]
