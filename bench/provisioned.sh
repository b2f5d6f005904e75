#!/usr/bin/env bash
# Reserved capacity under load (issue 7's model-unit figure): bench/provisioned.sh
#
# Starts one Basalt server (8 decode slots, on-demand quotas off so the load really
# saturates the engine), then runs bench/provisioned.py against it: a provisioned
# stream and an on-demand peer stream while 16 on-demand streams loop. Prints the JSON.
# Knobs (environment): BASALT_BIN, THREADS (2), UNITS (1), LOAD (16), RUNS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
THREADS=${THREADS:-2}
export BASALT_MODELS_DIR=${BASALT_MODELS_DIR:-$HOME/.cache/basalt/models}
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || { scripts/setup.sh --tests >&2; }
if [ -z "${BASALT_BIN:-}" ]; then
  cargo build --release --locked -p basalt >&2
  BASALT_BIN=$ROOT/target/release/basalt
fi
"$BASALT_BIN" models fetch >/dev/null

WORK=$(mktemp -d /tmp/basalt-provisioned.XXXXXX)
export BASALT_ROOT_ACCESS_KEY_ID=AKIABENCH$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F | head -c 11)
export BASALT_ROOT_SECRET_ACCESS_KEY=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
export AWS_ACCESS_KEY_ID=$BASALT_ROOT_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$BASALT_ROOT_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_BEARER_TOKEN_BEDROCK
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BASALT_BIN" serve --bind 127.0.0.1:$PORT --data-dir "$WORK/data" --threads "$THREADS" \
  --batch-slots 8 --kv-cache-tokens 8192 --max-queue 64 --no-quotas >"$WORK/basalt.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do curl -fs http://127.0.0.1:$PORT/health >/dev/null 2>&1 && break; sleep 0.5; done
"$PY" bench/provisioned.py --url http://127.0.0.1:$PORT --units "${UNITS:-1}" \
  --load "${LOAD:-16}" --runs "${RUNS:-3}"
echo "provisioned: server log in $WORK/basalt.log" >&2
