"""Provisioned throughput: the control plane (create, get, list, update, delete) through
boto3 and the AWS CLI, and runtime calls made through a provisioned model's ARN, by its
generated ID and by its name as the seed writes it.

One server of its own (low limits, so that the quota checks are quick), with the AWS CLI
given only ``--endpoint-url`` on top of the seed's commands.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import re
import subprocess
import time
import uuid

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import harness

SONNET = "anthropic.claude-3-sonnet-20240229-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SEED_NAME = "my-claude-capacity"
SEED_ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/my-claude-capacity"
PT_ARN_RE = re.compile(r"^arn:aws:bedrock:us-east-1:000000000000:provisioned-model/[a-z0-9]{12}$")
MAX_THROUGHPUTS = 5
MAX_UNITS = 8
CLAUDE_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 16,
               "messages": [{"role": "user", "content": "Say hi."}]}


@pytest.fixture(scope="module")
def srv(start_server):
    return start_server("provisioned",
                        BASALT_MAX_PROVISIONED_THROUGHPUTS=str(MAX_THROUGHPUTS),
                        BASALT_MAX_PROVISIONED_MODEL_UNITS=str(MAX_UNITS))


@pytest.fixture(scope="module")
def bedrock(srv):
    return srv.client("bedrock")


@pytest.fixture(scope="module")
def runtime(srv):
    return srv.client("bedrock-runtime")


@pytest.fixture(scope="module")
def aws_cli():
    path = harness.find_aws_cli()
    if path is None:
        pytest.skip("aws CLI not installed (pip install -r tests/integration/requirements.txt)")
    return path


@pytest.fixture(scope="module")
def binary_format_args(aws_cli):
    """AWS CLI v2 needs ``--cli-binary-format raw-in-base64-out`` for a raw --body; v1
    sends it raw already and rejects the flag."""
    proc = subprocess.run([aws_cli, "--version"], capture_output=True, text=True, timeout=60)
    return [] if (proc.stdout + proc.stderr).startswith("aws-cli/1.") else [
        "--cli-binary-format", "raw-in-base64-out"]


def run_aws(srv, aws_cli, *args, cwd=None):
    """The seed's command with only ``--endpoint-url`` added; credentials and region come
    from the environment, as they would on a configured machine."""
    env = os.environ.copy()
    for k in [k for k in env if k.startswith("AWS_")]:
        del env[k]
    env.update({"AWS_ACCESS_KEY_ID": srv.access_key_id,
                "AWS_SECRET_ACCESS_KEY": srv.secret_access_key,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return subprocess.run([aws_cli, *args, "--endpoint-url", srv.url], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def create(bedrock, name, model=HAIKU, units=1, **kw):
    return bedrock.create_provisioned_model_throughput(
        modelId=model, provisionedModelName=name, modelUnits=units, **kw)["provisionedModelArn"]


def claude_text(response) -> str:
    return json.loads(response["body"].read())["content"][0]["text"]


# ---------------------------------------------------------------------- the seed's flow
def test_seed_cli_flow(srv, aws_cli, binary_format_args, tmp_path):
    proc = run_aws(srv, aws_cli, "bedrock", "create-provisioned-model-throughput",
                   "--model-id", SONNET,
                   "--provisioned-model-name", SEED_NAME,
                   "--model-units", "1")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    arn = json.loads(proc.stdout)["provisionedModelArn"]
    assert PT_ARN_RE.match(arn), arn

    proc = run_aws(srv, aws_cli, "bedrock-runtime", "invoke-model",
                   "--model-id", SEED_ARN,
                   "--body", json.dumps(CLAUDE_BODY), *binary_format_args,
                   "response.json", cwd=tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    reply = json.loads((tmp_path / "response.json").read_text())
    assert reply["type"] == "message" and reply["content"][0]["text"].strip()
    assert reply["usage"]["output_tokens"] > 0


def test_seed_boto3_invoke(runtime, seed_throughput):
    response = runtime.invoke_model(
        modelId=SEED_ARN,
        contentType="application/json",
        accept="application/json",
        body=json.dumps(CLAUDE_BODY),
    )
    assert claude_text(response).strip()
    assert int(response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-output-token-count"]) > 0


@pytest.fixture(scope="module")
def seed_throughput(bedrock):
    """The seed's throughput, whichever test made it (the CLI test when run first)."""
    try:
        bedrock.get_provisioned_model_throughput(provisionedModelId=SEED_NAME)
    except ClientError:
        create(bedrock, SEED_NAME, model=SONNET)
    return SEED_NAME


