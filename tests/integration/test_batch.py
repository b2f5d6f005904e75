"""Batch inference (model invocation jobs) end to end: boto3's bedrock client against
Basalt, records in a real S3-compatible server (moto) or in the local bucket
directory, the real models running every record."""

import json
import time

import pytest
from botocore.exceptions import ClientError

import harness

ROLE = "arn:aws:iam::123456789012:role/BedrockBatchRole"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}


@pytest.fixture(scope="module")
def batch_server(start_server, s3_server):
    """A server whose s3:// URIs go to the moto server."""
    return start_server(
        "batch",
        BASALT_S3_ENDPOINT=s3_server.endpoint,
        BASALT_S3_ACCESS_KEY_ID=s3_server.ACCESS_KEY_ID,
        BASALT_S3_SECRET_ACCESS_KEY=s3_server.SECRET_ACCESS_KEY,
    )


@pytest.fixture(scope="module")
def bedrock(batch_server):
    return batch_server.client("bedrock")


@pytest.fixture(scope="module")
def s3(s3_server):
    client = s3_server.client()
    for bucket in ("batch-input", "batch-output"):
        client.create_bucket(Bucket=bucket)
    return client


@pytest.fixture
def batch_seed(batch_server, tmp_path_factory):
    """The reference client code with the environment pointing at ``batch_server``."""
    with harness.seed_pointed_at(batch_server, tmp_path_factory.mktemp("aws-env")) as seed:
        yield seed


def claude_input(text: str, max_tokens: int = 12) -> dict:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": text}],
    }


def put_jsonl(s3, bucket: str, key: str, lines: list) -> None:
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())


def read_jsonl(s3, bucket: str, key: str) -> list[dict]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def wait_for(bedrock, arn: str, timeout: float = 300, until=TERMINAL) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in until:
            job["_seen"] = seen
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {arn} still {seen[-1]} after {timeout} s (statuses {seen})")


def job_id(arn: str) -> str:
    return arn.rsplit("/", 1)[1]


# ---------------------------------------------------------------------- the seed
def test_seed_create_batch_job_runs_as_written(batch_seed, bedrock, s3):
    """The reference's create_batch_job, unmodified, over Claude records with some bad
    ones; the output and manifest land where Bedrock puts them, field by field."""
    create_batch_job = batch_seed.batch_pattern()
    records = [
        {"recordId": "CALL0000001", "modelInput": claude_input("Name a colour.")},
        # A record that carries its own modelId is accepted, as Bedrock accepts it.
        {"recordId": "CALL0000002", "modelId": CLAUDE, "modelInput": claude_input("Say hi.")},
        {"modelInput": claude_input("Count to three.")},  # no recordId: one is generated
        {"recordId": "CALL0000004", "modelInput": {"anthropic_version": "bedrock-2023-05-31"}},
        "this line is not JSON",
    ]
    put_jsonl(s3, "batch-input", "seed/records.jsonl", records)
    arn = create_batch_job("s3://batch-input/seed/records.jsonl",
                           "s3://batch-output/seed/", CLAUDE, ROLE)
    assert arn.startswith("arn:aws:bedrock:us-east-1:")
    assert ":model-invocation-job/" in arn and len(job_id(arn)) == 12
    job = wait_for(bedrock, arn)
    assert job["status"] == "PartiallyCompleted", job
    assert job["_seen"][-1] == "PartiallyCompleted"
    assert (job["totalRecordCount"], job["processedRecordCount"], job["successRecordCount"],
            job["errorRecordCount"]) == (5, 5, 3, 2)
    assert job["message"] == "2 of 5 records failed. Each record's error is in the output file."
    assert job["submitTime"] <= job["lastModifiedTime"] <= job["endTime"]
    assert job["jobExpirationTime"] > job["submitTime"]
    assert job["timeoutDurationInHours"] == 24
    assert job["roleArn"] == ROLE and job["modelId"] == CLAUDE
    assert job["inputDataConfig"] == {"s3InputDataConfig": {"s3Uri": "s3://batch-input/seed/records.jsonl"}}

    prefix = f"seed/{job_id(arn)}/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="batch-output", Prefix=prefix)["Contents"])
    assert keys == [prefix + "manifest.json.out", prefix + "records.jsonl.out"]
    out = read_jsonl(s3, "batch-output", prefix + "records.jsonl.out")
    assert len(out) == 5
    assert [o["recordId"] for o in out[:2]] == ["CALL0000001", "CALL0000002"]
    assert len(out[2]["recordId"]) == 11 and out[2]["recordId"].isalnum()
    for line, record in zip(out[:3], records[:3]):
        assert line["modelInput"] == record["modelInput"]
        reply = line["modelOutput"]
        assert reply["type"] == "message" and reply["role"] == "assistant"
        assert reply["content"][0]["text"].strip()
        assert reply["usage"]["output_tokens"] > 0
        assert "error" not in line
    assert out[3]["error"]["errorCode"] == 400 and "max_tokens" in out[3]["error"]["errorMessage"]
    assert out[4]["error"]["errorCode"] == 400 and "not valid JSON" in out[4]["error"]["errorMessage"]
    assert all("modelOutput" not in o for o in out[3:])
    manifest = json.loads(s3.get_object(Bucket="batch-output", Key=prefix + "manifest.json.out")["Body"].read())
    usage_in = sum(o["modelOutput"]["usage"]["input_tokens"] for o in out[:3])
    usage_out = sum(o["modelOutput"]["usage"]["output_tokens"] for o in out[:3])
    assert manifest == {
        "totalRecordCount": 5, "processedRecordCount": 5, "successRecordCount": 3,
        "errorRecordCount": 2, "inputTokenCount": usage_in, "outputTokenCount": usage_out,
    }


