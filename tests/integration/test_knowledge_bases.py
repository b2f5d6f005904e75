"""Knowledge bases end to end: boto3's bedrock-agent and bedrock-agent-runtime clients
against Basalt, source documents in a real S3-compatible server (moto), the real
embedding model (all-MiniLM-L6-v2 behind amazon.titan-embed-text-v2:0) and the real
text model answering RetrieveAndGenerate.

Every test runs twice: on the embedded index (no storageConfiguration), and on
PostgreSQL with pgvector (storageConfiguration RDS, a table per knowledge base made as
Bedrock's Aurora guide makes it)."""

import io
import json
import time
import urllib.request
import zipfile

import pytest
from botocore.exceptions import ClientError

import harness

ROLE = "arn:aws:iam::123456789012:role/BedrockKbRole"
EMBED_ARN = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
MODEL_ARN = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-sonnet-20240229-v1:0"
BUCKET = "kb-docs"
TERMINAL = {"COMPLETE", "FAILED", "STOPPED"}

S3_POLICIES = (
    "# Configuring S3 bucket policies\n\n"
    "A bucket policy is a resource-based JSON policy attached to an Amazon S3 bucket. "
    "To configure S3 bucket policies, open the bucket's Permissions tab and edit the bucket policy. "
    "Each statement names an Effect, a Principal, the Actions such as s3:GetObject, and the Resource ARN."
)
LAMBDA = (
    "AWS Lambda functions run for at most 15 minutes. The default timeout is 3 seconds; "
    "raise it in the function configuration when handlers need longer."
)
LAMBDA_EDITED = (
    "AWS Lambda functions can be given up to 10,240 MB of memory, and CPU scales with memory. "
    "Memory is set in the function configuration."
)


def docx_bytes(paragraphs):
    """A minimal DOCX: the one part the parser reads."""
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    xml = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
           '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
           f"<w:body>{body}</w:body></w:document>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
        z.writestr("word/document.xml", xml)
    return buf.getvalue()


def pdf_bytes(text):
    """A one-page PDF with one line of text in Helvetica, offsets computed."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


CORPUS = {
    "guides/s3-policies.md": S3_POLICIES.encode(),
    "guides/s3-policies.md.metadata.json": json.dumps(
        {"metadataAttributes": {"topic": "s3", "year": 2024, "tags": ["storage", "security"]}}).encode(),
    "guides/lambda.txt": LAMBDA.encode(),
    "guides/lambda.txt.metadata.json": json.dumps({"metadataAttributes": {"topic": "lambda", "year": 2022}}).encode(),
    "data/pricing.csv": b"service,unit,price\nS3 Standard,GB-month,0.023\nGlacier Deep Archive,GB-month,0.00099\n",
    "web/faq.html": (b"<html><head><style>p{color:red}</style></head><body><h1>DynamoDB FAQ</h1>"
                     b"<p>DynamoDB is a serverless key-value and document database with single-digit millisecond latency.</p>"
                     b"<script>ignored()</script></body></html>"),
    "data/regions.json": json.dumps({"regions": [{"name": "us-east-1", "city": "Northern Virginia"},
                                                 {"name": "eu-west-1", "city": "Dublin"}]}).encode(),
    "docs/vpc.docx": docx_bytes(["Amazon VPC endpoints keep traffic to AWS services on the private network.",
                                  "Interface endpoints are powered by PrivateLink."]),
    "docs/cloudwatch.pdf": pdf_bytes("CloudWatch alarms watch a metric and notify an SNS topic when it crosses a threshold."),
}


TABLES = iter(range(1, 10_000))


@pytest.fixture(scope="module", params=["embedded", "rds"])
def storage(request):
    """Where knowledge bases keep their vectors: a function from a knowledge-base name
    to create_knowledge_base's extra arguments, and the server environment it needs."""
    if request.param == "embedded":
        return lambda name: {}, {}
    pg = request.getfixturevalue("pg_server")

    def rds(name):
        table = f"bedrock_integration.{name.replace('-', '_')}_{next(TABLES)}"
        pg.psql("CREATE EXTENSION IF NOT EXISTS vector; CREATE SCHEMA IF NOT EXISTS bedrock_integration; "
                f"CREATE TABLE {table} (id uuid PRIMARY KEY, embedding vector(512), chunks text, "
                "metadata json, custom_metadata jsonb); "
                f"CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops); "
                f"CREATE INDEX ON {table} USING gin (to_tsvector('simple', chunks)); "
                f"CREATE INDEX ON {table} USING gin (custom_metadata);")
        return {"storageConfiguration": {"type": "RDS", "rdsConfiguration": {
            "resourceArn": pg.RESOURCE_ARN, "credentialsSecretArn": pg.SECRET_ARN,
            "databaseName": "postgres", "tableName": table,
            "fieldMapping": {"primaryKeyField": "id", "vectorField": "embedding", "textField": "chunks",
                             "metadataField": "metadata", "customMetadataField": "custom_metadata"}}}}
    return rds, pg.server_env()


