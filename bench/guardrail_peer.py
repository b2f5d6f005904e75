"""The embedding floor of a Python guardrail over the same model: the windows that
`basalt guardrails bench --windows-out FILE` embeds, encoded by sentence-transformers
(PyTorch CPU, the same all-MiniLM-L6-v2 files) in one batch, as a guardrail built on
sentence-transformers would have to. Prints p50 and p99 milliseconds as JSON.

Usage: guardrail_peer.py --windows FILE [--threads 2] [--runs 30]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from embed import st_folder  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--model-dir", default=os.path.expanduser(
        os.path.join(os.environ.get("BASALT_MODELS_DIR", "~/.cache/basalt/models"), "all-minilm-l6-v2")))
    args = ap.parse_args()
    windows = json.load(open(args.windows))
    import torch
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer
    m = SentenceTransformer(st_folder(args.model_dir), device="cpu")
    ms = []
    with torch.inference_mode():
        m.encode(windows, batch_size=len(windows))  # warm-up
        for _ in range(args.runs):
            t = time.perf_counter()
            m.encode(windows, batch_size=len(windows), normalize_embeddings=True)
            ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    p99 = ms[min(len(ms) - 1, round((len(ms) - 1) * 0.99))]
    print(json.dumps({"name": "sentence-transformers windows", "windows": len(windows),
                      "p50_ms": round(statistics.median(ms), 1), "p99_ms": round(p99, 1),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    sys.exit(main())