def test_embedding_records_match_online_embeddings(bedrock, s3, batch_server):
    """Titan embedding records run in shared forward passes and give the vectors that
    InvokeModel gives for the same bodies."""
    texts = [f"Document number {i} is about {topic}." for i, topic in
             enumerate(["rivers", "volcanoes", "bread", "chess", "orbits"] * 4)]
    records = [{"recordId": f"E{i}", "modelInput": {"inputText": t, "dimensions": 256}}
               for i, t in enumerate(texts)]
    put_jsonl(s3, "batch-input", "embed/in.jsonl", records)
    arn = bedrock.create_model_invocation_job(
        jobName="embed-job", modelId=TITAN_EMBED, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-input/embed/in.jsonl",
                                               "s3InputFormat": "JSONL"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/embed"}},
    )["jobArn"]
    job = wait_for(bedrock, arn)
    assert job["status"] == "Completed" and "message" not in job, job
    out = read_jsonl(s3, "batch-output", f"embed/{job_id(arn)}/in.jsonl.out")
    assert [o["recordId"] for o in out] == [r["recordId"] for r in records]
    runtime = batch_server.client("bedrock-runtime")
    for i in (0, 7, 19):
        online = json.loads(runtime.invoke_model(
            modelId=TITAN_EMBED, body=json.dumps(records[i]["modelInput"]))["body"].read())
        batch = out[i]["modelOutput"]
        assert len(batch["embedding"]) == 256
        assert batch["inputTextTokenCount"] == online["inputTextTokenCount"]
        assert harness.cosine(batch["embedding"], online["embedding"]) > 0.9999