def server_env(s3_server, storage) -> dict:
    return dict(BASALT_S3_ENDPOINT=s3_server.endpoint, BASALT_S3_ACCESS_KEY_ID=s3_server.ACCESS_KEY_ID,
                BASALT_S3_SECRET_ACCESS_KEY=s3_server.SECRET_ACCESS_KEY, **storage[1])


@pytest.fixture(scope="module")
def kb_server(start_server, s3_server, storage):
    return start_server("knowledge", **server_env(s3_server, storage))


@pytest.fixture(scope="module")
def s3(s3_server):
    client = s3_server.client()
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
        for key, body in CORPUS.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return client


@pytest.fixture(scope="module")
def agent(kb_server):
    return kb_server.client("bedrock-agent")


@pytest.fixture(scope="module")
def agent_runtime(kb_server):
    return kb_server.client("bedrock-agent-runtime")


def wait_active(agent, kb_id, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        kb = agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]
        if kb["status"] != "CREATING":
            return kb
        assert time.monotonic() < deadline, kb
        time.sleep(0.2)


def wait_job(agent, kb_id, ds_id, job_id, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        job = agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                      ingestionJobId=job_id)["ingestionJob"]
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def create_kb(agent, name, storage):
    kb = agent.create_knowledge_base(
        name=name, roleArn=ROLE,
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": EMBED_ARN,
            "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"dimensions": 512}}}},
        **storage[0](name),
    )["knowledgeBase"]
    assert kb["status"] == "CREATING"
    assert kb["knowledgeBaseArn"].endswith(f":knowledge-base/{kb['knowledgeBaseId']}")
    return wait_active(agent, kb["knowledgeBaseId"])


def ingest(agent, kb_id, ds_id):
    job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] == "STARTING"
    return wait_job(agent, kb_id, ds_id, job["ingestionJobId"])


@pytest.fixture(scope="module")
def corpus_kb(agent, s3, storage):
    """A knowledge base over the mixed-format corpus, ingested once."""
    kb = create_kb(agent, "corpus-kb", storage)
    assert kb["status"] == "ACTIVE", kb
    ds = agent.create_data_source(
        knowledgeBaseId=kb["knowledgeBaseId"], name="corpus",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": f"arn:aws:s3:::{BUCKET}"}},
    )["dataSource"]
    assert ds["status"] == "AVAILABLE"
    job = ingest(agent, kb["knowledgeBaseId"], ds["dataSourceId"])
    return kb["knowledgeBaseId"], ds["dataSourceId"], job


def test_first_ingestion_indexes_every_format_with_exact_statistics(corpus_kb):
    _, _, job = corpus_kb
    assert job["status"] == "COMPLETE", job
    assert job["statistics"] == {
        "numberOfDocumentsScanned": 7,
        "numberOfMetadataDocumentsScanned": 2,
        "numberOfNewDocumentsIndexed": 7,
        "numberOfModifiedDocumentsIndexed": 0,
        "numberOfMetadataDocumentsModified": 0,
        "numberOfDocumentsDeleted": 0,
        "numberOfDocumentsFailed": 0,
        "numberOfDocumentsSkipped": 0,
    }


def test_retrieve_finds_the_right_document_with_bedrock_metadata(corpus_kb, agent_runtime):
    kb_id, ds_id, _ = corpus_kb
    out = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "How do I configure S3 bucket policies?"},
                                 retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 3}})
    results = out["retrievalResults"]
    assert 1 <= len(results) <= 3
    top = results[0]
    assert top["location"] == {"type": "S3", "s3Location": {"uri": f"s3://{BUCKET}/guides/s3-policies.md"}}
    assert "bucket policy" in top["content"]["text"]
    assert 0.0 <= top["score"] <= 1.0
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    meta = top["metadata"]
    assert meta["x-amz-bedrock-kb-source-uri"] == f"s3://{BUCKET}/guides/s3-policies.md"
    assert meta["x-amz-bedrock-kb-data-source-id"] == ds_id
    assert meta["x-amz-bedrock-kb-chunk-id"]
    assert meta["topic"] == "s3" and meta["year"] == 2024 and meta["tags"] == ["storage", "security"]
    # Each parsed format is retrievable by what it says.
    for query, key in [("DynamoDB latency database", "web/faq.html"),
                       ("PrivateLink interface endpoints", "docs/vpc.docx"),
                       ("CloudWatch alarm SNS threshold", "docs/cloudwatch.pdf"),
                       ("Glacier Deep Archive price per GB-month", "data/pricing.csv"),
                       ("Dublin region", "data/regions.json")]:
        got = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": query})["retrievalResults"]
        assert got[0]["location"]["s3Location"]["uri"] == f"s3://{BUCKET}/{key}", (query, got[0])
    html = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "DynamoDB"})["retrievalResults"][0]
    assert "ignored()" not in html["content"]["text"] and "color:red" not in html["content"]["text"]


