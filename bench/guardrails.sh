#!/usr/bin/env bash
# Guardrail latency: `basalt guardrails bench` (every policy on a 500-token input, and
# the lexical policies alone), then the peer: sentence-transformers embedding the same
# windows with the same model and threads. Needs bench/peers.sh's venv and a release build.
# Usage: RUNS=30 THREADS=2 bench/guardrails.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}
THREADS=${THREADS:-2}
WINDOWS=$(mktemp --suffix=.json)
trap 'rm -f "$WINDOWS"' EXIT
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
target/release/basalt guardrails bench --runs "$RUNS" --windows-out "$WINDOWS"
echo
bench/.venv/bin/python bench/guardrail_peer.py --windows "$WINDOWS" --threads "$THREADS" --runs "$RUNS" 2>/dev/null