def test_prefix_input_all_failed_and_stop(bedrock, s3):
    """A prefix reads every .jsonl under it; a job whose records all fail is Failed, not
    Completed; a finished job can't be stopped."""
    put_jsonl(s3, "batch-input", "bad/a.jsonl", [{"recordId": "1", "modelInput": {"nope": 1}}])
    put_jsonl(s3, "batch-input", "bad/b.jsonl", ["{", {"recordId": "3"}])
    s3.put_object(Bucket="batch-input", Key="bad/readme.txt", Body=b"not a record file")
    arn = bedrock.create_model_invocation_job(
        jobName="all-bad", modelId=CLAUDE, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-input/bad/"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/bad/"}},
    )["jobArn"]
    job = wait_for(bedrock, arn)
    assert job["status"] == "Failed"
    assert job["message"] == "All 3 records failed. Each record's error is in the output file."
    assert len(read_jsonl(s3, "batch-output", f"bad/{job_id(arn)}/a.jsonl.out")) == 1
    assert len(read_jsonl(s3, "batch-output", f"bad/{job_id(arn)}/b.jsonl.out")) == 2
    with pytest.raises(ClientError) as e:
        bedrock.stop_model_invocation_job(jobIdentifier=arn)
    assert harness.error_code(e.value) == "ConflictException"

    # Input that isn't there fails the job in validation, saying where it looked.
    arn = bedrock.create_model_invocation_job(
        jobName="missing", modelId=CLAUDE, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-input/absent/"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/absent/"}},
    )["jobArn"]
    job = wait_for(bedrock, arn)
    assert job["status"] == "Failed" and "s3://batch-input/absent/" in job["message"]
    assert "Validating" in job["_seen"] or job["_seen"] == ["Failed"]


def test_stop_a_running_job_keeps_what_was_written(bedrock, s3):
    records = [{"recordId": f"S{i}", "modelInput": claude_input(f"Tell me about {i}.", 24)}
               for i in range(30)]
    put_jsonl(s3, "batch-input", "stop/in.jsonl", records)
    arn = bedrock.create_model_invocation_job(
        jobName="to-stop", modelId=CLAUDE, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-input/stop/in.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/stop/"}},
    )["jobArn"]
    wait_for(bedrock, arn, until={"InProgress"} | TERMINAL)
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    job = wait_for(bedrock, arn)
    assert job["status"] == "Stopped", job
    assert job["processedRecordCount"] < 30
    out = read_jsonl(s3, "batch-output", f"stop/{job_id(arn)}/in.jsonl.out")
    assert len(out) == job["processedRecordCount"]
    manifest = json.loads(s3.get_object(
        Bucket="batch-output", Key=f"stop/{job_id(arn)}/manifest.json.out")["Body"].read())
    assert manifest["totalRecordCount"] == 30
    assert manifest["processedRecordCount"] == len(out)


def test_get_list_and_errors(bedrock, s3):
    put_jsonl(s3, "batch-input", "list/in.jsonl", [{"recordId": "1", "modelInput": claude_input("Hi.", 4)}])
    arns = []
    for name in ("listed-alpha", "listed-beta"):
        arns.append(bedrock.create_model_invocation_job(
            jobName=name, modelId=CLAUDE, roleArn=ROLE, clientRequestToken=f"token-{name}",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-input/list/in.jsonl"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/list/"}},
        )["jobArn"])
    # The same token and request give the same job.
    again = bedrock.create_model_invocation_job(
        jobName="listed-beta", modelId=CLAUDE, roleArn=ROLE, clientRequestToken="token-listed-beta",
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-input/list/in.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/list/"}},
    )["jobArn"]
    assert again == arns[1]
    for arn in arns:
        wait_for(bedrock, arn)
    # By ARN (boto3 percent-encodes its slash into one path segment) and by ID.
    assert bedrock.get_model_invocation_job(jobIdentifier=job_id(arns[0]))["jobArn"] == arns[0]

    listed = bedrock.list_model_invocation_jobs(nameContains="listed-")["invocationJobSummaries"]
    assert [j["jobName"] for j in listed] == ["listed-beta", "listed-alpha"], "newest first"
    listed = bedrock.list_model_invocation_jobs(nameContains="listed-", sortOrder="Ascending",
                                                statusEquals="Completed")["invocationJobSummaries"]
    assert [j["jobArn"] for j in listed] == arns
    page = bedrock.list_model_invocation_jobs(nameContains="listed-", maxResults=1)
    assert len(page["invocationJobSummaries"]) == 1 and page["nextToken"]
    pages = bedrock.get_paginator("list_model_invocation_jobs").paginate(
        nameContains="listed-", PaginationConfig={"PageSize": 1})
    assert sum(len(p["invocationJobSummaries"]) for p in pages) == 2
    assert bedrock.list_model_invocation_jobs(
        submitTimeAfter="2100-01-01T00:00:00Z")["invocationJobSummaries"] == []

    with pytest.raises(ClientError) as e:
        bedrock.get_model_invocation_job(jobIdentifier="abcdefghijkl")
    assert harness.error_code(e.value) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        bedrock.create_model_invocation_job(
            jobName="bad-uri", modelId=CLAUDE, roleArn=ROLE,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "https://example/in.jsonl"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/x/"}})
    assert harness.error_code(e.value) == "ValidationException"
    assert "inputDataConfig.s3InputDataConfig.s3Uri" in harness.error_message(e.value)
    with pytest.raises(ClientError) as e:
        bedrock.create_model_invocation_job(
            jobName="bad-model", modelId="acme.no-such-model-v1:0", roleArn=ROLE,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-input/list/in.jsonl"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/x/"}})
    assert harness.error_code(e.value) in {"ValidationException", "ResourceNotFoundException"}


