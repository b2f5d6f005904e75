"""Embeddings sentences/s on all-MiniLM-L6-v2: Basalt against sentence-transformers.

  basalt-cohere: InvokeModel cohere.embed-english-v3, 32 texts per call
                 ({"texts": [...], "input_type": "search_document"}).
  basalt-titan-loop: the seed's batch_embeddings pattern, one
                 amazon.titan-embed-text-v2:0 call per text (what users do today).
  sentence-transformers: in-process, PyTorch CPU, the same model files
                 (config.json, tokenizer.json, model.safetensors) wrapped in a
                 temporary folder with mean pooling + L2 normalisation (as Basalt's
                 Cohere path does), encode(batch_size=32), torch.set_num_threads(T).

Usage: embed.py --url URL --threads 2 [--seconds 10] [--only basalt|st]
Prints one JSON object per measurement.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

WORDS = ("river stone market winter bread lantern harbour engine garden mountain quiet "
         "signal copper morning village letter window forest ladder thunder silver "
         "kitchen journey station autumn candle meadow bridge shadow harvest").split()


def sentences(n=32, words=20, seed=7):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "." for _ in range(n)]


def timed(fn, seconds, per_call):
    fn()  # warm-up
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or calls < 3:
        fn()
        calls += 1
    dt = time.perf_counter() - t0
    return round(calls * per_call / dt, 1), calls


def basalt(url, texts, seconds):
    import boto3
    from botocore.config import Config
    c = boto3.client("bedrock-runtime", endpoint_url=url, config=Config(retries={"max_attempts": 1}))

    def cohere():
        r = c.invoke_model(modelId="cohere.embed-english-v3", contentType="application/json",
                           accept="application/json",
                           body=json.dumps({"texts": texts, "input_type": "search_document"}))
        body = json.loads(r["body"].read())
        assert len(body["embeddings"]) == len(texts)

    rate, calls = timed(cohere, seconds, len(texts))
    print(json.dumps({"name": "basalt-cohere", "sentences_s": rate, "calls": calls,
                      "batch": len(texts)}), flush=True)

    def titan_loop():  # the seed's batch_embeddings: one call per text
        for t in texts:
            r = c.invoke_model(modelId="amazon.titan-embed-text-v2:0", contentType="application/json",
                               accept="application/json",
                               body=json.dumps({"inputText": t, "dimensions": 1024, "normalize": True}))
            json.loads(r["body"].read())["embedding"]

    rate, calls = timed(titan_loop, seconds, len(texts))
    print(json.dumps({"name": "basalt-titan-loop", "sentences_s": rate, "calls": calls * len(texts),
                      "batch": 1}), flush=True)


def st_folder(model_dir):
    """sentence-transformers layout around the unchanged weights (symlinks)."""
    d = tempfile.mkdtemp(prefix="st-minilm-")
    for f in ("config.json", "tokenizer.json", "model.safetensors"):
        os.symlink(os.path.join(model_dir, f), os.path.join(d, f))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                   "model_max_length": 256}, fh)
    with open(os.path.join(d, "modules.json"), "w") as fh:
        json.dump([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ], fh)
    with open(os.path.join(d, "sentence_bert_config.json"), "w") as fh:
        json.dump({"max_seq_length": 256, "do_lower_case": False}, fh)
    os.makedirs(os.path.join(d, "1_Pooling"))
    with open(os.path.join(d, "1_Pooling", "config.json"), "w") as fh:
        json.dump({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}, fh)
    os.makedirs(os.path.join(d, "2_Normalize"))
    return d


def sentence_transformers(model_dir, texts, seconds, threads):
    import torch
    torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer
    m = SentenceTransformer(st_folder(model_dir), device="cpu")

    def enc():
        v = m.encode(texts, batch_size=len(texts), normalize_embeddings=True)
        assert v.shape == (len(texts), 384)

    with torch.inference_mode():
        rate, calls = timed(enc, seconds, len(texts))
    print(json.dumps({"name": "sentence-transformers", "sentences_s": rate, "calls": calls,
                      "batch": len(texts), "torch": torch.__version__,
                      "torch_threads": torch.get_num_threads()}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--only", choices=["basalt", "st"])
    ap.add_argument("--model-dir", default=os.path.expanduser(
        os.path.join(os.environ.get("BASALT_MODELS_DIR", "~/.cache/basalt/models"), "all-minilm-l6-v2")))
    args = ap.parse_args()
    texts = sentences()
    if args.only in (None, "basalt"):
        basalt(args.url, texts, args.seconds)
    if args.only in (None, "st"):
        sentence_transformers(args.model_dir, texts, args.seconds, args.threads)


if __name__ == "__main__":
    sys.exit(main())