def test_cli_get_and_list(srv, aws_cli, seed_throughput):
    proc = run_aws(srv, aws_cli, "bedrock", "get-provisioned-model-throughput",
                   "--provisioned-model-id", SEED_NAME)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["provisionedModelName"] == SEED_NAME and got["status"] == "InService"
    proc = run_aws(srv, aws_cli, "bedrock", "list-provisioned-model-throughputs",
                   "--name-contains", "claude-capacity")
    assert proc.returncode == 0, proc.stderr
    names = [s["provisionedModelName"] for s in json.loads(proc.stdout)["provisionedModelSummaries"]]
    assert names == [SEED_NAME]


# ---------------------------------------------------------------------- control plane
def test_get_by_name_and_by_arn(bedrock):
    arn = create(bedrock, "pt-get", units=2, tags=[{"key": "team", "value": "ml"}])
    assert PT_ARN_RE.match(arn)
    by_name = bedrock.get_provisioned_model_throughput(provisionedModelId="pt-get")
    by_arn = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
    for got in (by_name, by_arn):
        assert got["provisionedModelArn"] == arn
        assert got["provisionedModelName"] == "pt-get"
        assert got["modelUnits"] == got["desiredModelUnits"] == 2
        assert got["modelArn"] == got["desiredModelArn"] == \
            f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}"
        assert got["foundationModelArn"] == got["modelArn"]
        assert got["status"] == "InService"
        assert isinstance(got["creationTime"], dt.datetime)
        assert isinstance(got["lastModifiedTime"], dt.datetime)
        assert "commitmentDuration" not in got
    bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)


def test_create_is_idempotent_on_its_token(bedrock):
    token = uuid.uuid4().hex
    first = create(bedrock, "pt-token", clientRequestToken=token)
    again = create(bedrock, "pt-token", clientRequestToken=token)
    assert first == again
    names = [s["provisionedModelName"] for s in bedrock.list_provisioned_model_throughputs(
        nameContains="pt-token")["provisionedModelSummaries"]]
    assert names == ["pt-token"]
    with pytest.raises(ClientError) as e:
        create(bedrock, "pt-token-other", clientRequestToken=token)
    assert harness.error_code(e.value) == "ValidationException"
    bedrock.delete_provisioned_model_throughput(provisionedModelId=first)


def test_names_are_unique_and_checked(bedrock):
    arn = create(bedrock, "pt-unique")
    with pytest.raises(ClientError) as e:
        create(bedrock, "pt-unique")
    assert harness.error_code(e.value) == "ValidationException"
    assert "already exists" in harness.error_message(e.value)
    for bad in ["has space", "-lead", "double--dash", "x" * 64]:
        with pytest.raises(ClientError) as e:
            create(bedrock, bad)
        assert harness.error_code(e.value) == "ValidationException", bad
        assert harness.http_status(e.value) == 400
    bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)


def test_create_refuses_unknown_models_and_bad_units(srv, bedrock):
    with pytest.raises(ClientError) as e:
        create(bedrock, "pt-unknown", model="acme.nope-v1")
    assert harness.error_code(e.value) == "ResourceNotFoundException"
    assert harness.http_status(e.value) == 404
    # botocore checks modelUnits >= 1 itself; the server must too.
    raw = srv.client("bedrock", parameter_validation=False)
    with pytest.raises(ClientError) as e:
        raw.create_provisioned_model_throughput(modelId=HAIKU, provisionedModelName="pt-zero",
                                                modelUnits=0)
    assert harness.error_code(e.value) == "ValidationException"
    with pytest.raises(ClientError) as e:
        raw.create_provisioned_model_throughput(modelId=HAIKU, provisionedModelName="pt-c",
                                                modelUnits=1, commitmentDuration="OneYear")
    assert harness.error_code(e.value) == "ValidationException"


