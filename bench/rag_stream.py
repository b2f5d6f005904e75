"""RetrieveAndGenerateStream: time to the first event and to the end of the stream,
end to end through boto3.

Peer, in the same run on the same server: ConverseStream on the same model with the
same maxTokens, the floor for any streamed generation (it has no retrieval and no
citations). RetrieveAndGenerate (not streamed) is measured too.

Usage (from the repository root, after a release build and `basalt models fetch`):
    .venv/bin/python bench/rag_stream.py [--bin target/release/basalt] [--runs 5] [--max-tokens 150]
"""

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
ROLE = "arn:aws:iam::123456789012:role/Bench"
EMBED_ARN = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
MODEL_ID = "anthropic.claude-3-sonnet-20240229-v1:0"
MODEL_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL_ID}"
DOCS = {
    "s3-policies.md": "A bucket policy is a resource-based JSON policy attached to an Amazon S3 bucket. "
                      "To configure it, open the bucket's Permissions tab and edit the bucket policy. Each "
                      "statement names an Effect, a Principal, the Actions such as s3:GetObject, and the Resource ARN.",
    "lambda.txt": "AWS Lambda functions run for at most 15 minutes. The default timeout is 3 seconds; raise it "
                  "in the function configuration when handlers need longer.",
    "dynamodb.txt": "DynamoDB is a serverless key-value and document database with single-digit millisecond latency.",
}
QUESTIONS = [
    "Explain in detail how to configure S3 bucket policies and what a statement holds.",
    "Describe AWS Lambda timeouts in detail and how to change them.",
]


def start(binary: Path, data: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key_id, secret = "AKIA" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    env = dict(os.environ, BASALT_ROOT_ACCESS_KEY_ID=key_id, BASALT_ROOT_SECRET_ACCESS_KEY=secret,
               BASALT_NO_QUOTAS="1")
    log = open(data / "server.log", "ab")
    proc = subprocess.Popen([str(binary), "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", str(data)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
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


def timed_stream(call, member):
    """(seconds to the first event, seconds to the end, events of kind `member`)."""
    started = time.monotonic()
    out = call()
    first, n = None, 0
    for event in out["stream"]:
        if first is None:
            first = time.monotonic() - started
        n += member in event
    return first, time.monotonic() - started, n


def summary(label, rows):
    firsts, totals, counts = zip(*rows)
    med_first, med_total = statistics.median(firsts), statistics.median(totals)
    print(f"{label:28} first event {med_first * 1000:7.0f} ms  end {med_total * 1000:7.0f} ms  "
          f"first/end {med_first / med_total:5.2f}  text events {statistics.median(counts):5.0f}  (medians of {len(rows)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/basalt"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=150)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="basalt-rag-bench-"))
    proc, client = start(Path(args.bin), data)
    try:
        agent, agent_rt, rt = client("bedrock-agent"), client("bedrock-agent-runtime"), client("bedrock-runtime")
        bucket = data / "s3" / "bench-rag"
        bucket.mkdir(parents=True)
        for name, text in DOCS.items():
            (bucket / name).write_text(text)
        kb_id = agent.create_knowledge_base(
            name="bench", roleArn=ROLE,
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": EMBED_ARN}},
        )["knowledgeBase"]["knowledgeBaseId"]
        while agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["status"] != "ACTIVE":
            time.sleep(0.1)
        ds_id = agent.create_data_source(
            knowledgeBaseId=kb_id, name="bench",
            dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::bench-rag"}},
        )["dataSource"]["dataSourceId"]
        job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
        while agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id
                                      )["ingestionJob"]["status"] not in ("COMPLETE", "FAILED", "STOPPED"):
            time.sleep(0.05)
        config = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
            "knowledgeBaseId": kb_id, "modelArn": MODEL_ARN,
            "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {
                "maxTokens": args.max_tokens, "temperature": 0}}}}}
        rag, rag_whole, converse = [], [], []
        for i in range(args.runs + 1):  # the first round warms up and is not counted
            q = QUESTIONS[i % len(QUESTIONS)]
            r = timed_stream(lambda: agent_rt.retrieve_and_generate_stream(
                input={"text": q}, retrieveAndGenerateConfiguration=config), "output")
            c = timed_stream(lambda: rt.converse_stream(
                modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": q}]}],
                inferenceConfig={"maxTokens": args.max_tokens, "temperature": 0}), "contentBlockDelta")
            started = time.monotonic()
            agent_rt.retrieve_and_generate(input={"text": q}, retrieveAndGenerateConfiguration=config)
            whole = time.monotonic() - started
            if i:
                rag.append(r)
                converse.append(c)
                rag_whole.append((whole, whole, 1))
        print(f"binary {args.bin}, maxTokens {args.max_tokens}, temperature 0")
        summary("RetrieveAndGenerateStream", rag)
        summary("ConverseStream (peer)", converse)
        summary("RetrieveAndGenerate", rag_whole)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
