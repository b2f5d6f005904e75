"""Reserved capacity under load: a provisioned stream while on-demand traffic saturates the engine.

One provisioned throughput of --units model units (one decode slot each) serves the
text model. --load threads send on-demand ConverseStream requests in a loop, more than
the shared slots hold, so the rest queue. While they run, the script times:
  - the same long generation through the provisioned ARN (reserved slots), and
  - the same generation on demand (the peer: it waits in the shared line),
and, before the load starts, the provisioned generation on an idle engine.

A model unit's reserved rate is one slot of a full batch: the median decode rate of the
on-demand sequences that ran during the load (measured in the same run). The check is
that the provisioned stream keeps that rate within 10%.

decode tok/s = (output tokens - 1) / (last event - first token); effective tok/s
counts from sending the request, so it includes any wait for a slot.

Usage: provisioned.py --url URL [--units 1] [--load 16] [--runs 3]; prints one JSON object.
"""
import argparse
import json
import statistics
import threading
import time

import boto3
from botocore.config import Config

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
PROMPT = "Write a very long story about a lighthouse keeper, the sea and a storm."


def stream(client, model_id, max_tokens):
    sent = time.perf_counter()
    first = None
    tokens = 0
    resp = client.converse_stream(
        modelId=model_id,
        messages=[{"role": "user", "content": [{"text": PROMPT}]}],
        inferenceConfig={"maxTokens": max_tokens, "temperature": 0})
    for event in resp["stream"]:
        if "contentBlockDelta" in event and first is None:
            first = time.perf_counter()
        if "metadata" in event:
            tokens = event["metadata"]["usage"]["outputTokens"]
    end = time.perf_counter()
    first = first or end
    return {
        "ttft_ms": (first - sent) * 1000,
        "tokens": tokens,
        "decode_tps": (tokens - 1) / (end - first) if end > first and tokens > 1 else 0.0,
        "effective_tps": tokens / (end - sent),
    }


def summary(runs):
    return {
        "runs": len(runs),
        "tokens": round(statistics.median(r["tokens"] for r in runs)),
        "ttft_ms": round(statistics.median(r["ttft_ms"] for r in runs), 1),
        "decode_tps": round(statistics.median(r["decode_tps"] for r in runs), 2),
        "effective_tps": round(statistics.median(r["effective_tps"] for r in runs), 2),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--units", type=int, default=1)
    ap.add_argument("--load", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=160)
    args = ap.parse_args()
    cfg = Config(retries={"max_attempts": 1}, read_timeout=900, max_pool_connections=args.load + 4)
    runtime = boto3.client("bedrock-runtime", endpoint_url=args.url, config=cfg)
    control = boto3.client("bedrock", endpoint_url=args.url, config=cfg)

    arn = control.create_provisioned_model_throughput(
        modelUnits=args.units, provisionedModelName=f"bench-{int(time.time())}",
        modelId=MODEL_ID)["provisionedModelArn"]
    while control.get_provisioned_model_throughput(provisionedModelId=arn)["status"] != "InService":
        time.sleep(0.5)
    out = {"units": args.units, "load_threads": args.load, "max_tokens": args.max_tokens}

    stream(runtime, arn, 16)  # warm-up
    out["provisioned_idle"] = summary([stream(runtime, arn, args.max_tokens) for _ in range(args.runs)])

    stop = threading.Event()
    on_demand = []
    lock = threading.Lock()

    def load():
        while not stop.is_set():
            r = stream(runtime, MODEL_ID, args.max_tokens)
            with lock:
                on_demand.append((time.perf_counter(), r))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(args.load)]
    for t in threads:
        t.start()
    time.sleep(5)  # every shared slot busy and a line waiting
    measured_from = time.perf_counter()
    provisioned = []
    peer = []
    for _ in range(args.runs):
        provisioned.append(stream(runtime, arn, args.max_tokens))
        peer.append(stream(runtime, MODEL_ID, args.max_tokens))
    measured_to = time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    with lock:
        during = [r for at, r in on_demand if measured_from <= at <= measured_to]
    out["provisioned_under_load"] = summary(provisioned)
    out["on_demand_peer_under_load"] = summary(peer)
    out["load_requests_finished"] = len(during)
    if during:
        slot_rate = statistics.median(r["decode_tps"] for r in during)
        out["slot_rate_tps"] = round(slot_rate, 2)
        out["reserved_tps"] = round(slot_rate * args.units, 2)
        kept = out["provisioned_under_load"]["decode_tps"] / out["reserved_tps"]
        out["provisioned_vs_reserved"] = round(kept, 3)
        out["within_10_percent"] = kept >= 0.9
    control.delete_provisioned_model_throughput(provisionedModelId=arn)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