def test_retrieve_filters_and_hybrid(corpus_kb, agent_runtime):
    kb_id, _, _ = corpus_kb

    def uris(config):
        out = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "AWS service configuration"},
                                     retrievalConfiguration={"vectorSearchConfiguration": config})
        return [r["location"]["s3Location"]["uri"].split("/", 3)[3] for r in out["retrievalResults"]]

    assert uris({"numberOfResults": 10, "filter": {"equals": {"key": "topic", "value": "lambda"}}}) == ["guides/lambda.txt"]
    assert uris({"numberOfResults": 10, "filter": {"greaterThan": {"key": "year", "value": 2023}}}) == ["guides/s3-policies.md"]
    assert uris({"numberOfResults": 10, "filter": {"listContains": {"key": "tags", "value": "security"}}}) == ["guides/s3-policies.md"]
    assert set(uris({"numberOfResults": 10, "filter": {"in": {"key": "topic", "value": ["s3", "lambda"]}}})) == {
        "guides/s3-policies.md", "guides/lambda.txt"}
    assert set(uris({"numberOfResults": 10, "filter": {"orAll": [
        {"equals": {"key": "topic", "value": "lambda"}},
        {"startsWith": {"key": "x-amz-bedrock-kb-source-uri", "value": f"s3://{BUCKET}/docs/"}}]}})) == {
        "guides/lambda.txt", "docs/vpc.docx", "docs/cloudwatch.pdf"}
    assert "guides/lambda.txt" not in uris({"numberOfResults": 10, "filter": {"notEquals": {"key": "topic", "value": "lambda"}}})
    hybrid = uris({"numberOfResults": 3, "overrideSearchType": "HYBRID"})
    assert 1 <= len(hybrid) <= 3
    with pytest.raises(ClientError) as e:
        uris({"filter": {"andAll": [{"equals": {"key": "topic", "value": "s3"}},
                                    {"greaterThan": {"key": "year", "value": "recent"}}]}})
    assert harness.error_code(e.value) == "ValidationException"
    assert "filter.andAll[1].greaterThan.value" in harness.error_message(e.value), harness.error_message(e.value)


def test_retrieve_pages_with_next_token(corpus_kb, agent_runtime):
    kb_id, _, _ = corpus_kb
    first = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "AWS"},
                                   retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 3}})
    assert len(first["retrievalResults"]) == 3 and first.get("nextToken")
    second = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "AWS"}, nextToken=first["nextToken"],
                                    retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 3}})
    ids = [r["metadata"]["x-amz-bedrock-kb-chunk-id"] for r in first["retrievalResults"] + second["retrievalResults"]]
    assert len(ids) == len(set(ids)) == 6


def test_seed_rag_query_and_retrieve_context_run_unmodified(corpus_kb, kb_server, tmp_path_factory):
    kb_id, _, _ = corpus_kb
    with harness.seed_pointed_at(kb_server, tmp_path_factory.mktemp("aws-env")) as seed:
        context = seed.retrieve_context("How do I configure S3 bucket policies?", kb_id)
        assert context[0]["source"]["s3Location"]["uri"] == f"s3://{BUCKET}/guides/s3-policies.md"
        assert all(0.0 <= c["score"] <= 1.0 for c in context)
        result = seed.rag_query(query="How do I configure S3 bucket policies?", knowledge_base_id=kb_id,
                                model_arn=MODEL_ARN)
    answer = result["answer"]
    assert answer.strip()
    citations = result["citations"]
    assert citations, "the answer is cited span by span"
    covered = ""
    for c in citations:
        part = c["generatedResponsePart"]["textResponsePart"]
        span = part["span"]
        assert answer[span["start"]:span["end"] + 1] == part["text"]
        covered += part["text"]
        for ref in c["retrievedReferences"]:
            assert ref["location"]["type"] == "S3"
            assert ref["content"]["text"]
    assert "".join(covered.split()) == "".join(answer.split()), "the spans cover the whole answer"


def stream_rag(agent_runtime, **kwargs):
    """Calls RetrieveAndGenerateStream and reads the whole stream: the session ID, the
    (member, payload, arrival time) of each event, and when the stream ended, times
    from the call."""
    started = time.monotonic()
    out = agent_runtime.retrieve_and_generate_stream(**kwargs)
    events = []
    for event in out["stream"]:
        assert len(event) == 1, event
        (name, payload), = event.items()
        events.append((name, payload, time.monotonic() - started))
    return out["sessionId"], events, time.monotonic() - started


def check_stream(events, guarded=False):
    """Outputs first, then citations, then the guardrail event when one is attached;
    the citations' spans index into the concatenated output. Returns that text and
    the citations."""
    names = [n for n, _, _ in events]
    outputs = [p["text"] for n, p, _ in events if n == "output"]
    citations = [p for n, p, _ in events if n == "citation"]
    assert names == ["output"] * len(outputs) + ["citation"] * len(citations) + (["guardrail"] if guarded else []), names
    text = "".join(outputs)
    for c in citations:
        part = c["generatedResponsePart"]["textResponsePart"]
        assert text[part["span"]["start"]:part["span"]["end"] + 1] == part["text"], (text, part)
        assert c["citation"]["generatedResponsePart"] == c["generatedResponsePart"]
        assert c["retrievedReferences"] == c["citation"]["retrievedReferences"]
    return text, citations


