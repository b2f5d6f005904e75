"""Decode tokens/s through the HTTP API: ConverseStream with boto3 against a running
Basalt (AWS_ENDPOINT_URL and credentials from the environment). Decode speed is
output tokens after the first, over the time from the first text delta to the end."""
import statistics
import sys
import time

import boto3

RUNS = 5
MAX_TOKENS = 128
PROMPT = ("Write a long, detailed story about a dragon who learns to bake bread in a small "
          "mountain village, with many characters and events.")


def one(client):
    start = time.perf_counter()
    first = None
    out_tokens = 0
    resp = client.converse_stream(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "user", "content": [{"text": PROMPT}]}],
        inferenceConfig={"maxTokens": MAX_TOKENS, "temperature": 0})
    for event in resp["stream"]:
        if "contentBlockDelta" in event and first is None:
            first = time.perf_counter()
        if "metadata" in event:
            out_tokens = event["metadata"]["usage"]["outputTokens"]
    end = time.perf_counter()
    return (first - start) * 1000, (out_tokens - 1) / (end - first)


def main():
    client = boto3.client("bedrock-runtime")
    one(client)  # warm-up
    ttft, rate = zip(*(one(client) for _ in range(RUNS)))
    print(f"http ConverseStream: time to first token {statistics.median(ttft):.0f} ms, "
          f"decode {statistics.median(rate):.1f} tok/s (median of {RUNS}, {MAX_TOKENS} max tokens)")


if __name__ == "__main__":
    sys.exit(main())
