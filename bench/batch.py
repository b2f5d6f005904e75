"""Batch inference throughput, against the seed's one-call-per-record loop over the same
inputs, on one Basalt server; and online time to first token while a batch job runs.

Usage (from the repository root, after a release build and `basalt models fetch`):
    .venv/bin/python bench/batch.py [--embed 1000] [--generate 200] [--max-tokens 32]
        [--ttft-samples 15] [--busy generate|embed] [--bin target/release/basalt]
A workload given 0 records (or 0 TTFT samples) is skipped. --busy picks the batch job that
runs while the busy TTFT is sampled: generation (the default) or embeddings.
"""

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/Bench"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
TOPICS = ["rivers", "volcanoes", "bread", "chess", "orbits", "glaciers", "violins", "bridges"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data: Path, binary: Path):
    port = free_port()
    key_id, secret = "AKIA" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    env = dict(os.environ, BASALT_ROOT_ACCESS_KEY_ID=key_id, BASALT_ROOT_SECRET_ACCESS_KEY=secret,
               BASALT_NO_QUOTAS="1")
    log = open(data / "server.log", "ab")
    proc = subprocess.Popen([str(binary), "serve", "--bind",
                             f"127.0.0.1:{port}", "--data-dir", str(data)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import urllib.request
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.1)
    cfg = Config(retries={"max_attempts": 1}, read_timeout=600)

    def client(service):
        return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                            aws_access_key_id=key_id, aws_secret_access_key=secret, config=cfg)
    return proc, client


def claude_body(i: int, max_tokens: int) -> dict:
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": f"Write one sentence about {TOPICS[i % 8]} ({i})."}]}


def run_job(bedrock, data: Path, name: str, model: str, bodies: list) -> tuple[float, dict]:
    (data / "s3" / "bench-in").mkdir(parents=True, exist_ok=True)
    (data / "s3" / "bench-out").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"recordId": f"R{i}", "modelInput": b}) for i, b in enumerate(bodies)]
    (data / "s3" / "bench-in" / f"{name}.jsonl").write_text("\n".join(lines))
    started = time.monotonic()
    arn = bedrock.create_model_invocation_job(
        jobName=name, modelId=model, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://bench-in/{name}.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bench-out/"}})["jobArn"]
    while True:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in {"Completed", "PartiallyCompleted", "Failed", "Stopped"}:
            return time.monotonic() - started, job
        time.sleep(0.05)


def loop(runtime, model: str, bodies: list) -> float:
    """The seed's pattern: one InvokeModel call per record, in turn."""
    started = time.monotonic()
    for b in bodies:
        json.loads(runtime.invoke_model(modelId=model, contentType="application/json",
                                        accept="application/json", body=json.dumps(b))["body"].read())
    return time.monotonic() - started


def ttft(runtime, n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.monotonic()
        stream = runtime.converse_stream(
            modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": f"Say a word about {TOPICS[i % 8]}."}]}],
            inferenceConfig={"maxTokens": 8, "temperature": 0})["stream"]
        for event in stream:
            if "contentBlockDelta" in event:
                out.append((time.monotonic() - started) * 1000)
                break
        for _ in stream:
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--embed", type=int, default=1000)
    ap.add_argument("--generate", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--ttft-samples", type=int, default=15)
    ap.add_argument("--busy", choices=["generate", "embed"], default="generate")
    ap.add_argument("--bin", type=Path, default=ROOT / "target/release/basalt",
                    help="the server binary (e.g. a copy of an earlier build, for a before/after run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        proc, client = start(data, args.bin)
        try:
            bedrock, runtime = client("bedrock"), client("bedrock-runtime")
            embed_bodies = [{"inputText": f"Passage {i} is a short note about {TOPICS[i % 8]} and how it works.",
                             "dimensions": 1024} for i in range(args.embed)]
            gen_bodies = [claude_body(i, args.max_tokens) for i in range(args.generate)]
            loop(runtime, TITAN_EMBED, embed_bodies[:20])  # warm both paths
            loop(runtime, CLAUDE, gen_bodies[:2])
            uptime = os.getloadavg()

            print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                  f"{os.cpu_count()} cores, one Basalt server ({args.bin}), no quotas, "
                  f"load average at start {uptime[0]:.2f}")
            print("| Workload | Batch job s | Batch records/s | Seed loop s | Loop records/s | Speed-up |")
            print("|---|---|---|---|---|---|")
            for label, model, bodies in [(f"{args.embed} Titan embedding records", TITAN_EMBED, embed_bodies),
                                         (f"{args.generate} Claude records, max_tokens {args.max_tokens}", CLAUDE, gen_bodies)]:
                if not bodies:
                    continue
                job_s, job = run_job(bedrock, data, f"bench-{len(bodies)}-{model[:6].replace('.', '')}", model, bodies)
                assert job["status"] == "Completed", job
                loop_s = loop(runtime, model, bodies)
                n = len(bodies)
                print(f"| {label} | {job_s:.1f} | {n / job_s:.1f} | {loop_s:.1f} | {n / loop_s:.1f} | {loop_s / job_s:.2f}× |")
                sys.stdout.flush()

            if args.ttft_samples <= 0:
                print(f"\nload average at end {os.getloadavg()[0]:.2f}")
                return
            idle = ttft(runtime, args.ttft_samples)
            busy_model = CLAUDE if args.busy == "generate" else TITAN_EMBED
            busy_bodies = ([claude_body(i, 64) for i in range(400)] if args.busy == "generate" else
                           [{"inputText": f"Passage {i} is a longer note about {TOPICS[i % 8]}, what it is "
                                          "made of, where it is found, and how it has changed.",
                             "dimensions": 1024} for i in range(50000)])
            # Made here too: with both workloads skipped, no job has made them yet.
            (data / "s3" / "bench-in").mkdir(parents=True, exist_ok=True)
            (data / "s3" / "bench-out").mkdir(parents=True, exist_ok=True)
            (data / "s3" / "bench-in" / "busy.jsonl").write_text(
                "\n".join(json.dumps({"recordId": f"B{i}", "modelInput": b}) for i, b in enumerate(busy_bodies)))
            arn = bedrock.create_model_invocation_job(
                jobName="busy", modelId=busy_model, roleArn=ROLE,
                inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://bench-in/busy.jsonl"}},
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bench-out/"}})["jobArn"]
            while bedrock.get_model_invocation_job(jobIdentifier=arn).get("processedRecordCount", 0) < 2:
                time.sleep(0.05)
            busy = ttft(runtime, args.ttft_samples)
            still = bedrock.get_model_invocation_job(jobIdentifier=arn)["status"]
            bedrock.stop_model_invocation_job(jobIdentifier=arn)
            p50 = statistics.median
            print()
            print("| Online ConverseStream, 8 tokens | TTFT p50 ms | TTFT max ms |")
            print("|---|---|---|")
            print(f"| Idle server | {p50(idle):.0f} | {max(idle):.0f} |")
            kind = "a generation" if args.busy == "generate" else "an embedding"
            print(f"| While {kind} batch job runs ({still}) | {p50(busy):.0f} | {max(busy):.0f} |")
            print(f"\nBusy/idle TTFT p50: {p50(busy) / p50(idle):.2f}× (goal: at most 2×)")
            print(f"load average at end {os.getloadavg()[0]:.2f}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
