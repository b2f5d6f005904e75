"""Model invocation logging: Put/Get/DeleteModelInvocationLoggingConfiguration, and the
records every runtime invocation leaves in the configured destinations (a CloudWatch log
group as JSON lines under the data dir, S3 as gzipped JSON lines in a local bucket or on
an S3-compatible server)."""

from __future__ import annotations

import gzip
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import harness

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_V2 = "amazon.titan-embed-text-v2:0"
ROLE = "arn:aws:iam::123456789012:role/BedrockLogging"
ACCOUNT = "000000000000"
WAIT_S = 20.0


# ---------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def log_server(start_server):
    return start_server("invlog")


@pytest.fixture(scope="module")
def control(log_server):
    return log_server.client("bedrock")


@pytest.fixture(scope="module")
def unchecked(log_server):
    """A control-plane client that leaves every check to the server."""
    return log_server.client("bedrock", parameter_validation=False)


@pytest.fixture(scope="module")
def runtime(log_server):
    return log_server.client("bedrock-runtime")


@pytest.fixture(autouse=True)
def no_config_left(control):
    yield
    control.delete_model_invocation_logging_configuration()


def cloudwatch_config(group: str) -> dict:
    return {"logGroupName": group, "roleArn": ROLE}


def group_records(server, group: str) -> list[dict]:
    root = server.data_dir / "logs" / group.strip("/") / "aws" / "bedrock" / "modelinvocations"
    out = []
    for f in sorted(root.glob("*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line]
    return out


def gz_records(blobs) -> list[dict]:
    out = []
    for blob in blobs:
        out += [json.loads(line) for line in gzip.decompress(blob).decode().splitlines() if line]
    return out


def wait_for(read, request_id: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [r for r in read() if r.get("requestId") == request_id]
        if found:
            assert len(found) == 1, f"logged {len(found)} times: {found}"
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no record for request {request_id} within {WAIT_S}s")
        time.sleep(0.2)


def request_id(resp_or_exc) -> str:
    meta = resp_or_exc.response["ResponseMetadata"] if isinstance(resp_or_exc, ClientError) \
        else resp_or_exc["ResponseMetadata"]
    return meta["RequestId"]


def scrape(server) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def assert_common(record: dict, operation: str, model_id: str, rid: str):
    assert record["schemaType"] == "ModelInvocationLog"
    assert record["schemaVersion"] == "1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["timestamp"]), record["timestamp"]
    assert record["accountId"] == ACCOUNT
    assert record["identity"]["arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    assert record["region"] == harness.REGION
    assert record["requestId"] == rid
    assert record["operation"] == operation
    assert record["modelId"] == model_id
    assert record["input"]["inputContentType"] == "application/json"


# ---------------------------------------------------------------------- control plane
def test_put_get_delete(log_server, control):
    assert "loggingConfig" not in control.get_model_invocation_logging_configuration()
    (log_server.data_dir / "s3" / "invocation-logs").mkdir(parents=True, exist_ok=True)
    config = {
        "cloudWatchConfig": {"logGroupName": "/basalt/invocations", "roleArn": ROLE,
                             "largeDataDeliveryS3Config": {"bucketName": "invocation-logs"}},
        "s3Config": {"bucketName": "invocation-logs", "keyPrefix": "team-a"},
        "textDataDeliveryEnabled": True,
        "imageDataDeliveryEnabled": False,
        "embeddingDataDeliveryEnabled": True,
        "videoDataDeliveryEnabled": False,
    }
    resp = control.put_model_invocation_logging_configuration(loggingConfig=config)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert control.get_model_invocation_logging_configuration()["loggingConfig"] == config

    # Put replaces the whole configuration.
    control.put_model_invocation_logging_configuration(
        loggingConfig={"cloudWatchConfig": cloudwatch_config("other")})
    assert control.get_model_invocation_logging_configuration()["loggingConfig"] == {
        "cloudWatchConfig": cloudwatch_config("other")}

    control.delete_model_invocation_logging_configuration()
    assert "loggingConfig" not in control.get_model_invocation_logging_configuration()
    # Deleting again succeeds, as in Bedrock.
    control.delete_model_invocation_logging_configuration()


@pytest.mark.parametrize("config,field", [
    (None, "loggingConfig"),
    ({"textDataDeliveryEnabled": True}, "loggingConfig"),
    ({"s3Config": {"bucketName": "ab"}}, "loggingConfig.s3Config.bucketName"),
    ({"s3Config": {"bucketName": "Not_A_Bucket"}}, "loggingConfig.s3Config.bucketName"),
    ({"s3Config": {}}, "loggingConfig.s3Config.bucketName"),
    ({"s3Config": {"bucketName": "no-such-bucket-here"}}, "loggingConfig.s3Config.bucketName"),
    ({"s3Config": {"bucketName": "invocation-logs", "keyPrefix": "a//b"}},
     "loggingConfig.s3Config.keyPrefix"),
    ({"cloudWatchConfig": {"logGroupName": "g", "roleArn": "arn:aws:iam::1:user/x"}},
     "loggingConfig.cloudWatchConfig.roleArn"),
    ({"cloudWatchConfig": {"logGroupName": "g"}}, "loggingConfig.cloudWatchConfig.roleArn"),
    ({"cloudWatchConfig": {"logGroupName": "", "roleArn": ROLE}},
     "loggingConfig.cloudWatchConfig.logGroupName"),
    ({"cloudWatchConfig": {"logGroupName": "a/../../b", "roleArn": ROLE}},
     "loggingConfig.cloudWatchConfig.logGroupName"),
    ({"cloudWatchConfig": {"logGroupName": "x" * 513, "roleArn": ROLE}},
     "loggingConfig.cloudWatchConfig.logGroupName"),
    ({"cloudWatchConfig": {"logGroupName": "g", "roleArn": ROLE,
                           "largeDataDeliveryS3Config": {"bucketName": "x"}}},
     "loggingConfig.cloudWatchConfig.largeDataDeliveryS3Config.bucketName"),
])
def test_put_validation_names_the_field(log_server, control, unchecked, config, field):
    (log_server.data_dir / "s3" / "invocation-logs").mkdir(parents=True, exist_ok=True)
    kwargs = {} if config is None else {"loggingConfig": config}
    with pytest.raises(ClientError) as e:
        unchecked.put_model_invocation_logging_configuration(**kwargs)
    assert harness.error_code(e.value) == "ValidationException"
    assert harness.http_status(e.value) == 400
    assert field in harness.error_message(e.value), harness.error_message(e.value)
    # Nothing was stored.
    assert "loggingConfig" not in control.get_model_invocation_logging_configuration()


def test_no_config_means_no_records(log_server, runtime):
    runtime.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                     inferenceConfig={"maxTokens": 4})
    time.sleep(1.5)
    assert not (log_server.data_dir / "logs").exists() or \
        not list((log_server.data_dir / "logs").rglob("*.jsonl"))


# ---------------------------------------------------------------------- records
def test_each_runtime_operation_is_logged_with_bodies(log_server, control, runtime):
    group = "/basalt/all-ops"
    control.put_model_invocation_logging_configuration(loggingConfig={
        "cloudWatchConfig": cloudwatch_config(group), "textDataDeliveryEnabled": True})
    read = lambda: group_records(log_server, group)  # noqa: E731

    # InvokeModel
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hi."}]}
    resp = runtime.invoke_model(modelId=CLAUDE, body=json.dumps(body),
                                contentType="application/json", accept="application/json")
    out = json.loads(resp["body"].read())
    rec = wait_for(read, request_id(resp))
    assert_common(rec, "InvokeModel", CLAUDE, request_id(resp))
    assert rec["input"]["inputBodyJson"] == body
    assert rec["input"]["inputTokenCount"] == out["usage"]["input_tokens"]
    assert rec["output"]["outputContentType"] == "application/json"
    assert rec["output"]["outputBodyJson"] == out
    assert rec["output"]["outputTokenCount"] == out["usage"]["output_tokens"]
    assert "errorCode" not in rec

    # InvokeModelWithResponseStream
    resp = runtime.invoke_model_with_response_stream(
        modelId=CLAUDE, body=json.dumps(body), contentType="application/json")
    chunks = harness.stream_chunks(resp)
    rec = wait_for(read, request_id(resp))
    assert_common(rec, "InvokeModelWithResponseStream", CLAUDE, request_id(resp))
    assert rec["input"]["inputBodyJson"] == body
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert rec["input"]["inputTokenCount"] == metrics["inputTokenCount"]
    assert rec["output"]["outputTokenCount"] == metrics["outputTokenCount"]
    assert rec["output"]["outputBodyJson"] == chunks

    # Converse
    messages = [{"role": "user", "content": [{"text": "Say hi."}]}]
    resp = runtime.converse(modelId=CLAUDE, messages=messages, inferenceConfig={"maxTokens": 8})
    rec = wait_for(read, request_id(resp))
    assert_common(rec, "Converse", CLAUDE, request_id(resp))
    assert rec["input"]["inputBodyJson"]["messages"] == messages
    assert rec["input"]["inputTokenCount"] == resp["usage"]["inputTokens"]
    assert rec["output"]["outputTokenCount"] == resp["usage"]["outputTokens"]
    assert rec["output"]["outputBodyJson"]["output"] == resp["output"]
    assert rec["output"]["outputBodyJson"]["stopReason"] == resp["stopReason"]

    # ConverseStream
    resp = runtime.converse_stream(modelId=CLAUDE, messages=messages,
                                   inferenceConfig={"maxTokens": 8})
    events = list(resp["stream"])
    usage = next(e["metadata"]["usage"] for e in events if "metadata" in e)
    rec = wait_for(read, request_id(resp))
    assert_common(rec, "ConverseStream", CLAUDE, request_id(resp))
    assert rec["input"]["inputTokenCount"] == usage["inputTokens"]
    assert rec["output"]["outputTokenCount"] == usage["outputTokens"]
    logged = rec["output"]["outputBodyJson"]
    assert [next(iter(e)) for e in logged] == [next(iter(e)) for e in events]
    assert logged[0]["messageStart"]["role"] == "assistant"
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in logged
                   if "contentBlockDelta" in e)
    assert text == "".join(e["contentBlockDelta"]["delta"]["text"] for e in events
                           if "contentBlockDelta" in e)


def test_bodies_only_when_delivery_is_enabled(log_server, control, runtime):
    group = "embed-only"
    control.put_model_invocation_logging_configuration(loggingConfig={
        "cloudWatchConfig": cloudwatch_config(group),
        "textDataDeliveryEnabled": False, "embeddingDataDeliveryEnabled": True})
    read = lambda: group_records(log_server, group)  # noqa: E731
    secret_prompt = "The launch code is tangerine-42."

    resp = runtime.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": secret_prompt}]}],
                            inferenceConfig={"maxTokens": 4})
    rec = wait_for(read, request_id(resp))
    assert "inputBodyJson" not in rec["input"] and "outputBodyJson" not in rec["output"]
    assert rec["input"]["inputTokenCount"] == resp["usage"]["inputTokens"]
    assert rec["output"]["outputTokenCount"] == resp["usage"]["outputTokens"]

    body = {"inputText": "embed me", "dimensions": 256}
    resp = runtime.invoke_model(modelId=TITAN_V2, body=json.dumps(body))
    out = json.loads(resp["body"].read())
    rec = wait_for(read, request_id(resp))
    assert_common(rec, "InvokeModel", TITAN_V2, request_id(resp))
    assert rec["input"]["inputBodyJson"] == body
    assert rec["input"]["inputTokenCount"] == out["inputTextTokenCount"]
    # Numbers are re-serialised: equal to the last bit or so (serde_json's default parser).
    assert rec["output"]["outputBodyJson"]["embedding"] == pytest.approx(out["embedding"], rel=1e-12)

    # The prompt never reached any log: not the records, not the server's own log.
    logs = "".join(p.read_text() for p in (log_server.data_dir / "logs").rglob("*.jsonl"))
    assert secret_prompt not in logs
    assert secret_prompt not in log_server.log_tail(100_000)
    assert log_server.secret_access_key not in log_server.log_tail(100_000)


def test_failed_invocations_are_logged_with_their_error(log_server, control, runtime):
    group = "failures"
    control.put_model_invocation_logging_configuration(loggingConfig={
        "cloudWatchConfig": cloudwatch_config(group), "textDataDeliveryEnabled": True})
    read = lambda: group_records(log_server, group)  # noqa: E731

    with pytest.raises(ClientError) as e:
        runtime.converse(modelId="no.such-model-v1:0",
                         messages=[{"role": "user", "content": [{"text": "x"}]}])
    rec = wait_for(read, request_id(e.value))
    assert_common(rec, "Converse", "no.such-model-v1:0", request_id(e.value))
    assert rec["errorCode"] == harness.error_code(e.value) == "ValidationException"

    bad = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8, "messages": []}
    with pytest.raises(ClientError) as e:
        runtime.invoke_model(modelId=CLAUDE, body=json.dumps(bad))
    rec = wait_for(read, request_id(e.value))
    assert rec["operation"] == "InvokeModel"
    assert rec["errorCode"] == harness.error_code(e.value)
    assert rec["input"]["inputBodyJson"] == bad
    assert "outputTokenCount" not in rec["output"]