def test_sessions_and_the_stream(corpus_kb, agent_runtime):
    kb_id, _, _ = corpus_kb
    config = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": kb_id, "modelArn": MODEL_ARN,
        "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"maxTokens": 40, "temperature": 0}}}}}
    first = agent_runtime.retrieve_and_generate(input={"text": "What is the Lambda default timeout?"},
                                                retrieveAndGenerateConfiguration=config)
    session = first["sessionId"]
    second = agent_runtime.retrieve_and_generate(input={"text": "And the maximum?"}, sessionId=session,
                                                 retrieveAndGenerateConfiguration=config)
    assert second["sessionId"] == session
    with pytest.raises(ClientError) as e:
        agent_runtime.retrieve_and_generate(input={"text": "x"}, sessionId="no-such-session",
                                            retrieveAndGenerateConfiguration=config)
    assert harness.error_code(e.value) == "ValidationException"
    # The stream's session carries on in either operation.
    streamed_session, events, _ = stream_rag(agent_runtime, input={"text": "What is the Lambda default timeout?"},
                                             retrieveAndGenerateConfiguration=config)
    assert streamed_session and streamed_session != session
    text, _ = check_stream(events)
    assert text.strip()
    again, events, _ = stream_rag(agent_runtime, input={"text": "And the maximum?"}, sessionId=streamed_session,
                                  retrieveAndGenerateConfiguration=config)
    assert again == streamed_session
    text, _ = check_stream(events)
    assert text.strip()
    third = agent_runtime.retrieve_and_generate(input={"text": "Thanks."}, sessionId=streamed_session,
                                                retrieveAndGenerateConfiguration=config)
    assert third["sessionId"] == streamed_session
    with pytest.raises(ClientError) as e:
        agent_runtime.retrieve_and_generate_stream(input={"text": "x"}, sessionId="no-such-session",
                                                   retrieveAndGenerateConfiguration=config)
    assert harness.error_code(e.value) == "ValidationException"


def test_the_stream_sends_text_as_it_is_generated(corpus_kb, agent_runtime):
    """A longer answer arrives in many output events, the first long before the last;
    the citations follow, and their spans index into the streamed text."""
    kb_id, _, _ = corpus_kb
    config = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": kb_id, "modelArn": MODEL_ARN,
        "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"maxTokens": 160, "temperature": 0}}}}}
    _, events, total = stream_rag(
        agent_runtime, input={"text": "Explain in detail how to configure S3 bucket policies and what a statement holds."},
        retrieveAndGenerateConfiguration=config)
    text, citations = check_stream(events)
    outputs = [t for n, _, t in events if n == "output"]
    assert len(outputs) >= 20, f"{len(outputs)} output events for {len(text)} characters"
    assert citations, text
    refs = {r["location"]["s3Location"]["uri"] for c in citations for r in c["retrievedReferences"]}
    assert f"s3://{BUCKET}/guides/s3-policies.md" in refs
    # Sent as generated: the first text arrives well before the last (an answer
    # generated whole and then sent would put them together at the end).
    assert outputs[0] < 0.5 * outputs[-1], (outputs[0], outputs[-1], total)


