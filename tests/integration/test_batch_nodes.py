"""Batch inference on two Basalt nodes sharing one queue: two real server processes
(each its own data dir) with their job state in one real PostgreSQL and their
objects in one moto S3 server. Both nodes run records of the same job; every record
is in the output once, one node writes the output and the manifest, and jobs made
on one node are seen, listed and stopped from the other."""

import json
import re
import time

import pytest

import harness
from test_batch import CLAUDE, ROLE, TERMINAL, TITAN_EMBED, claude_input, job_id, put_jsonl, read_jsonl, wait_for

DATABASE = "basalt_jobs_nodes"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def jobs_url(pg_server):
    pg_server.psql(f"CREATE DATABASE {DATABASE}")
    return (f"host=127.0.0.1 port={pg_server.port} user=postgres "
            f"password={pg_server.PASSWORD} dbname={DATABASE}")


@pytest.fixture(scope="module")
def nodes(start_server, s3_server, jobs_url):
    env = dict(
        BASALT_JOBS_DATABASE_URL=jobs_url,
        BASALT_S3_ENDPOINT=s3_server.endpoint,
        BASALT_S3_ACCESS_KEY_ID=s3_server.ACCESS_KEY_ID,
        BASALT_S3_SECRET_ACCESS_KEY=s3_server.SECRET_ACCESS_KEY,
        # Short, so that a killed node's records go to the other within seconds
        # (and renewal, every second, is exercised throughout).
        BASALT_JOBS_LEASE_S="3",
    )
    return start_server("node-a", **env), start_server("node-b", **env)


@pytest.fixture(scope="module")
def s3(s3_server):
    client = s3_server.client()
    for bucket in ("nodes-input", "nodes-output"):
        client.create_bucket(Bucket=bucket)
    return client


