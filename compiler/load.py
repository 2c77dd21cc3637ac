"""The compiler's only contact with the file system.

`load_paths` turns `--config FILE` and `--config-dir DIR` into an ordered
list of (path, text, sha256) sources: FILE first, then DIR's top-level
`*.yml`/`*.yaml` files sorted by name (sub-folders ignored, symlinks to
files followed).  Paths are kept as the user gave them (the dir joined with
the file name) because they appear in messages and in the plan's `sources`.
The digest is of the file's bytes, so it matches `sha256sum`.

Everything after this module is pure and works on text.  `config_schema`
reads the packaged JSON Schema (package data, not user files).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

from llama_swap.compiler.diagnostics import CompileError, Diagnostic, Location

SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True, slots=True)
class LoadedFile:
    path: str
    text: str
    sha256: str


def _problem(message: str, path: str = "") -> Diagnostic:
    return Diagnostic(message, location=Location(path, 0, 0) if path else None)


def _read(path: str, problems: list[Diagnostic]) -> LoadedFile | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except IsADirectoryError:
        problems.append(_problem(f"{path} is a directory; pass it with --config-dir", path))
        return None
    except OSError as exc:
        problems.append(_problem(f"cannot read {path}: {exc.strerror or exc}", path))
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(_problem(f"{path} is not UTF-8 text (byte {exc.start})", path))
        return None
    return LoadedFile(path, text, hashlib.sha256(data).hexdigest())


def _dir_files(config_dir: str, problems: list[Diagnostic]) -> list[str]:
    try:
        with os.scandir(config_dir) as it:
            names = sorted(
                entry.name for entry in it if entry.name.endswith(SUFFIXES) and not entry.is_dir()
            )
    except OSError as exc:
        problems.append(_problem(f"--config-dir {config_dir}: {exc.strerror or exc}", config_dir))
        return []
    return [os.path.join(config_dir, name) for name in names]


def load_paths(config: str | None, config_dir: str | None) -> list[LoadedFile]:
    """Read every source in merge order; raise CompileError listing every problem found."""
    if not config and not config_dir:
        raise CompileError([_problem("at least one of --config or --config-dir must be given")])
    problems: list[Diagnostic] = []
    paths: list[str] = []
    if config:
        paths.append(config)
    if config_dir:
        in_dir = _dir_files(config_dir, problems)
        if config:
            own = os.path.realpath(config)
            for path in in_dir:
                if os.path.realpath(path) == own:
                    problems.append(
                        _problem(
                            f"--config {config} is also in --config-dir {config_dir}; "
                            "it would be merged twice, remove it from one",
                            config,
                        )
                    )
        paths.extend(in_dir)
        if not paths and not problems:
            problems.append(
                _problem(
                    f"no configuration sources found: {config_dir} has no *.yml or *.yaml files"
                )
            )
    files = [f for f in (_read(p, problems) for p in paths) if f is not None]
    if problems:
        raise CompileError(problems)
    return files


@lru_cache(maxsize=1)
def config_schema() -> dict[str, Any]:
    """The JSON Schema of the YAML config (schema/config.schema.json, shipped as package data)."""
    text = files("llama_swap.schema").joinpath("config.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
