"""Time to first token with a cached ~2,000-token prefix against the same request uncached.

Cached: ConverseStream with a ~2,000-token system block followed by
{"cachePoint": {"type": "default"}}; the first call writes the cache
(usage.cacheWriteInputTokens), the measured calls read it (cacheReadInputTokens).
Uncached: the same request without the cachePoint and with a unique nonce at the
very start of the system prompt, so no automatic prefix reuse can happen.
TTFT = time from sending the request to the first contentBlockDelta.

Usage: ttft_cache.py --url URL [--runs 5]; prints one JSON object.
"""
import argparse
import json
import statistics
import sys
import time
import uuid

import boto3
from botocore.config import Config

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"

FACTS = [
    "The warehouse in district {i} stores {n} crates of copper wire, inspected every {d} days.",
    "Ferry route {i} crosses the bay in {n} minutes and carries up to {d} cars per trip.",
    "Sensor {i} on the north ridge logged {n} lightning strikes over {d} summer storms.",
    "Library branch {i} lends {n} books a week and opens {d} evenings a month.",
]


def system_text(target_tokens=2000):
    # About 22 tokens per line with SmolLM2's tokenizer; the real count comes back in usage.
    lines = ["You are the operations assistant of a harbour city. Use the reference facts below."]
    i = 0
    while len(lines) < target_tokens // 22:
        lines.append(FACTS[i % len(FACTS)].format(i=i, n=(i * 37) % 900 + 10, d=(i * 11) % 30 + 2))
        i += 1
    return "\n".join(lines)


def one(client, system, max_tokens):
    start = time.perf_counter()
    first = None
    usage = {}
    resp = client.converse_stream(
        modelId=MODEL_ID, system=system,
        messages=[{"role": "user", "content": [{"text": "Which ferry route is the fastest? Answer briefly."}]}],
        inferenceConfig={"maxTokens": max_tokens, "temperature": 0})
    for event in resp["stream"]:
        if "contentBlockDelta" in event and first is None:
            first = time.perf_counter()
        if "metadata" in event:
            usage = event["metadata"]["usage"]
    end = time.perf_counter()
    return ((first or end) - start) * 1000, usage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--prefix-tokens", type=int, default=2000)
    args = ap.parse_args()
    client = boto3.client("bedrock-runtime", endpoint_url=args.url,
                          config=Config(retries={"max_attempts": 1}, read_timeout=600))
    text = system_text(args.prefix_tokens)
    out = {"runs": args.runs}

    # Uncached first, so the cached side cannot have warmed anything it uses.
    def uncached():
        return one(client, [{"text": f"[{uuid.uuid4().hex}] {text}"}], args.max_tokens)
    uncached()  # warm-up (the model's first-call costs)
    unc = [uncached() for _ in range(args.runs)]
    out["uncached_ttft_ms"] = round(statistics.median(t for t, _ in unc), 1)
    out["uncached_input_tokens"] = unc[-1][1].get("inputTokens")

    cached_system = [{"text": f"[{uuid.uuid4().hex}] {text}"}, {"cachePoint": {"type": "default"}}]
    try:
        write_ms, write_usage = one(client, cached_system, args.max_tokens)
    except Exception as e:  # noqa: BLE001 - a server without cachePoint support is a result
        out["error"] = f"cachePoint request failed: {e}"
        print(json.dumps(out))
        return 0
    out["cache_write_ttft_ms"] = round(write_ms, 1)
    out["cache_write_usage"] = write_usage
    hits = [one(client, cached_system, args.max_tokens) for _ in range(args.runs)]
    out["cached_ttft_ms"] = round(statistics.median(t for t, _ in hits), 1)
    out["cache_read_usage"] = hits[-1][1]
    out["cache_read_tokens"] = hits[-1][1].get("cacheReadInputTokens", 0)
    out["ratio"] = round(out["cached_ttft_ms"] / out["uncached_ttft_ms"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