def test_kill_9_mid_job_resumes_with_every_record_once(start_server, s3_server, s3):
    """A server killed with SIGKILL in the middle of a job resumes it on restart: every
    record appears in the output exactly once."""
    srv = start_server(
        "batch-crash",
        BASALT_S3_ENDPOINT=s3_server.endpoint,
        BASALT_S3_ACCESS_KEY_ID=s3_server.ACCESS_KEY_ID,
        BASALT_S3_SECRET_ACCESS_KEY=s3_server.SECRET_ACCESS_KEY,
    )
    records = [{"recordId": f"K{i:03}", "modelInput": claude_input(f"Write about the number {i}.", 16)}
               for i in range(30)]
    put_jsonl(s3, "batch-input", "crash/in.jsonl", records)
    bedrock = srv.client("bedrock")
    arn = bedrock.create_model_invocation_job(
        jobName="crash", modelId=CLAUDE, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-input/crash/in.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/crash/"}},
    )["jobArn"]
    deadline = time.monotonic() + 120
    while True:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job.get("processedRecordCount", 0) >= 4:
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "InProgress" and job["processedRecordCount"] < 30, job
    srv.proc.kill()  # SIGKILL: no chance to tidy up
    srv.proc.wait(timeout=15)
    srv.stop()
    srv.start()
    job = wait_for(srv.client("bedrock"), arn)
    assert job["status"] == "Completed", job
    out = read_jsonl(s3, "batch-output", f"crash/{job_id(arn)}/in.jsonl.out")
    assert [o["recordId"] for o in out] == [r["recordId"] for r in records]
    assert all("modelOutput" in o for o in out)
    assert job["processedRecordCount"] == job["successRecordCount"] == 30


