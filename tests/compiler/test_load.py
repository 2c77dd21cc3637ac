"""Reading --config / --config-dir: order, what counts as a source, and load errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from llama_swap.compiler.diagnostics import CompileError
from llama_swap.compiler.load import load_paths
from llama_swap.compiler.pipeline import compile_paths

MODEL = "models:\n  {id}:\n    cmd: srv --port ${{PORT}}\n"


def messages(exc: pytest.ExceptionInfo[CompileError]) -> list[str]:
    return [d.message for d in exc.value.diagnostics]


def test_config_file_comes_first_then_dir_files_sorted_by_name(write_files) -> None:
    root = write_files(
        {
            "main.yaml": "globalTTL: 5\n",
            "conf.d/20-b.yml": "",
            "conf.d/10-a.yaml": "",
            "conf.d/30-c.yaml": "",
        }
    )
    files = load_paths(str(root / "main.yaml"), str(root / "conf.d"))
    names = [os.path.relpath(f.path, root) for f in files]
    assert names == ["main.yaml", "conf.d/10-a.yaml", "conf.d/20-b.yml", "conf.d/30-c.yaml"]


def test_paths_are_reported_as_given_and_dir_joined_with_file_name(
    write_files, monkeypatch
) -> None:
    root = write_files({"cfg/a.yaml": "", "main.yaml": ""})
    monkeypatch.chdir(root)
    files = load_paths("main.yaml", "cfg")
    assert [f.path for f in files] == ["main.yaml", os.path.join("cfg", "a.yaml")]


def test_sub_folders_and_other_extensions_are_ignored(write_files) -> None:
    root = write_files(
        {
            "d/a.yaml": "",
            "d/nested/b.yaml": "",
            "d/notes.txt": "",
            "d/c.YAML": "",
            "d/dir.yaml/x.yaml": "",
            "d/.hidden.yml": "",
        }
    )
    names = [os.path.basename(f.path) for f in load_paths(None, str(root / "d"))]
    assert names == [".hidden.yml", "a.yaml"]


def test_sha256_is_of_the_file_bytes(write_files) -> None:
    raw = "# é\nglobalTTL: 1\r\n".encode()
    root = write_files({"a.yaml": raw})
    (loaded,) = load_paths(str(root / "a.yaml"), None)
    assert loaded.sha256 == hashlib.sha256(raw).hexdigest()
    plan = compile_paths(str(root / "a.yaml"), None, env={}).plan
    assert [(s.path, s.sha256) for s in plan.sources] == [(str(root / "a.yaml"), loaded.sha256)]


def test_config_file_inside_config_dir_is_an_error(write_files) -> None:
    root = write_files({"d/a.yaml": MODEL.format(id="a")})
    with pytest.raises(CompileError) as exc:
        load_paths(str(root / "d" / "a.yaml"), str(root / "d"))
    assert "is also in --config-dir" in messages(exc)[0]


def test_config_file_outside_the_dir_is_fine_even_with_the_same_name(write_files) -> None:
    root = write_files({"a.yaml": "", "d/a.yaml": ""})
    assert len(load_paths(str(root / "a.yaml"), str(root / "d"))) == 2


def test_empty_dir_alone_has_no_sources(write_files) -> None:
    root = write_files({"d/readme.txt": ""})
    with pytest.raises(CompileError) as exc:
        load_paths(None, str(root / "d"))
    assert "no configuration sources found" in messages(exc)[0]


def test_empty_dir_with_a_config_file_is_fine(write_files) -> None:
    root = write_files({"a.yaml": MODEL.format(id="m"), "d/readme.txt": ""})
    plan = compile_paths(str(root / "a.yaml"), str(root / "d"), env={}).plan
    assert list(plan.models) == ["m"]


def test_all_sources_empty_yields_a_plan_of_defaults(write_files) -> None:
    root = write_files({"d/a.yaml": "", "d/b.yaml": "# only a comment\n", "d/c.yml": "---\n"})
    plan = compile_paths(None, str(root / "d"), env={}).plan
    assert plan.models == {} and plan.settings.healthCheckTimeout == 120
    assert len(plan.sources) == 3


def test_neither_flag_is_an_error() -> None:
    with pytest.raises(CompileError) as exc:
        load_paths(None, None)
    assert "at least one of --config or --config-dir" in messages(exc)[0]


def test_missing_file_and_missing_dir_are_both_reported(tmp_path: Path) -> None:
    with pytest.raises(CompileError) as exc:
        load_paths(str(tmp_path / "nope.yaml"), str(tmp_path / "nodir"))
    found = messages(exc)
    assert len(found) == 2
    assert any("cannot read" in m and "nope.yaml" in m for m in found)
    assert any("nodir" in m for m in found)


def test_non_utf8_file_is_reported_not_crashed_on(write_files) -> None:
    root = write_files({"a.yaml": b"globalTTL: \xff\n"})
    with pytest.raises(CompileError) as exc:
        load_paths(str(root / "a.yaml"), None)
    assert "not UTF-8" in messages(exc)[0]


def test_a_directory_given_as_config_is_reported(write_files) -> None:
    root = write_files({"d/a.yaml": ""})
    with pytest.raises(CompileError) as exc:
        load_paths(str(root / "d"), None)
    assert "--config-dir" in messages(exc)[0]


def test_models_from_config_and_dir_are_merged_additively(write_files) -> None:
    root = write_files(
        {
            "main.yaml": MODEL.format(id="one"),
            "d/a.yaml": MODEL.format(id="two"),
            "d/b.yaml": MODEL.format(id="three"),
        }
    )
    plan = compile_paths(str(root / "main.yaml"), str(root / "d"), env={}).plan
    assert sorted(plan.models) == ["one", "three", "two"]


def test_repeated_loads_give_byte_identical_plans(write_files) -> None:
    from llama_swap.compiler.plan import plan_to_json

    root = write_files({f"d/{n:02}.yaml": MODEL.format(id=f"m{n}") for n in range(12)})
    first = plan_to_json(compile_paths(None, str(root / "d"), env={}).plan)
    second = plan_to_json(compile_paths(None, str(root / "d"), env={}).plan)
    assert first == second