def test_get_unknown_is_not_found(bedrock):
    for ident in ["no-such-pt", "arn:aws:bedrock:us-east-1:000000000000:provisioned-model/zzzzzzzzzzzz"]:
        with pytest.raises(ClientError) as e:
            bedrock.get_provisioned_model_throughput(provisionedModelId=ident)
        assert harness.error_code(e.value) == "ResourceNotFoundException"
        assert harness.http_status(e.value) == 404
    with pytest.raises(ClientError) as e:
        bedrock.get_provisioned_model_throughput(provisionedModelId="bad/name")
    assert harness.error_code(e.value) == "ValidationException"


def test_list_filters_sorts_and_pages(bedrock):
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    arns = [create(bedrock, f"pt-list-{i}", model=HAIKU if i != 1 else SONNET) for i in range(3)]
    try:
        summaries = bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", sortBy="CreationTime", sortOrder="Ascending",
        )["provisionedModelSummaries"]
        assert [s["provisionedModelArn"] for s in summaries] == arns
        summary = summaries[0]
        assert summary["status"] == "InService" and summary["modelUnits"] == 1
        descending = bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", sortOrder="Descending")["provisionedModelSummaries"]
        assert [s["provisionedModelArn"] for s in descending] == arns[::-1]

        page = bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", sortOrder="Ascending", maxResults=2)
        assert [s["provisionedModelArn"] for s in page["provisionedModelSummaries"]] == arns[:2]
        rest = bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", sortOrder="Ascending", maxResults=2, nextToken=page["nextToken"])
        assert [s["provisionedModelArn"] for s in rest["provisionedModelSummaries"]] == arns[2:]
        assert "nextToken" not in rest
        paginated = [s["provisionedModelArn"]
                     for p in bedrock.get_paginator("list_provisioned_model_throughputs").paginate(
                         nameContains="pt-list", sortOrder="Ascending",
                         PaginationConfig={"PageSize": 1})
                     for s in p["provisionedModelSummaries"]]
        assert paginated == arns

        sonnet_arn = f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET}"
        by_model = bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", modelArnEquals=sonnet_arn)["provisionedModelSummaries"]
        assert [s["provisionedModelArn"] for s in by_model] == [arns[1]]
        assert bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", statusEquals="Creating")["provisionedModelSummaries"] == []
        assert len(bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", statusEquals="InService")["provisionedModelSummaries"]) == 3
        assert len(bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", creationTimeAfter=before)["provisionedModelSummaries"]) == 3
        assert bedrock.list_provisioned_model_throughputs(
            nameContains="pt-list", creationTimeBefore=before)["provisionedModelSummaries"] == []
        for bad in [{"sortOrder": "Sideways"}, {"statusEquals": "Sleeping"},
                    {"nameContains": "no spaces"}]:
            with pytest.raises(ClientError) as e:
                bedrock.list_provisioned_model_throughputs(**bad)
            assert harness.error_code(e.value) == "ValidationException", bad
    finally:
        for arn in arns:
            bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)


def test_update_renames_and_refuses_a_new_base_model(bedrock, runtime):
    arn = create(bedrock, "pt-old-name")
    bedrock.update_provisioned_model_throughput(provisionedModelId="pt-old-name",
                                                desiredProvisionedModelName="pt-new-name")
    got = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
    assert got["provisionedModelName"] == "pt-new-name"
    assert got["lastModifiedTime"] >= got["creationTime"]
    with pytest.raises(ClientError) as e:
        bedrock.get_provisioned_model_throughput(provisionedModelId="pt-old-name")
    assert harness.error_code(e.value) == "ResourceNotFoundException"
    by_new_name = arn.rsplit("/", 1)[0] + "/pt-new-name"
    assert claude_text(runtime.invoke_model(modelId=by_new_name, body=json.dumps(CLAUDE_BODY))).strip()
    with pytest.raises(ClientError) as e:
        bedrock.update_provisioned_model_throughput(provisionedModelId=arn, desiredModelId=SONNET)
    assert harness.error_code(e.value) == "ValidationException"
    other = create(bedrock, "pt-taken")
    with pytest.raises(ClientError) as e:
        bedrock.update_provisioned_model_throughput(provisionedModelId=arn,
                                                    desiredProvisionedModelName="pt-taken")
    assert harness.error_code(e.value) == "ValidationException"
    for a in (arn, other):
        bedrock.delete_provisioned_model_throughput(provisionedModelId=a)


def test_delete_then_gone_everywhere(bedrock, runtime):
    arn = create(bedrock, "pt-delete")
    assert claude_text(runtime.invoke_model(modelId=arn, body=json.dumps(CLAUDE_BODY))).strip()
    bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
    with pytest.raises(ClientError) as e:
        bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
    assert harness.error_code(e.value) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
    assert harness.error_code(e.value) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        runtime.invoke_model(modelId=arn, body=json.dumps(CLAUDE_BODY))
    assert harness.error_code(e.value) == "ResourceNotFoundException"
    assert harness.http_status(e.value) == 404


def test_commitment_term_blocks_delete(bedrock):
    arn = create(bedrock, "pt-committed", commitmentDuration="OneMonth")
    got = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
    assert got["commitmentDuration"] == "OneMonth"
    days = (got["commitmentExpirationTime"] - got["creationTime"]).days
    assert 28 <= days <= 31, days
    with pytest.raises(ClientError) as e:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
    assert harness.error_code(e.value) == "ConflictException"


def test_quota_on_throughputs_and_units(bedrock):
    existing = bedrock.list_provisioned_model_throughputs()["provisionedModelSummaries"]
    used = sum(s["modelUnits"] for s in existing)
    with pytest.raises(ClientError) as e:
        create(bedrock, "pt-too-many-units", units=MAX_UNITS - used + 1)
    assert harness.error_code(e.value) == "ServiceQuotaExceededException"
    assert harness.http_status(e.value) == 400
    made = [create(bedrock, f"pt-fill-{i}") for i in range(MAX_THROUGHPUTS - len(existing))]
    try:
        with pytest.raises(ClientError) as e:
            create(bedrock, "pt-one-too-many")
        assert harness.error_code(e.value) == "ServiceQuotaExceededException"
    finally:
        for arn in made:
            bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)