# ---------------------------------------------------------------------- S3 destinations
S3_KEY = re.compile(
    r"(?P<prefix>.*)AWSLogs/(?P<account>\d{12})/BedrockModelInvocationLogs/(?P<region>[a-z0-9-]+)/"
    r"(?P<y>\d{4})/(?P<m>\d\d)/(?P<d>\d\d)/(?P<h>\d\d)/\d{8}T\d{9}Z_[0-9a-f]{16}\.json\.gz")


def check_key(key: str, prefix: str):
    m = S3_KEY.fullmatch(key)
    assert m, f"unexpected key layout: {key}"
    assert m["prefix"] == prefix and m["account"] == ACCOUNT and m["region"] == harness.REGION
    now = time.gmtime()
    # The hour folder is the record's (UTC) hour; allow for an hour boundary during the test.
    assert (int(m["y"]), int(m["m"]), int(m["d"])) <= (now.tm_year, now.tm_mon, now.tm_mday)


def test_local_bucket_is_the_default(log_server, control, runtime):
    bucket_dir = log_server.data_dir / "s3" / "local-logs"
    bucket_dir.mkdir(parents=True, exist_ok=True)
    control.put_model_invocation_logging_configuration(loggingConfig={
        "s3Config": {"bucketName": "local-logs", "keyPrefix": "bedrock/"},
        "textDataDeliveryEnabled": True})

    def read():
        return gz_records(p.read_bytes() for p in bucket_dir.rglob("*.json.gz"))

    resp = runtime.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                            inferenceConfig={"maxTokens": 4})
    rec = wait_for(read, request_id(resp))
    assert_common(rec, "Converse", CLAUDE, request_id(resp))
    keys = [str(p.relative_to(bucket_dir)) for p in bucket_dir.rglob("*.json.gz")]
    assert keys
    for key in keys:
        check_key(key, "bedrock/")


