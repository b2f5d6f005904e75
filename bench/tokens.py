"""Prefill and decode tokens/s through the HTTP API, Basalt against llama-server.

Basalt: ConverseStream with boto3 (SigV4, event stream). llama-server: its
OpenAI-compatible /v1/chat/completions with stream=true, so it applies the same
GGUF chat template to the same messages. Both: the same ~500-token user prompt,
(after a short system message that starts with a per-request nonce),
greedy (temperature 0), the same max tokens. The nonce means no prefix cache on
either side can skip prefill.

  prefill tok/s = prompt tokens / time to first token
  decode tok/s  = (output tokens - 1) / (time from first to last token)
  aggregate tok/s (N streams) = all output tokens / wall time of the whole batch

llama-server is asked for ignore_eos so it always generates max tokens; Basalt
has no such switch, so the prompt asks for a long story and the actual output
token counts of both are reported next to the speeds.

Usage: tokens.py --target basalt|llama --url URL --concurrency 1,2,4,8 --runs 5
Prints one JSON object per concurrency level.
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse
import uuid

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"

STORY = (
    "The village of Harrowmere sat at the edge of a cold grey lake, where the fishermen rose before "
    "dawn and the baker lit her ovens long before the first bell. Every morning the smell of warm bread "
    "drifted down the narrow streets, past the blacksmith's forge, the weaver's cottage and the old stone "
    "chapel with its crooked tower. Nobody in Harrowmere remembered a winter as long as the one that began "
    "the year the dragon came. Snow fell for forty days without stopping. The lake froze so thick that the "
    "children skated across it to the far shore, and the fishermen sat idle by their fires, mending nets "
    "that nobody would use until spring. "
)


def prompt_text(target_tokens=500):
    # About 100 tokens per STORY copy with SmolLM2's tokenizer; the exact count is reported.
    body = STORY * max(1, target_tokens // 110)
    return (f"{body}\nContinue this story in great detail. Describe the dragon, the baker, the villagers "
            "and every event of that winter, one long chapter after another.")


class Basalt:
    def __init__(self, url, max_tokens):
        import boto3
        from botocore.config import Config
        self.url, self.max_tokens = url, max_tokens
        self.cfg = Config(retries={"max_attempts": 1}, read_timeout=600)
        self.local = threading.local()
        self.boto3 = boto3

    def client(self):
        if not hasattr(self.local, "c"):
            self.local.c = self.boto3.client("bedrock-runtime", endpoint_url=self.url, config=self.cfg)
        return self.local.c

    def one(self, text):
        system, text = text
        c = self.client()
        start = time.perf_counter()
        first = last = None
        usage = {}
        resp = c.converse_stream(
            modelId=MODEL_ID,
            system=[{"text": system}],
            messages=[{"role": "user", "content": [{"text": text}]}],
            inferenceConfig={"maxTokens": self.max_tokens, "temperature": 0})
        for event in resp["stream"]:
            if "contentBlockDelta" in event:
                now = time.perf_counter()
                first = first or now
                last = now
            if "metadata" in event:
                usage = event["metadata"]["usage"]
        end = time.perf_counter()
        return dict(start=start, first=first, last=last or end, end=end,
                    prompt_tokens=usage.get("inputTokens", 0), output_tokens=usage.get("outputTokens", 0))


class Llama:
    def __init__(self, url, max_tokens):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.max_tokens = u.hostname, u.port, max_tokens

    def one(self, text):
        system, text = text
        body = json.dumps({
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
            "max_tokens": self.max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True, "cache_prompt": False,
        })
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        start = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"llama-server: HTTP {resp.status}: {resp.read()[:300]!r}")
        first = last = None
        usage = {}
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            for ch in chunk.get("choices") or []:
                if (ch.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
            if chunk.get("usage"):
                usage = chunk["usage"]
        end = time.perf_counter()
        conn.close()
        return dict(start=start, first=first, last=last or end, end=end,
                    prompt_tokens=usage.get("prompt_tokens", 0),
                    output_tokens=usage.get("completion_tokens", 0))


def unique(text):
    # The nonce opens the system message, the first thing the chat template renders after
    # its opening marker, so no two requests share more than a couple of tokens of prefix.
    return f"[{uuid.uuid4().hex[:12]}] You are a helpful storyteller.", text


def batch(peer, text, n):
    """n concurrent requests; returns their results and the batch wall time."""
    results = [None] * n
    errors = []

    def run(i):
        try:
            results[i] = peer.one(unique(text))
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} requests failed: {errors[0]}")
    return results, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", choices=["basalt", "llama"], required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--concurrency", default="1")
    ap.add_argument("--runs", type=int, default=5, help="batches per level (median reported)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=500)
    args = ap.parse_args()
    peer = (Basalt if args.target == "basalt" else Llama)(args.url, args.max_tokens)
    text = prompt_text(args.prompt_tokens)
    peer.one(unique(text))  # warm-up
    for n in [int(x) for x in args.concurrency.split(",")]:
        prefill, decode, ttft, agg, outs, prompts = [], [], [], [], [], []
        for _ in range(args.runs):
            results, wall = batch(peer, text, n)
            agg.append(sum(r["output_tokens"] for r in results) / wall)
            for r in results:
                t = r["first"] - r["start"]
                ttft.append(t * 1000)
                prefill.append(r["prompt_tokens"] / t)
                if r["output_tokens"] > 1 and r["last"] > r["first"]:
                    decode.append((r["output_tokens"] - 1) / (r["last"] - r["first"]))
                outs.append(r["output_tokens"])
                prompts.append(r["prompt_tokens"])
        print(json.dumps({
            "target": args.target, "concurrency": n, "runs": args.runs,
            "prefill_tok_s": round(statistics.median(prefill), 1),
            "decode_tok_s": round(statistics.median(decode), 1) if decode else None,
            "ttft_ms": round(statistics.median(ttft), 1),
            "aggregate_tok_s": round(statistics.median(agg), 1),
            "prompt_tokens": sorted(set(prompts)),
            "output_tokens": sorted(set(outs)),
        }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