# ---------------------------------------------------------------------- runtime through the ARN
@pytest.fixture(scope="module")
def pt_arn(srv, bedrock):
    arn = create(bedrock, "pt-runtime")
    yield arn
    # A fresh client: the server may have restarted on another port since.
    srv.client("bedrock").delete_provisioned_model_throughput(provisionedModelId=arn)


def test_every_runtime_operation_takes_the_arn(runtime, pt_arn):
    by_name = pt_arn.rsplit("/", 1)[0] + "/pt-runtime"
    for model_id in (pt_arn, by_name):
        assert claude_text(runtime.invoke_model(modelId=model_id, body=json.dumps(CLAUDE_BODY))).strip()
        chunks = harness.stream_chunks(runtime.invoke_model_with_response_stream(
            modelId=model_id, body=json.dumps(CLAUDE_BODY)))
        assert chunks[-1]["type"] == "message_stop"
        assert "amazon-bedrock-invocationMetrics" in chunks[-1]
        messages = [{"role": "user", "content": [{"text": "Say hi."}]}]
        r = runtime.converse(modelId=model_id, messages=messages, inferenceConfig={"maxTokens": 8})
        assert r["output"]["message"]["content"][0]["text"].strip()
        assert r["usage"]["outputTokens"] > 0
        events = harness.stream_events(runtime.converse_stream(
            modelId=model_id, messages=messages, inferenceConfig={"maxTokens": 8}))
        assert events[0][0] == "messageStart" and events[-1][0] == "metadata"