def test_local_bucket_directory_by_default(start_server):
    """Without an S3 endpoint, bucket b is the directory <data-dir>/s3/b/."""
    srv = start_server("batch-local")
    (srv.data_dir / "s3" / "local-in").mkdir(parents=True)
    (srv.data_dir / "s3" / "local-out").mkdir(parents=True)
    lines = [{"recordId": "L1", "modelInput": {"inputText": "local files"}}]
    (srv.data_dir / "s3" / "local-in" / "in.jsonl").write_text(json.dumps(lines[0]) + "\n")
    bedrock = srv.client("bedrock")
    arn = bedrock.create_model_invocation_job(
        jobName="local", modelId=TITAN_EMBED, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://local-in/in.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://local-out/"}},
    )["jobArn"]
    assert wait_for(bedrock, arn)["status"] == "Completed"
    out_dir = srv.data_dir / "s3" / "local-out" / job_id(arn)
    assert sorted(p.name for p in out_dir.iterdir()) == ["in.jsonl.out", "manifest.json.out"]
    line = json.loads((out_dir / "in.jsonl.out").read_text())
    assert line["recordId"] == "L1" and len(line["modelOutput"]["embedding"]) == 1024

    # The CLI reads the same jobs from the data directory while the server runs.
    listed = srv.cli("jobs", "list", "--data-dir", str(srv.data_dir)).stdout
    assert job_id(arn) in listed and "Completed" in listed and "1/1 (0 failed)" in listed
    watched = srv.cli("jobs", "watch", "--data-dir", str(srv.data_dir), arn).stdout
    assert f"{arn}: Completed (1 succeeded, 0 failed)" in watched

    # A bucket directory that doesn't exist fails the job with what to create.
    arn = bedrock.create_model_invocation_job(
        jobName="no-bucket", modelId=TITAN_EMBED, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://no-such-bucket/in.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://local-out/"}},
    )["jobArn"]
    job = wait_for(bedrock, arn)
    assert job["status"] == "Failed" and "no-such-bucket" in job["message"]


# ---------------------------------------------------------------------- async invoke
def test_async_invoke_writes_the_response_and_lists(batch_server, s3):
    runtime = batch_server.client("bedrock-runtime")
    body = {"inputText": "An asynchronous embedding.", "dimensions": 512}
    arn = runtime.start_async_invoke(
        modelId=TITAN_EMBED, modelInput=body, clientRequestToken="async-token-1",
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/async"}},
    )["invocationArn"]
    assert ":async-invoke/" in arn and len(arn.rsplit("/", 1)[1]) == 12
    again = runtime.start_async_invoke(
        modelId=TITAN_EMBED, modelInput=body, clientRequestToken="async-token-1",
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/async"}},
    )["invocationArn"]
    assert again == arn, "the same token and request give the same invocation"
    deadline = time.monotonic() + 120
    while (got := runtime.get_async_invoke(invocationArn=arn))["status"] == "InProgress":
        assert time.monotonic() < deadline, got
        time.sleep(0.1)
    assert got["status"] == "Completed" and "failureMessage" not in got, got
    assert got["modelArn"].endswith(f":foundation-model/{TITAN_EMBED}")
    assert got["submitTime"] <= got["endTime"]
    output = json.loads(s3.get_object(
        Bucket="batch-output", Key=f"async/{arn.rsplit('/', 1)[1]}/output.json")["Body"].read())
    online = json.loads(runtime.invoke_model(modelId=TITAN_EMBED, body=json.dumps(body))["body"].read())
    assert len(output["embedding"]) == 512
    assert harness.cosine(output["embedding"], online["embedding"]) > 0.9999

    # A model error fails the invocation with the model's message.
    bad = runtime.start_async_invoke(
        modelId=CLAUDE, modelInput={"anthropic_version": "bedrock-2023-05-31"},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/async"}},
    )["invocationArn"]
    while (failed := runtime.get_async_invoke(invocationArn=bad))["status"] == "InProgress":
        assert time.monotonic() < deadline + 60, failed
        time.sleep(0.1)
    assert failed["status"] == "Failed" and "max_tokens" in failed["failureMessage"]

    listed = runtime.list_async_invokes(sortOrder="Ascending")["asyncInvokeSummaries"]
    assert [i["invocationArn"] for i in listed][-2:] == [arn, bad]
    only_failed = runtime.list_async_invokes(statusEquals="Failed")["asyncInvokeSummaries"]
    assert bad in [i["invocationArn"] for i in only_failed] and arn not in [i["invocationArn"] for i in only_failed]

    with pytest.raises(ClientError) as e:
        runtime.get_async_invoke(invocationArn=arn[:-12] + "zzzzzzzzzzzz")
    assert harness.error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        runtime.start_async_invoke(
            modelId="acme.no-such-model-v1:0", modelInput=body,
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-output/async"}})
    assert harness.error_code(e.value) == "ValidationException"
