#!/usr/bin/env bash
# Builds Basalt, fetches the default models if they are missing, and serves on
# 127.0.0.1:8080. Extra arguments go to `basalt serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p basalt
target/release/basalt models fetch
exec target/release/basalt serve "$@"
