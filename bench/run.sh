#!/usr/bin/env bash
# Runs Basalt's benchmarks in one go: the engine against a bare llama.cpp loop,
# then decode through the HTTP API on a fresh server. Paste the output into
# docs/benchmarks.md with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
export BASALT_MODELS_DIR=${BASALT_MODELS_DIR:-$HOME/.cache/basalt/models}
cargo build --release --locked -p basalt
target/release/basalt models fetch >/dev/null

echo "== $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
cargo bench --locked -p basalt-engine --bench decode 2>/dev/null | tail -4

port=18089
data=$(mktemp -d)
export BASALT_ROOT_ACCESS_KEY_ID=BENCHKEY000000000000 BASALT_ROOT_SECRET_ACCESS_KEY=benchsecretbenchsecretbenchsecret0000000
target/release/basalt serve --bind 127.0.0.1:$port --data-dir "$data" >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 120); do
  curl -fs http://127.0.0.1:$port/health >/dev/null && break
  sleep 0.5
done
AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=$BASALT_ROOT_ACCESS_KEY_ID \
  AWS_SECRET_ACCESS_KEY=$BASALT_ROOT_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1 \
  .venv/bin/python bench/http_decode.py