def test_unknown_provisioned_arn_is_not_found(runtime):
    for arn in ["arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdefabcdef",
                "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/nobody-made-this"]:
        for call in (lambda: runtime.invoke_model(modelId=arn, body=json.dumps(CLAUDE_BODY)),
                     lambda: runtime.converse(modelId=arn, messages=[
                         {"role": "user", "content": [{"text": "hi"}]}])):
            with pytest.raises(ClientError) as e:
                call()
            assert harness.error_code(e.value) == "ResourceNotFoundException"
            assert harness.http_status(e.value) == 404


def test_throughputs_survive_a_restart(srv, bedrock):
    """Last in the module: the restarted server listens on a new port."""
    arn = create(bedrock, "pt-restart")
    srv.stop()
    srv.start()
    fresh = srv.client("bedrock")
    got = fresh.get_provisioned_model_throughput(provisionedModelId=arn)
    assert got["provisionedModelName"] == "pt-restart" and got["status"] == "InService"
    r = srv.client("bedrock-runtime").invoke_model(modelId=arn, body=json.dumps(CLAUDE_BODY))
    assert claude_text(r).strip()
    fresh.delete_provisioned_model_throughput(provisionedModelId=arn)


# ---------------------------------------------------------------------- model units are capacity
# A server of its own with two decode slots: one model unit reserves one, so on-demand
# traffic has the other. On-demand quotas are off, so only slots limit the load.
@pytest.fixture(scope="module")
def two_slot_srv(start_server):
    return start_server("provisioned-slots", BASALT_BATCH_SLOTS="2", BASALT_MAX_QUEUE="8",
                        BASALT_NO_QUOTAS="true")


# Counting keeps the small model going for all its tokens (a story may end early).
LONG = [{"role": "user", "content": [{"text": "Count from 1 to 1000, one number per line."}]}]
SHORT = [{"role": "user", "content": [{"text": "Say hi."}]}]


def test_units_beyond_the_decode_slots_are_refused(two_slot_srv):
    bedrock = two_slot_srv.client("bedrock")
    with pytest.raises(ClientError) as e:
        create(bedrock, "pt-two-units", units=2)
    assert harness.error_code(e.value) == "ServiceQuotaExceededException"
    message = harness.error_message(e.value)
    assert "decode slots" in message and "--batch-slots" in message, message
    assert bedrock.list_provisioned_model_throughputs()["provisionedModelSummaries"] == []


def test_a_model_unit_keeps_its_slot_under_on_demand_load(two_slot_srv):
    """On-demand streams fill the shared slot and queue behind it; a call through the
    provisioned ARN starts at once in its reserved slot, while the same call on demand
    waits its turn in the line."""
    bedrock = two_slot_srv.client("bedrock")
    runtime = two_slot_srv.client("bedrock-runtime", read_timeout=300, max_pool_connections=8)
    arn = create(bedrock, "pt-slot")
    try:
        runtime.converse(modelId=arn, messages=SHORT, inferenceConfig={"maxTokens": 4})

        def long_stream():
            events = runtime.converse_stream(modelId=HAIKU, messages=LONG,
                                             inferenceConfig={"maxTokens": 300, "temperature": 0})
            for _ in events["stream"]:
                pass
            return time.perf_counter()

        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            longs = [pool.submit(long_stream) for _ in range(3)]
            time.sleep(1.5)  # one long stream decoding, two waiting for the shared slot
            t0 = time.perf_counter()
            peer = pool.submit(lambda: runtime.converse(
                modelId=HAIKU, messages=SHORT, inferenceConfig={"maxTokens": 8}))
            mine = runtime.converse(modelId=arn, messages=SHORT, inferenceConfig={"maxTokens": 8})
            mine_done = time.perf_counter()
            assert mine["output"]["message"]["content"][0]["text"].strip()
            peer.result()
            peer_done = time.perf_counter()
            ends = sorted(f.result() for f in longs)
        # The reserved call did not wait for any long stream; the on-demand one waited
        # for the whole line ahead of it (the reserved slot was idle, but not its to take).
        assert mine_done < ends[0], (mine_done - t0, [e - t0 for e in ends])
        assert peer_done > ends[2], (peer_done - t0, [e - t0 for e in ends])
        assert mine_done - t0 < (peer_done - t0) / 2
    finally:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