def test_delivery_failure_is_counted_and_never_fails_the_call(log_server, control, runtime):
    bucket_dir = log_server.data_dir / "s3" / "vanishing"
    bucket_dir.mkdir(parents=True, exist_ok=True)
    control.put_model_invocation_logging_configuration(loggingConfig={"s3Config": {"bucketName": "vanishing"}})
    bucket_dir.rmdir()  # the bucket goes away after configuration
    before = scrape(log_server).get('basalt_invocation_log_failures_total{destination="s3"}', 0.0)
    resp = runtime.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                            inferenceConfig={"maxTokens": 4})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    deadline = time.monotonic() + WAIT_S
    while scrape(log_server).get('basalt_invocation_log_failures_total{destination="s3"}', 0.0) <= before:
        assert time.monotonic() < deadline, "the failed delivery was not counted"
        time.sleep(0.2)
    assert "could not deliver invocation log records" in log_server.log_tail(200)


@pytest.fixture(scope="module")
def s3_log_server(start_server, s3_server):
    return start_server(
        "invlog-s3",
        BASALT_S3_ENDPOINT=s3_server.endpoint,
        BASALT_S3_ACCESS_KEY_ID=s3_server.ACCESS_KEY_ID,
        BASALT_S3_SECRET_ACCESS_KEY=s3_server.SECRET_ACCESS_KEY,
    )


