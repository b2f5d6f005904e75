#!/usr/bin/env bash
# Image generation per-step time on the tiny fixtures: Basalt through InvokeModel against the
# diffusers pipeline on the same folders and threads (bench/images.py says what is measured).
# Needs `bench/peers.sh torch` (torch, transformers, diffusers) and a release build.
# Usage: RUNS=3 THREADS=2 bench/images.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
BIN=$PWD/target/release/basalt
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null; rm -rf "$work"' EXIT

# Fixtures: SD, SDXL, and SDXL with SDXL-Turbo's published scheduler config.
$BIN models write-test-diffusion-model "$work/sd" >/dev/null
$BIN models write-test-diffusion-model "$work/sdxl" --sdxl >/dev/null
$BIN models write-test-diffusion-model "$work/turbo" --sdxl >/dev/null
python3 - "$work/turbo" <<'PY'
import json, sys
d = sys.argv[1]
json.dump({"_class_name": "EulerAncestralDiscreteScheduler", "beta_end": 0.012,
           "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
           "interpolation_type": "linear", "num_train_timesteps": 1000,
           "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
           "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "trailing",
           "trained_betas": None, "use_karras_sigmas": False},
          open(f"{d}/scheduler/scheduler_config.json", "w"), indent=2)
index = json.load(open(f"{d}/model_index.json"))
index["scheduler"] = ["diffusers", "EulerAncestralDiscreteScheduler"]
json.dump(index, open(f"{d}/model_index.json", "w"), indent=2)
PY

# A model cache of its own: the default models linked, the three fixtures imported.
models=$work/models
mkdir "$models"
for entry in "${BASALT_MODELS_DIR:-$HOME/.cache/basalt/models}"/*; do
  [ "$(basename "$entry")" = imported ] || ln -s "$entry" "$models/"
done
export BASALT_MODELS_DIR=$models
$BIN models import --id amazon.titan-image-generator-v2:0 --from "$work/sd" >/dev/null
$BIN models import --id stability.stable-diffusion-xl-v1 --from "$work/sdxl" >/dev/null
$BIN models import --id stability.stable-image-core-v1:1 --from "$work/turbo" >/dev/null

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
port=18097
export BASALT_ROOT_ACCESS_KEY_ID=BENCHKEY000000000000 BASALT_ROOT_SECRET_ACCESS_KEY=benchsecretbenchsecretbenchsecret0000000
$BIN serve --bind 127.0.0.1:$port --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 240); do
  curl -fs http://127.0.0.1:$port/health >/dev/null && break
  sleep 0.5
done
AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=$BASALT_ROOT_ACCESS_KEY_ID \
  AWS_SECRET_ACCESS_KEY=$BASALT_ROOT_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1 \
  bench/.venv/bin/python bench/images.py --dirs "$work/sd" "$work/sdxl" "$work/turbo" \
  --threads "$THREADS" --runs "$RUNS" 2>"$work/peer.log" || { cat "$work/peer.log" >&2; exit 1; }
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