def metric_sum(srv, name, model=None):
    """The sum of a /metrics family's values (one model's, when given)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(srv.url + "/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    prefix = f'{name}{{model="{model}"}} ' if model else f"{name}{{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def test_closing_the_stream_stops_the_generation(corpus_kb, kb_server, agent_runtime):
    kb_id, _, _ = corpus_kb
    config = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": kb_id, "modelArn": MODEL_ARN,
        "generationConfiguration": {
            "promptTemplate": {"textPromptTemplate": "Sources:\n$search_results$\n\nWrite a very long, detailed, "
                               "multi-paragraph essay on the question, then repeat it."},
            "inferenceConfig": {"textInferenceConfig": {"maxTokens": 1000, "temperature": 0}}}}}
    model_id = MODEL_ARN.rsplit("/", 1)[1]
    tokens_before = metric_sum(kb_server, "basalt_output_tokens_total", model_id)
    out = agent_runtime.retrieve_and_generate_stream(input={"text": "How do S3 bucket policies work?"},
                                                     retrieveAndGenerateConfiguration=config)
    stream = out["stream"]
    assert "output" in next(iter(stream))
    def running():
        return metric_sum(kb_server, "basalt_batch_running")
    assert running() >= 1, "the generation runs while the stream is open"
    stream.close()
    deadline = time.monotonic() + 20
    while running() > 0:
        assert time.monotonic() < deadline, "the generation kept running after the client left"
        time.sleep(0.1)
    # An abandoned generation is not counted as a finished one.
    assert metric_sum(kb_server, "basalt_output_tokens_total", model_id) == tokens_before
    assert kb_server.alive()


def test_external_sources(agent_runtime):
    doc = b"The Basalt project mascot is a purple lobster named Igneous."
    out = agent_runtime.retrieve_and_generate(
        input={"text": "What is the mascot's name?"},
        retrieveAndGenerateConfiguration={"type": "EXTERNAL_SOURCES", "externalSourcesConfiguration": {
            "modelArn": MODEL_ARN,
            "sources": [{"sourceType": "BYTE_CONTENT", "byteContent": {
                "identifier": "mascot.txt", "contentType": "text/plain", "data": doc}}]}})
    assert out["output"]["text"].strip()
    refs = [r for c in out["citations"] for r in c["retrievedReferences"]]
    assert all("Igneous" in r["content"]["text"] for r in refs)


def test_reingestion_is_incremental(agent, s3, storage):
    """Its own bucket, so the corpus the other tests read stays as it is."""
    bucket = f"kb-edits-{next(TABLES)}"
    s3.create_bucket(Bucket=bucket)
    for key, body in CORPUS.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    kb = create_kb(agent, "edits-kb", storage)
    kb_id = kb["knowledgeBaseId"]
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id, name="edits", dataDeletionPolicy="DELETE",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": f"arn:aws:s3:::{bucket}"}},
    )["dataSource"]["dataSourceId"]
    assert ingest(agent, kb_id, ds_id)["statistics"]["numberOfNewDocumentsIndexed"] == 7
    again = ingest(agent, kb_id, ds_id)["statistics"]
    assert again["numberOfDocumentsScanned"] == 7
    assert again["numberOfNewDocumentsIndexed"] == again["numberOfModifiedDocumentsIndexed"] == 0
    s3.put_object(Bucket=bucket, Key="guides/lambda.txt", Body=LAMBDA_EDITED.encode())
    s3.put_object(Bucket=bucket, Key="guides/s3-policies.md.metadata.json",
                  Body=json.dumps({"metadataAttributes": {"topic": "s3", "year": 2025}}).encode())
    s3.delete_object(Bucket=bucket, Key="data/pricing.csv")
    s3.put_object(Bucket=bucket, Key="guides/new.txt", Body=b"Amazon SQS queues decouple producers from consumers.")
    s3.put_object(Bucket=bucket, Key="guides/broken.pdf", Body=b"%PDF-1.4 this is not a PDF")
    job = ingest(agent, kb_id, ds_id)
    assert job["statistics"] == {
        "numberOfDocumentsScanned": 8,
        "numberOfMetadataDocumentsScanned": 2,
        "numberOfNewDocumentsIndexed": 1,
        "numberOfModifiedDocumentsIndexed": 1,
        "numberOfMetadataDocumentsModified": 1,
        "numberOfDocumentsDeleted": 1,
        "numberOfDocumentsFailed": 1,
        "numberOfDocumentsSkipped": 0,
    }, job
    assert job["status"] == "COMPLETE"
    assert any("broken.pdf" in r for r in job["failureReasons"]), job
    jobs = agent.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                     sortBy={"attribute": "STARTED_AT", "order": "DESCENDING"})["ingestionJobSummaries"]
    assert [j["ingestionJobId"] for j in jobs][0] == job["ingestionJobId"] and len(jobs) == 3
    assert "failureReasons" not in jobs[0]
    complete = agent.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                         filters=[{"attribute": "STATUS", "operator": "EQ", "values": ["FAILED"]}])
    assert complete["ingestionJobSummaries"] == []


def test_control_plane_lists_updates_and_errors(agent, corpus_kb):
    kb_id, ds_id, _ = corpus_kb
    kbs = agent.list_knowledge_bases()["knowledgeBaseSummaries"]
    assert kb_id in [k["knowledgeBaseId"] for k in kbs]
    paged = agent.get_paginator("list_knowledge_bases").paginate(PaginationConfig={"PageSize": 1})
    assert sum(len(p["knowledgeBaseSummaries"]) for p in paged) == len(kbs)
    sources = agent.list_data_sources(knowledgeBaseId=kb_id)["dataSourceSummaries"]
    assert [s["dataSourceId"] for s in sources] == [ds_id]
    for call, code in [
        (lambda: agent.get_knowledge_base(knowledgeBaseId="NOSUCHKB00"), "ResourceNotFoundException"),
        (lambda: agent.get_data_source(knowledgeBaseId=kb_id, dataSourceId="NOSUCHDS00"), "ResourceNotFoundException"),
        (lambda: agent.create_knowledge_base(
            name="pinecone", roleArn=ROLE,
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": EMBED_ARN}},
            storageConfiguration={"type": "PINECONE", "pineconeConfiguration": {
                "connectionString": "x", "credentialsSecretArn": "y", "fieldMapping": {"textField": "t", "metadataField": "m"}}}),
         "ValidationException"),
        (lambda: agent.create_knowledge_base(
            name="textmodel", roleArn=ROLE,
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": MODEL_ARN}}),
         "ValidationException"),
        (lambda: agent.create_data_source(knowledgeBaseId=kb_id, name="web",
                                          dataSourceConfiguration={"type": "WEB", "webConfiguration": {
                                              "sourceConfiguration": {"urlConfiguration": {"seedUrls": [{"url": "https://example.com"}]}}}}),
         "ValidationException"),
    ]:
        with pytest.raises(ClientError) as e:
            call()
        assert harness.error_code(e.value) == code, harness.error_message(e.value)
    updated = agent.update_knowledge_base(
        knowledgeBaseId=kb_id, name="corpus-kb-renamed", roleArn=ROLE,
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": EMBED_ARN,
            "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"dimensions": 512}}}})
    assert updated["knowledgeBase"]["name"] == "corpus-kb-renamed"


def test_delete_knowledge_base(agent, agent_runtime, storage):
    kb_id = create_kb(agent, "short-lived", storage)["knowledgeBaseId"]
    assert agent.delete_knowledge_base(knowledgeBaseId=kb_id)["status"] == "DELETING"
    with pytest.raises(ClientError) as e:
        agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "x"})
    assert harness.error_code(e.value) == "ResourceNotFoundException"


def test_idempotent_create(agent):
    args = dict(name="idem-kb", roleArn=ROLE, clientToken="token-for-idem-kb-0000000000000000000001",
                knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": EMBED_ARN}})
    first = agent.create_knowledge_base(**args)["knowledgeBase"]
    second = agent.create_knowledge_base(**args)["knowledgeBase"]
    assert first["knowledgeBaseId"] == second["knowledgeBaseId"]
    with pytest.raises(ClientError) as e:
        agent.create_knowledge_base(**{**args, "name": "other-name"})
    assert harness.error_code(e.value) == "ConflictException"


def test_restart_mid_ingestion_loses_and_duplicates_nothing(start_server, s3_server, s3, storage):
    bucket = f"kb-restart-{next(TABLES)}"
    s3.create_bucket(Bucket=bucket)
    n = 200
    for i in range(n):
        s3.put_object(Bucket=bucket, Key=f"notes/note-{i:03}.txt",
                      Body=f"Note number {i} records that item {i} weighs {i * 7} grams.".encode())
    srv = start_server("knowledge-crash", **server_env(s3_server, storage))
    agent = srv.client("bedrock-agent")
    kb_id = create_kb(agent, "crash-kb", storage)["knowledgeBaseId"]
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id, name="notes",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": f"arn:aws:s3:::{bucket}"}},
    )["dataSource"]["dataSourceId"]
    job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
    deadline = time.monotonic() + 120
    while True:
        job = agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)["ingestionJob"]
        if job["statistics"]["numberOfNewDocumentsIndexed"] >= 16:
            break
        assert job["status"] not in TERMINAL and time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["statistics"]["numberOfNewDocumentsIndexed"] < n, "the crash must land mid-job"
    srv.proc.kill()  # SIGKILL: no chance to tidy up
    srv.proc.wait(timeout=15)
    srv.stop()
    srv.start()
    agent = srv.client("bedrock-agent")
    job = wait_job(agent, kb_id, ds_id, job_id)
    assert job["status"] == "COMPLETE", job
    assert job["statistics"]["numberOfNewDocumentsIndexed"] == n
    assert job["statistics"]["numberOfDocumentsScanned"] == n
    runtime = srv.client("bedrock-agent-runtime")
    for hundreds in ("0", "1"):
        prefix = f"s3://{bucket}/notes/note-{hundreds}"
        results = runtime.retrieve(
            knowledgeBaseId=kb_id, retrievalQuery={"text": "how many grams does the item weigh"},
            retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 100, "filter": {
                "startsWith": {"key": "x-amz-bedrock-kb-source-uri", "value": prefix}}}})
        found = [r["location"]["s3Location"]["uri"] for r in results["retrievalResults"]]
        assert len(found) == len(set(found)) == 100, "every note once, none twice"


def test_custom_documents_api(agent, agent_runtime, storage):
    kb_id = create_kb(agent, "custom-kb", storage)["knowledgeBaseId"]
    ds_id = agent.create_data_source(knowledgeBaseId=kb_id, name="custom",
                                     dataSourceConfiguration={"type": "CUSTOM"})["dataSource"]["dataSourceId"]
    with pytest.raises(ClientError) as e:
        agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    assert harness.error_code(e.value) == "ValidationException"

    def text_doc(doc_id, text, team):
        return {"content": {"dataSourceType": "CUSTOM", "custom": {
                    "customDocumentIdentifier": {"id": doc_id}, "sourceType": "IN_LINE",
                    "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}},
                "metadata": {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": [
                    {"key": "team", "value": {"type": "STRING", "stringValue": team}}]}}

    out = agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documents=[
        text_doc("runbook-1", "To restart the billing service, drain the queue and then redeploy.", "billing"),
        text_doc("runbook-2", "Search indexing runs nightly at two in the morning.", "search"),
        {"content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": "page.html"}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "BYTE", "byteContent": {
                "mimeType": "text/html", "data": b"<p>The on-call rotation changes every Monday.</p>"}}}}},
    ])
    assert [d["status"] for d in out["documentDetails"]] == ["STARTING"] * 3
    ident = [{"dataSourceType": "CUSTOM", "custom": {"id": i}} for i in ("runbook-1", "runbook-2", "page.html", "nope")]
    deadline = time.monotonic() + 120
    while True:
        got = agent.get_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                                 documentIdentifiers=ident)["documentDetails"]
        statuses = [d["status"] for d in got]
        if all(s in ("INDEXED", "FAILED", "NOT_FOUND") for s in statuses):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    assert statuses == ["INDEXED", "INDEXED", "INDEXED", "NOT_FOUND"], got
    listed = agent.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id)["documentDetails"]
    assert sorted(d["identifier"]["custom"]["id"] for d in listed) == ["page.html", "runbook-1", "runbook-2"]
    hits = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "how to restart billing"},
                                  retrievalConfiguration={"vectorSearchConfiguration": {
                                      "filter": {"equals": {"key": "team", "value": "billing"}}}})["retrievalResults"]
    assert [h["location"] for h in hits] == [{"type": "CUSTOM", "customDocumentLocation": {"id": "runbook-1"}}]
    deleted = agent.delete_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                                    documentIdentifiers=ident[:1])["documentDetails"]
    assert deleted[0]["status"] == "DELETE_IN_PROGRESS"
    hits = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "how to restart billing"})["retrievalResults"]
    assert all(h["location"]["customDocumentLocation"]["id"] != "runbook-1" for h in hits)
    with pytest.raises(ClientError) as e:
        agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documents=[
            {"content": {"dataSourceType": "S3", "s3": {"s3Location": {"uri": "s3://b/k.txt"}}}}])
    assert harness.error_code(e.value) == "ValidationException"
    assert "documents[0]" in harness.error_message(e.value)


def test_hierarchical_and_semantic_chunking(agent, agent_runtime, storage):
    """Children are searched and their parents returned, once each; semantic chunking
    splits where the topic changes."""
    kb_id = create_kb(agent, "chunking-kb", storage)["knowledgeBaseId"]
    parts = ["Volcanoes form where magma reaches the surface. Lava flows cool into basalt. "
             "Eruptions can be explosive or effusive. Ash clouds disrupt air travel. " * 3,
             "Sourdough bread rises with wild yeast. Bakers feed the starter with flour and water. "
             "A long proof gives a sour taste. Steam in the oven makes a crisp crust. " * 3]
    text = " ".join(parts)

    def add(ds_id, doc_id):
        agent.ingest_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documents=[
            {"content": {"dataSourceType": "CUSTOM", "custom": {
                "customDocumentIdentifier": {"id": doc_id}, "sourceType": "IN_LINE",
                "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}}}])
        deadline = time.monotonic() + 120
        while True:
            d = agent.get_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=[
                {"dataSourceType": "CUSTOM", "custom": {"id": doc_id}}])["documentDetails"][0]
            if d["status"] in ("INDEXED", "FAILED"):
                assert d["status"] == "INDEXED", d
                return
            assert time.monotonic() < deadline, d
            time.sleep(0.2)

    hier = agent.create_data_source(
        knowledgeBaseId=kb_id, name="hier", dataSourceConfiguration={"type": "CUSTOM"},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
                "levelConfigurations": [{"maxTokens": 120}, {"maxTokens": 30}], "overlapTokens": 5}}},
    )["dataSource"]["dataSourceId"]
    add(hier, "hier-doc")
    hits = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "how does sourdough rise"},
                                  retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 10, "filter": {
                                      "equals": {"key": "x-amz-bedrock-kb-data-source-id", "value": hier}}}})["retrievalResults"]
    texts = [h["content"]["text"] for h in hits]
    assert texts and len(texts) == len(set(texts)), "each parent once"
    assert "yeast" in texts[0]
    assert len(texts[0].split()) > 30, "a parent, longer than any 30-token child"

    semantic = agent.create_data_source(
        knowledgeBaseId=kb_id, name="semantic", dataSourceConfiguration={"type": "CUSTOM"},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "SEMANTIC", "semanticChunkingConfiguration": {
                "maxTokens": 300, "bufferSize": 0, "breakpointPercentileThreshold": 90}}},
    )["dataSource"]["dataSourceId"]
    add(semantic, "semantic-doc")
    hits = agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "volcano eruptions and lava"},
                                  retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 10, "filter": {
                                      "equals": {"key": "x-amz-bedrock-kb-data-source-id", "value": semantic}}}})["retrievalResults"]
    assert len(hits) >= 2, "the document splits where bread follows volcanoes"
    assert "Volcanoes" in hits[0]["content"]["text"] and "Sourdough" not in hits[0]["content"]["text"]


def test_stop_and_the_cli(agent, kb_server, s3, storage):
    """StopIngestionJob ends a job STOPPED part way; `basalt kb ingest` then starts the
    next one through the data directory and follows it to the end."""
    bucket = f"kb-stop-{next(TABLES)}"
    s3.create_bucket(Bucket=bucket)
    n = 300
    for i in range(n):
        s3.put_object(Bucket=bucket, Key=f"n/{i:03}.txt", Body=f"Stop test note {i}.".encode())
    kb_id = create_kb(agent, "stop-kb", storage)["knowledgeBaseId"]
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id, name="stop",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": f"arn:aws:s3:::{bucket}"}},
    )["dataSource"]["dataSourceId"]
    job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
    stopping = agent.stop_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)
    assert stopping["ingestionJob"]["status"] == "STOPPING"
    job = wait_job(agent, kb_id, ds_id, job_id)
    assert job["status"] == "STOPPED", job
    assert job["statistics"]["numberOfNewDocumentsIndexed"] < n
    with pytest.raises(ClientError) as e:
        agent.stop_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job_id)
    assert harness.error_code(e.value) == "ConflictException"

    out = kb_server.cli("kb", "ingest", "--data-dir", str(kb_server.data_dir),
                        "--knowledge-base-id", kb_id, "--data-source-id", ds_id).stdout
    assert ": COMPLETE (scanned 300, new " in out, out
    jobs = agent.list_ingestion_jobs(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                     sortBy={"attribute": "STARTED_AT", "order": "ASCENDING"})["ingestionJobSummaries"]
    assert [j["status"] for j in jobs] == ["STOPPED", "COMPLETE"]
    done = jobs[1]["statistics"]
    assert done["numberOfNewDocumentsIndexed"] + job["statistics"]["numberOfNewDocumentsIndexed"] == n


def test_guardrails_on_the_generation_step(corpus_kb, kb_server, agent_runtime):
    """A guardrail on RetrieveAndGenerate checks the query, and scores the answer's
    grounding against the retrieved results (the automatic grounding source)."""
    kb_id, _, _ = corpus_kb
    control = kb_server.client("bedrock")
    words = control.create_guardrail(
        name=f"kb-words-{next(TABLES)}", blockedInputMessaging="Blocked question.",
        blockedOutputsMessaging="Blocked answer.",
        # The question is what this guardrail checks: the answer is written from
        # retrieved chunks, and the S3 guide among them says "bucket policies".
        wordPolicyConfig={"wordsConfig": [{"text": "bucket policies", "outputEnabled": False}]})["guardrailId"]
    grounding = control.create_guardrail(
        name=f"kb-grounding-{next(TABLES)}", blockedInputMessaging="Blocked question.",
        blockedOutputsMessaging="Ungrounded answer.",
        contextualGroundingPolicyConfig={"filtersConfig": [{"type": "GROUNDING", "threshold": 0.99}]})["guardrailId"]

    def ask(guardrail_id, text):
        return agent_runtime.retrieve_and_generate(
            input={"text": text},
            retrieveAndGenerateConfiguration={"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
                "knowledgeBaseId": kb_id, "modelArn": MODEL_ARN,
                "generationConfiguration": {
                    "guardrailConfiguration": {"guardrailId": guardrail_id, "guardrailVersion": "DRAFT"},
                    "inferenceConfig": {"textInferenceConfig": {"maxTokens": 40, "temperature": 0}}}}})

    blocked = ask(words, "How do I configure S3 bucket policies?")
    assert blocked["guardrailAction"] == "INTERVENED"
    assert blocked["output"]["text"] == "Blocked question."
    assert blocked["citations"] == []
    allowed = ask(words, "What is the Lambda default timeout?")
    assert allowed["guardrailAction"] == "NONE"
    ungrounded = ask(grounding, "What is the Lambda default timeout?")
    assert ungrounded["guardrailAction"] == "INTERVENED"
    assert ungrounded["output"]["text"] == "Ungrounded answer."

    # The stream: the answer is checked in chunks before it is sent, and the verdict
    # ends the stream.
    def ask_stream(guardrail_id, text):
        _, events, _ = stream_rag(
            agent_runtime, input={"text": text},
            retrieveAndGenerateConfiguration={"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
                "knowledgeBaseId": kb_id, "modelArn": MODEL_ARN,
                "generationConfiguration": {
                    "guardrailConfiguration": {"guardrailId": guardrail_id, "guardrailVersion": "DRAFT"},
                    "inferenceConfig": {"textInferenceConfig": {"maxTokens": 40, "temperature": 0}}}}})
        text, citations = check_stream(events, guarded=True)
        return text, citations, events[-1][1]["action"]

    assert ask_stream(words, "How do I configure S3 bucket policies?") == ("Blocked question.", [], "INTERVENED")
    text, _, action = ask_stream(words, "What is the Lambda default timeout?")
    assert action == "NONE"
    assert text.strip()
    text, citations, action = ask_stream(grounding, "What is the Lambda default timeout?")
    assert action == "INTERVENED"
    assert text == "Ungrounded answer.", "no ungrounded text is sent once the guardrail has judged it"
    assert citations == []