def sql(pg_server, query: str) -> list[list[str]]:
    """Rows of ``query`` in the jobs database."""
    out = pg_server._run("psql", "-h", "127.0.0.1", "-p", str(pg_server.port), "-U", "postgres",
                         "-d", DATABASE, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", query)
    return [line.split("|") for line in out.stdout.splitlines() if line.strip()]


def node_name(srv) -> str:
    return (srv.data_dir / "batch-node-id").read_text().strip()


def log_lines(srv, *words: str) -> list[str]:
    text = ANSI.sub("", srv.log_path.read_text(errors="replace"))
    return [line for line in text.splitlines() if all(w in line for w in words)]


def ran_count(line: str) -> int:
    """The records=N of a "batch records run on this node" log line."""
    m = re.search(r"records=(\d+)", line)
    assert m, line
    return int(m.group(1))


def create(bedrock, name: str, key: str, **extra) -> str:
    return bedrock.create_model_invocation_job(
        jobName=name, modelId=CLAUDE, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://nodes-input/{key}"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://nodes-output/{name}/"}},
        **extra,
    )["jobArn"]


def test_two_nodes_share_one_job_and_each_record_is_written_once(nodes, s3, pg_server, jobs_url):
    a, b = nodes
    assert node_name(a) != node_name(b)
    records = [{"recordId": f"N{i:03}", "modelInput": claude_input(f"Say the number {i}.", 8)}
               for i in range(40)]
    records[5] = {"recordId": "N005", "modelInput": {"anthropic_version": "bedrock-2023-05-31"}}
    put_jsonl(s3, "nodes-input", "shared/in.jsonl", records)
    arn = create(a.client("bedrock"), "shared", "shared/in.jsonl")
    # Made on a, seen and listed on b at once.
    bedrock_b = b.client("bedrock")
    assert bedrock_b.get_model_invocation_job(jobIdentifier=arn)["jobName"] == "shared"
    assert arn in [j["jobArn"] for j in bedrock_b.list_model_invocation_jobs(
        nameContains="shared")["invocationJobSummaries"]]

    job = wait_for(bedrock_b, arn)
    assert job["status"] == "PartiallyCompleted", job
    assert (job["totalRecordCount"], job["processedRecordCount"], job["successRecordCount"],
            job["errorRecordCount"]) == (40, 40, 39, 1)
    assert job["message"] == "1 of 40 records failed. Each record's error is in the output file."
    assert a.client("bedrock").get_model_invocation_job(jobIdentifier=arn)["status"] == job["status"]

    prefix = f"shared/{job_id(arn)}/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="nodes-output", Prefix=prefix)["Contents"])
    assert keys == [prefix + "in.jsonl.out", prefix + "manifest.json.out"]
    out = read_jsonl(s3, "nodes-output", prefix + "in.jsonl.out")
    assert [o["recordId"] for o in out] == [r["recordId"] for r in records], "each record once, in order"
    assert all(set(o) == {"recordId", "modelInput", "modelOutput"} for i, o in enumerate(out) if i != 5)
    assert out[5]["error"]["errorCode"] == 400
    manifest = json.loads(s3.get_object(Bucket="nodes-output", Key=prefix + "manifest.json.out")["Body"].read())
    assert manifest == {
        "totalRecordCount": 40, "processedRecordCount": 40, "successRecordCount": 39,
        "errorRecordCount": 1,
        "inputTokenCount": sum(o["modelOutput"]["usage"]["input_tokens"] for o in out if "modelOutput" in o),
        "outputTokenCount": sum(o["modelOutput"]["usage"]["output_tokens"] for o in out if "modelOutput" in o),
    }

    # Both nodes ran records, 40 in all (each node logs how many it ran).
    by_node = {srv.name: sum(ran_count(line) for line in
                             log_lines(srv, "batch records run on this node", job_id(arn)))
               for srv in (a, b)}
    assert all(n > 0 for n in by_node.values()) and sum(by_node.values()) == 40, by_node
    # The ended job's per-record rows are gone from PostgreSQL; the job keeps its counts.
    assert sql(pg_server, f"SELECT count(*) FROM basalt_batch_records WHERE job = '{job_id(arn)}'") == [["0"]]
    # One node wrote the output and ended the job.
    finished = [srv.name for srv in (a, b) if log_lines(srv, "batch job finished", job_id(arn))]
    assert len(finished) == 1, finished
    # The connection string holds a password; no log shows it.
    for srv in (a, b):
        assert pg_server.PASSWORD not in srv.log_path.read_text(errors="replace")
        assert log_lines(srv, "batch job state", f"/{DATABASE}")


def test_stop_and_tokens_across_nodes(nodes, s3):
    a, b = nodes
    records = [{"recordId": f"S{i:03}", "modelInput": claude_input(f"Tell me about {i}.", 24)}
               for i in range(40)]
    put_jsonl(s3, "nodes-input", "stop/in.jsonl", records)
    bedrock_a, bedrock_b = a.client("bedrock"), b.client("bedrock")
    arn = create(bedrock_b, "stopped", "stop/in.jsonl", clientRequestToken="nodes-stop-1")
    # The same request with the same token on the other node gives the same job.
    assert create(bedrock_a, "stopped", "stop/in.jsonl", clientRequestToken="nodes-stop-1") == arn
    job = wait_for(bedrock_a, arn, until={"InProgress"} | TERMINAL)
    assert job["status"] == "InProgress", job
    bedrock_a.stop_model_invocation_job(jobIdentifier=arn)
    job = wait_for(bedrock_b, arn)
    assert job["status"] == "Stopped", job
    assert job["processedRecordCount"] < 40
    out = read_jsonl(s3, "nodes-output", f"stopped/{job_id(arn)}/in.jsonl.out")
    assert len(out) == job["processedRecordCount"]
    assert len({o["recordId"] for o in out}) == len(out)
    manifest = json.loads(s3.get_object(
        Bucket="nodes-output", Key=f"stopped/{job_id(arn)}/manifest.json.out")["Body"].read())
    assert (manifest["totalRecordCount"], manifest["processedRecordCount"]) == (40, len(out))
    # The CLI reads the shared store too.
    listed = a.cli("jobs", "list").stdout
    assert job_id(arn) in listed and "Stopped" in listed


def test_async_invoke_started_on_one_node_is_seen_on_the_other(nodes, s3):
    a, b = nodes
    arn = a.client("bedrock-runtime").start_async_invoke(
        modelId=TITAN_EMBED, modelInput={"inputText": "shared queue"},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://nodes-output/async"}},
    )["invocationArn"]
    runtime_b = b.client("bedrock-runtime")
    deadline = time.monotonic() + 120
    while (inv := runtime_b.get_async_invoke(invocationArn=arn))["status"] == "InProgress":
        assert time.monotonic() < deadline, inv
        time.sleep(0.2)
    assert inv["status"] == "Completed", inv
    body = json.loads(s3.get_object(
        Bucket="nodes-output", Key=f"async/{arn.rsplit('/', 1)[1]}/output.json")["Body"].read())
    assert len(body["embedding"]) > 0
    ran = [srv.name for srv in (a, b)
           if log_lines(srv, "async invocation finished", arn.rsplit("/", 1)[1])]
    assert len(ran) == 1, ran


def test_an_unreachable_jobs_database_stops_the_server_without_showing_the_password(tmp_path):
    secret = "hunter2-jobs-secret"
    port = harness.free_port()
    srv = harness.BasaltServer(tmp_path, "bad-jobs-db", extra_env={
        "BASALT_JOBS_DATABASE_URL":
            f"host=127.0.0.1 port={port} user=basalt password={secret} dbname=jobs connect_timeout=2"})
    with pytest.raises(harness.ServerStartError):
        srv.start(timeout=30)
    log = srv.log_path.read_text(errors="replace")
    assert f"basalt@127.0.0.1:{port}/jobs" in log, log[-2000:]
    assert secret not in log


def test_a_node_killed_mid_job_leaves_its_records_to_the_other(nodes, s3, pg_server):
    """kill -9 of one node while it holds records: once its lease lapses the other
    node runs them, and every record is in the output once."""
    a, b = nodes
    records = [{"recordId": f"K{i:03}", "modelInput": claude_input(f"Write about {i}.", 16)}
               for i in range(40)]
    put_jsonl(s3, "nodes-input", "killed/in.jsonl", records)
    arn = create(a.client("bedrock"), "killed", "killed/in.jsonl")
    jid, name_a = job_id(arn), node_name(a)
    deadline = time.monotonic() + 180
    while True:
        (done_a, held_a), = sql(pg_server, (
            "SELECT count(*) FILTER (WHERE done), count(*) FILTER (WHERE NOT done) "
            f"FROM basalt_batch_records WHERE job = '{jid}' AND (node = '{name_a}' OR owner = '{name_a}')"))
        if int(done_a) >= 2 and int(held_a) > 0:
            break
        assert time.monotonic() < deadline, (done_a, held_a)
        time.sleep(0.05)
    a.proc.kill()  # SIGKILL while it holds records
    a.proc.wait(timeout=15)
    held = [line for line, in sql(pg_server, (
        f"SELECT line FROM basalt_batch_records WHERE job = '{jid}' AND owner = '{name_a}' AND NOT done"))]
    assert held, "a held records when it died"
    job = wait_for(b.client("bedrock"), arn)
    assert job["status"] == "Completed", job
    assert job["processedRecordCount"] == job["successRecordCount"] == 40
    out = read_jsonl(s3, "nodes-output", f"killed/{jid}/in.jsonl.out")
    assert [o["recordId"] for o in out] == [r["recordId"] for r in records]
    # What a held when it died was run by b once a's lease lapsed (each record is in
    # the output once, above); the ended job's rows are gone.
    assert sum(ran_count(line) for line in log_lines(b, "batch records run on this node", jid)) > 0
    assert sql(pg_server, f"SELECT count(*) FROM basalt_batch_records WHERE job = '{jid}'") == [["0"]]
    assert log_lines(b, "batch job finished", jid)
    a.stop()
    a.start()  # the same data dir and node name; it frees nothing left and serves again
    assert a.client("bedrock").get_model_invocation_job(jobIdentifier=arn)["status"] == "Completed"
