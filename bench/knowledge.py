"""Knowledge-base ingestion throughput and Retrieve latency, end to end through boto3.

Peers, in the same run on the same server:
- ingestion: the loop a user would write without knowledge bases, one InvokeModel
  (Titan Text Embeddings V2) call per chunk;
- Retrieve: one InvokeModel embedding call, the floor under any retrieval, since
  Retrieve embeds the query and then searches.

Usage (from the repository root, after a release build and `basalt models fetch`):
    .venv/bin/python bench/knowledge.py [--docs 1000] [--queries 200]
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import start  # noqa: E402  (same server start-up as the batch benchmark)

ROLE = "arn:aws:iam::123456789012:role/Bench"
EMBED_ARN = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
WORDS = ("river volcano bread chess orbit glacier violin bridge harbor lantern meadow copper "
         "signal engine garden thunder canyon ledger pepper falcon").split()


def doc_text(i: int, words: int) -> str:
    # Deterministic, varied text: a topic line and a body of words drawn by index.
    body = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words))
    return f"Note {i} about {WORDS[i % len(WORDS)]}. {body}."


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--words", type=int, default=60, help="words per document (one chunk each)")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="basalt-kb-bench-"))
    proc, client = start(data)
    try:
        agent, agent_rt, rt = client("bedrock-agent"), client("bedrock-agent-runtime"), client("bedrock-runtime")
        bucket = data / "s3" / "bench-kb"
        bucket.mkdir(parents=True)
        texts = [doc_text(i, args.words) for i in range(args.docs)]
        for i, t in enumerate(texts):
            (bucket / f"doc-{i:05}.txt").write_text(t)
        kb = agent.create_knowledge_base(
            name="bench", roleArn=ROLE,
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": EMBED_ARN,
                "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"dimensions": 512}}}},
        )["knowledgeBase"]
        kb_id = kb["knowledgeBaseId"]
        while agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["status"] != "ACTIVE":
            time.sleep(0.1)
        ds_id = agent.create_data_source(
            knowledgeBaseId=kb_id, name="bench",
            dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::bench-kb"}},
            vectorIngestionConfiguration={"chunkingConfiguration": {"chunkingStrategy": "NONE"}},
        )["dataSource"]["dataSourceId"]
        started = time.monotonic()
        job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
        while True:
            job = agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                          ingestionJobId=job_id)["ingestionJob"]
            if job["status"] in ("COMPLETE", "FAILED", "STOPPED"):
                break
            time.sleep(0.05)
        ingest_s = time.monotonic() - started
        assert job["status"] == "COMPLETE", job
        chunks = job["statistics"]["numberOfNewDocumentsIndexed"]  # NONE chunking: one chunk each

        peer_n = min(args.docs, 300)
        started = time.monotonic()
        for t in texts[:peer_n]:
            rt.invoke_model(modelId="amazon.titan-embed-text-v2:0",
                            body=json.dumps({"inputText": t, "dimensions": 512}))
        peer_s = time.monotonic() - started

        queries = [f"notes about {WORDS[i % len(WORDS)]} and {WORDS[(i * 5) % len(WORDS)]}" for i in range(args.queries)]
        lat = {"SEMANTIC": [], "HYBRID": [], "embed": []}
        for q in queries:
            for mode in ("SEMANTIC", "HYBRID"):
                t0 = time.monotonic()
                agent_rt.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": q},
                                  retrievalConfiguration={"vectorSearchConfiguration": {
                                      "numberOfResults": 10, "overrideSearchType": mode}})
                lat[mode].append((time.monotonic() - t0) * 1000)
            t0 = time.monotonic()
            rt.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": q, "dimensions": 512}))
            lat["embed"].append((time.monotonic() - t0) * 1000)

        print(f"ingestion: {chunks} chunks in {ingest_s:.1f} s = {chunks / ingest_s:.1f} chunks/s "
              f"(peer, one InvokeModel per chunk: {peer_n / peer_s:.1f} chunks/s; {chunks / ingest_s / (peer_n / peer_s):.2f}x)")
        for name, values in lat.items():
            label = {"embed": "InvokeModel embedding (peer floor)"}.get(name, f"Retrieve {name} top-10")
            print(f"{label}: p50 {statistics.median(values):.1f} ms, p99 {pct(values, 99):.1f} ms over {len(values)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