def test_s3_destination_on_an_s3_server(s3_log_server, s3_server):
    s3 = s3_server.client()
    s3.create_bucket(Bucket="moto-invocation-logs")
    control = s3_log_server.client("bedrock")
    runtime = s3_log_server.client("bedrock-runtime")
    unchecked = s3_log_server.client("bedrock", parameter_validation=False)
    with pytest.raises(ClientError) as e:
        unchecked.put_model_invocation_logging_configuration(
            loggingConfig={"s3Config": {"bucketName": "not-on-the-server"}})
    assert "loggingConfig.s3Config.bucketName" in harness.error_message(e.value)

    control.put_model_invocation_logging_configuration(loggingConfig={
        "s3Config": {"bucketName": "moto-invocation-logs", "keyPrefix": "logs"},
        "textDataDeliveryEnabled": True})
    try:
        messages = [{"role": "user", "content": [{"text": "Hi"}]}]
        resp = runtime.converse_stream(modelId=CLAUDE, messages=messages, inferenceConfig={"maxTokens": 4})
        list(resp["stream"])

        def read():
            listed = s3.list_objects_v2(Bucket="moto-invocation-logs", Prefix="logs/").get("Contents", [])
            return gz_records(s3.get_object(Bucket="moto-invocation-logs", Key=o["Key"])["Body"].read()
                              for o in listed)

        rec = wait_for(read, request_id(resp))
        assert_common(rec, "ConverseStream", CLAUDE, request_id(resp))
        assert rec["input"]["inputBodyJson"]["messages"] == messages
        listed = s3.list_objects_v2(Bucket="moto-invocation-logs")["Contents"]
        for o in listed:
            check_key(o["Key"], "logs/")
        assert scrape(s3_log_server)['basalt_invocation_log_records_total{destination="s3"}'] >= 1
    finally:
        control.delete_model_invocation_logging_configuration()


def test_last_records_are_flushed_at_shutdown(start_server):
    srv = start_server("invlog-shutdown")
    group = "at-exit"
    srv.client("bedrock").put_model_invocation_logging_configuration(
        loggingConfig={"cloudWatchConfig": cloudwatch_config(group)})
    resp = srv.client("bedrock-runtime").converse(
        modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
        inferenceConfig={"maxTokens": 2})
    srv.stop()  # SIGTERM, at once: the record may still be queued
    rid = request_id(resp)
    assert [r for r in group_records(srv, group) if r["requestId"] == rid]
