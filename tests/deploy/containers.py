"""Build and run the project's container image with podman on the test machines.

Why a module: the container test and the clean-root test both need podman set up the way that
works on these machines (Debian's podman with runc and the cgroupfs manager, a containers.conf
without default ulimits) and a Debian 12 base image that does not come from a registry (none
can be reached): it is made with debootstrap from the machine's own Debian mirror and imported.
Everything specific to these machines lives here, never in the Containerfile.

Caching, like the llama-server build: the debootstrap root is kept as a tarball under
`~/.cache/llama-swap-py/container-base/` (or `$LLAMA_SWAP_CACHE`), keyed by what it contains;
the imported image and podman's layer cache live in podman's own store. A missing tool is a
failure naming the packages to install, never a skip.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.llama_fixtures import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
APT_PACKAGES = "podman buildah debootstrap runc"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "tini")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


class ContainerSetupError(AssertionError):
    """The machine cannot build or run images; the message says why and what to install."""


def cache_dir() -> Path:
    root = load_script("build_llama_server").cache_root()
    return Path(root) / "container-base"


def require_tools() -> None:
    if os.geteuid() != 0:
        raise ContainerSetupError("building images here needs root (rootful podman with runc)")
    missing = [t for t in ("podman", "debootstrap", "runc") if shutil.which(t) is None]
    if missing:
        raise ContainerSetupError(
            f"missing {', '.join(missing)}; install with: apt-get install -y {APT_PACKAGES}"
        )


def debian_mirror() -> str:
    """The machine's own Debian mirror (the first `URIs:` of its apt sources), read at run time."""
    if DEBIAN_SOURCES.exists():
        for line in DEBIAN_SOURCES.read_text().splitlines():
            if line.startswith("URIs:") and line.split()[1:]:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                return parts[1]
    raise ContainerSetupError(f"no Debian mirror found in {DEBIAN_SOURCES} or {legacy}")


def run(argv: list[str], *, timeout: float = 1800, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run to completion; a failure raises with the command's output tail."""
    result = subprocess.run(  # type: ignore[call-overload]
        argv, capture_output=True, text=True, check=False, timeout=timeout, **kw
    )
    if result.returncode != 0:
        out = (result.stdout + result.stderr).splitlines()[-60:]
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n" + "\n".join(out))
    return result  # type: ignore[no-any-return]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Podman:
    """podman as it works on these machines; `conf` is the containers.conf to use."""

    conf: Path

    @classmethod
    def for_this_machine(cls) -> Podman:
        require_tools()
        conf = cache_dir() / "containers.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        text = "[containers]\ndefault_ulimits = []\n"
        if not conf.exists() or conf.read_text() != text:
            conf.write_text(text)
        return cls(conf)

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def __call__(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*args), timeout=timeout, env=self.env())

    def image_exists(self, name: str) -> bool:
        return subprocess.run(self.argv("image", "exists", name), env=self.env(),
                              check=False).returncode == 0


def base_image(podman: Podman) -> str:
    """A Debian 12 image (python3, venv, CA certificates, tini) made with debootstrap; cached."""
    key = hashlib.sha256(f"{SUITE} minbase {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:12]
    name = f"localhost/llama-swap-py-test-base:{SUITE}-{key}"
    tarball = cache_dir() / f"{SUITE}-{key}.tar"
    with _locked(cache_dir() / ".base.lock"):
        if podman.image_exists(name):
            return name
        if not tarball.exists():
            make_rootfs_tarball(tarball)
        with tarball.open("rb") as data:
            subprocess.run(podman.argv("import", "-", name), stdin=data, env=podman.env(),
                           check=True, capture_output=True)
    return name


def make_rootfs_tarball(tarball: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=tarball.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        run([
            "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            SUITE, str(rootfs), debian_mirror(),
        ], timeout=900)  # fmt: skip
        partial = tarball.with_suffix(".tar.partial")
        run(["tar", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.replace(tarball)


def build_args_for_this_machine() -> list[str]:
    """What a build here needs to reach PyPI: the host's CA bundle, as the `pipcert` secret."""
    return ["--network=host", "--secret", f"id=pipcert,src={HOST_CA_BUNDLE}"]


def build_image(podman: Podman, target: str, tag: str, *extra: str) -> None:
    """Build the Containerfile's `target` on the debootstrap base (layers cached by podman).

    The image this replaces under `tag` is removed, so repeated runs on one machine do not pile
    up a copy of the application layer per change.
    """
    commit = run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]).stdout.strip()
    before = image_id(podman, tag)
    podman(
        "build", "--format", "docker", "--target", target, "-t", tag,
        "--build-arg", f"BASE_IMAGE={base_image(podman)}", "--build-arg", f"VCS_REF={commit}",
        *build_args_for_this_machine(), *extra,
        "-f", str(REPO_ROOT / "Containerfile"), str(REPO_ROOT),
    )  # fmt: skip
    if before and before != image_id(podman, tag):
        subprocess.run(podman.argv("rmi", before), env=podman.env(), capture_output=True,
                       check=False)  # still in use by a container: kept, no harm


def image_id(podman: Podman, tag: str) -> str:
    if not podman.image_exists(tag):
        return ""
    return podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


def llama_server_stage(podman: Podman, binary: Path) -> str:
    """An image holding `binary` at /opt/llama.cpp/bin/llama-server, for LLAMA_BUILD_IMAGE.

    The suite's llama-server is built once per machine from the same sdist and flags as the
    Containerfile's llama-build stage; handing it in spares every run another 8-minute
    compile (the stage then skips its compile; without it, it is what users build).
    """
    base = base_image(podman)
    tag = f"localhost/llama-swap-py-test-llama-bin:{binary.parent.name}"
    with tempfile.TemporaryDirectory(prefix="llama-bin-") as tmp:
        shutil.copy2(binary, Path(tmp) / "llama-server")
        (Path(tmp) / "Containerfile").write_text(
            f"FROM {base}\nCOPY llama-server /opt/llama.cpp/bin/llama-server\n"
        )
        podman("build", "-t", tag, tmp)
    return tag
