"""The compiler's only contact with the file system.

`load_paths` turns `--config FILE` and `--config-dir DIR` into an ordered
list of (path, text, sha256) sources: FILE first, then DIR's top-level
`*.yml`/`*.yaml` files sorted by name (sub-folders ignored, symlinks to
files followed).  Only regular files of at most 16 MiB are read: a FIFO or a
device named as a config would hang or exhaust memory.  Paths are kept as the user gave them (the dir joined with
the file name) because they appear in messages and in the plan's `sources`.
The digest is of the file's bytes, so it matches `sha256sum`.

Everything after this module is pure and works on text.  `config_schema`
reads the packaged JSON Schema (package data, not user files).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

from llama_swap.compiler.diagnostics import CompileError, Diagnostic, Location

SUFFIXES = (".yml", ".yaml")
# A config file larger than this is refused: real configs are a few hundred KiB,
# and everything after loading holds the text (and more) in memory.
MAX_FILE_BYTES = 16 * 2**20


@dataclass(frozen=True, slots=True)
class LoadedFile:
    path: str
    text: str
    sha256: str


def _problem(message: str, path: str = "") -> Diagnostic:
    return Diagnostic(message, location=Location(path, 0, 0) if path else None)


def _read_regular(path: str) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES; raises _Refused or OSError.

    Opened without blocking and checked on the open descriptor: a FIFO would
    block the open (or the read) for ever, and a device like /dev/zero never
    ends; checking the path first would leave a window to swap the file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _Refused(f"{path} is a directory; pass it with --config-dir")
        if not stat.S_ISREG(mode):
            raise _Refused(f"{path} is not a regular file (a FIFO, socket or device); not read")
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _Refused(
            f"{path} is larger than {MAX_FILE_BYTES // 2**20} MiB, the limit for a config file"
        )
    return data


class _Refused(Exception):
    """A path the compiler will not read as a config file."""


def _read(path: str, problems: list[Diagnostic]) -> LoadedFile | None:
    try:
        data = _read_regular(path)
    except _Refused as exc:
        problems.append(_problem(str(exc), path))
        return None
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
