#!/usr/bin/env bash
# Runs every test: Rust unit and SDK tests, then the boto3 / AWS CLI suite
# against a real server with the real default models.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
export BASALT_MODELS_DIR=${BASALT_MODELS_DIR:-$HOME/.cache/basalt/models}
cargo build --release --locked --workspace --all-targets
target/release/basalt models fetch
export BASALT_BIN=$PWD/target/release/basalt
# The pgvector tests fail, rather than skip, when PostgreSQL cannot be found.
export BASALT_REQUIRE_PG=1
cargo test --release --locked --workspace
.venv/bin/python -m pytest tests/integration -q
