"""Control plane (ListFoundationModels / GetFoundationModel), model identifier forms,
CountTokens, and the AWS CLI v1 against the same endpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from botocore.exceptions import ClientError

import harness

SEED_MODEL_IDS = [
    "anthropic.claude-3-sonnet-20240229-v1:0",
    "amazon.titan-text-express-v1",
    "amazon.titan-embed-text-v2:0",
    "meta.llama3-70b-instruct-v1:0",
    "mistral.mistral-large-2402-v1:0",
]
OTHER_MODEL_IDS = [
    "anthropic.claude-3-haiku-20240307-v1:0",
    "amazon.titan-text-lite-v1",
    "amazon.titan-embed-text-v1",
    "cohere.embed-english-v3",
    "meta.llama3-8b-instruct-v1:0",
    "mistral.mistral-7b-instruct-v0:2",
    "mistral.mistral-large-2407-v1:0",
    "amazon.nova-micro-v1:0",
    "cohere.command-r-v1:0",
]
EMBEDDING_IDS = {"amazon.titan-embed-text-v2:0", "amazon.titan-embed-text-v1", "cohere.embed-english-v3"}
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
HAIKU_ARN = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
PROFILE_ID = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
ARN_RE = re.compile(r"^arn:aws:bedrock:[a-z0-9-]+::foundation-model/(?P<id>.+)$")


# ---------------------------------------------------------------------- catalog
def test_list_foundation_models(control):
    resp = control.list_foundation_models()
    summaries = resp["modelSummaries"]
    assert summaries
    by_id = {s["modelId"]: s for s in summaries}
    assert len(by_id) == len(summaries), "duplicate modelIds"
    for model_id in SEED_MODEL_IDS + OTHER_MODEL_IDS:
        assert model_id in by_id, f"{model_id} missing from ListFoundationModels"
    for s in summaries:
        m = ARN_RE.match(s["modelArn"])
        assert m and m.group("id") == s["modelId"], s["modelArn"]
        assert isinstance(s["providerName"], str) and s["providerName"]
        assert s["inputModalities"] and set(s["inputModalities"]) <= {"TEXT", "IMAGE", "EMBEDDING",
                                                                       "SPEECH", "VIDEO"}
        assert s["outputModalities"] and set(s["outputModalities"]) <= {"TEXT", "IMAGE", "EMBEDDING",
                                                                         "SPEECH", "VIDEO"}
        assert isinstance(s.get("responseStreamingSupported", False), bool)
        assert "ON_DEMAND" in s["inferenceTypesSupported"]
    for model_id in EMBEDDING_IDS:
        s = by_id[model_id]
        assert "EMBEDDING" in s["outputModalities"]
        assert not s.get("responseStreamingSupported", False)
    claude = by_id[HAIKU]
    assert claude["providerName"] == "Anthropic"
    assert claude["outputModalities"] == ["TEXT"]
    assert claude["responseStreamingSupported"] is True


def test_list_foundation_models_by_output_modality(control):
    summaries = control.list_foundation_models(byOutputModality="EMBEDDING")["modelSummaries"]
    ids = {s["modelId"] for s in summaries}
    assert EMBEDDING_IDS <= ids
    assert all("EMBEDDING" in s["outputModalities"] for s in summaries)


@pytest.mark.parametrize("model_id", SEED_MODEL_IDS + [HAIKU, "amazon.nova-micro-v1:0"])
def test_get_foundation_model(control, model_id):
    details = control.get_foundation_model(modelIdentifier=model_id)["modelDetails"]
    assert details["modelId"] == model_id
    assert ARN_RE.match(details["modelArn"]).group("id") == model_id
    assert details["providerName"]
    assert details["inputModalities"] and details["outputModalities"]


def test_get_foundation_model_by_arn(control):
    details = control.get_foundation_model(modelIdentifier=HAIKU_ARN)["modelDetails"]
    assert details["modelId"] == HAIKU


def test_get_unknown_foundation_model(control):
    with pytest.raises(ClientError) as exc:
        control.get_foundation_model(modelIdentifier="acme.not-a-model-v1:0")
    assert harness.error_code(exc.value) == "ResourceNotFoundException"
    assert harness.http_status(exc.value) == 404
    assert isinstance(exc.value, control.exceptions.ResourceNotFoundException)


# ---------------------------------------------------------------------- identifier forms
@pytest.mark.parametrize("model_id", [HAIKU, HAIKU_ARN, PROFILE_ID,
                                      "arn:aws:bedrock:us-west-2::foundation-model/" + HAIKU])
def test_identifier_forms_invoke(runtime, model_id):
    resp = runtime.invoke_model(modelId=model_id, contentType="application/json", body=json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hi."}]}))
    r = harness.read_json_body(resp)
    assert r["type"] == "message" and r["content"][0]["text"].strip()


@pytest.mark.parametrize("model_id", [HAIKU_ARN, PROFILE_ID])
def test_identifier_forms_converse(runtime, model_id):
    seen_urls = []
    handler = lambda request, **kw: seen_urls.append(request.url)  # noqa: E731
    runtime.meta.events.register("before-send.bedrock-runtime.Converse", handler)
    try:
        r = runtime.converse(modelId=model_id,
                             messages=[{"role": "user", "content": [{"text": "Say hi."}]}],
                             inferenceConfig={"maxTokens": 16})
    finally:
        runtime.meta.events.unregister("before-send.bedrock-runtime.Converse", handler)
    assert r["output"]["message"]["content"][0]["text"].strip()
    # boto3 percent-encodes ':' and '/' inside the label; the server must decode them.
    assert "%3A" in seen_urls[0]
    if model_id.startswith("arn:"):
        assert "%2F" in seen_urls[0]


@pytest.mark.parametrize("model_id", [HAIKU_ARN, PROFILE_ID])
def test_identifier_forms_streams(runtime, model_id):
    events = harness.stream_events(runtime.converse_stream(
        modelId=model_id, messages=[{"role": "user", "content": [{"text": "Say hi."}]}],
        inferenceConfig={"maxTokens": 8}))
    assert events[0][0] == "messageStart" and events[-1][0] == "metadata"
    chunks = harness.stream_chunks(runtime.invoke_model_with_response_stream(
        modelId=model_id, contentType="application/json", body=json.dumps({
            "anthropic_version": "bedrock-2023-05-31", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hi."}]})))
    assert chunks[0]["type"] == "message_start" and chunks[-1]["type"] == "message_stop"


# ---------------------------------------------------------------------- CountTokens
MESSAGES = [
    {"role": "user", "content": [{"text": "What is the capital of France?"}]},
    {"role": "assistant", "content": [{"text": "Paris."}]},
    {"role": "user", "content": [{"text": "And of Germany?"}]},
]
SYSTEM = [{"text": "You are a geography tutor. Be concise."}]


def test_count_tokens_converse_matches_converse_usage(runtime):
    counted = runtime.count_tokens(modelId=HAIKU, input={"converse": {
        "messages": MESSAGES, "system": SYSTEM}})["inputTokens"]
    assert isinstance(counted, int) and counted > 0
    used = runtime.converse(modelId=HAIKU, messages=MESSAGES, system=SYSTEM,
                            inferenceConfig={"maxTokens": 8})["usage"]["inputTokens"]
    assert counted == used


def test_count_tokens_grows_with_input(runtime):
    short = runtime.count_tokens(modelId=HAIKU, input={"converse": {
        "messages": MESSAGES[:1]}})["inputTokens"]
    longer = runtime.count_tokens(modelId=HAIKU, input={"converse": {
        "messages": MESSAGES, "system": SYSTEM}})["inputTokens"]
    assert 0 < short < longer


def test_count_tokens_invoke_model_body(runtime):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8,
            "system": "You are a geography tutor. Be concise.",
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    counted = runtime.count_tokens(modelId=HAIKU, input={"invokeModel": {
        "body": json.dumps(body).encode()}})["inputTokens"]
    assert isinstance(counted, int) and counted > 0
    resp = runtime.invoke_model(modelId=HAIKU, contentType="application/json", body=json.dumps(body))
    assert counted == harness.read_json_body(resp)["usage"]["input_tokens"]
    assert counted == int(resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"])


def test_count_tokens_unknown_model(runtime):
    with pytest.raises(ClientError) as exc:
        runtime.count_tokens(modelId="acme.nope-v1", input={"converse": {"messages": MESSAGES}})
    assert harness.error_code(exc.value) in ("ValidationException", "ResourceNotFoundException")


def test_count_tokens_bad_invoke_body(runtime):
    with pytest.raises(ClientError) as exc:
        runtime.count_tokens(modelId=HAIKU, input={"invokeModel": {"body": b"{not json"}})
    assert harness.error_code(exc.value) == "ValidationException"


# ---------------------------------------------------------------------- AWS CLI v1
@pytest.fixture(scope="module")
def aws_cli():
    path = harness.find_aws_cli()
    if path is None:
        pytest.skip("aws CLI not installed (pip install -r tests/integration/requirements.txt)")
    return path


@pytest.fixture(scope="module")
def binary_format_args(aws_cli):
    """``--cli-binary-format raw-in-base64-out`` exists only in AWS CLI v2; v1 (the pip
    package pinned in requirements.txt) already sends blob arguments raw and rejects the flag."""
    proc = subprocess.run([aws_cli, "--version"], capture_output=True, text=True, timeout=60)
    version = (proc.stdout + proc.stderr).strip()
    if version.startswith("aws-cli/1."):
        return []
    return ["--cli-binary-format", "raw-in-base64-out"]


def run_aws(aws_cli, *args, cwd=None):
    env = os.environ.copy()  # the `server` fixture put endpoint, keys and region here
    return subprocess.run([aws_cli, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=180)


def test_cli_invoke_model(server, aws_cli, binary_format_args, tmp_path):
    body = json.dumps({"inputText": "What is the capital of France?",
                       "textGenerationConfig": {"maxTokenCount": 32, "temperature": 0}})
    out = tmp_path / "out.json"
    proc = run_aws(aws_cli, "bedrock-runtime", "invoke-model",
                   "--model-id", "amazon.titan-text-express-v1",
                   "--body", body, *binary_format_args, str(out), cwd=tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    result = json.loads(out.read_text())
    assert isinstance(result["results"][0]["outputText"], str)
    assert result["results"][0]["outputText"].strip()
    printed = json.loads(proc.stdout)
    assert printed["contentType"] == "application/json"


def test_cli_invoke_model_arn_with_content_type(server, aws_cli, binary_format_args, tmp_path):
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "Say hi."}]})
    out = tmp_path / "claude.json"
    proc = run_aws(aws_cli, "bedrock-runtime", "invoke-model", "--model-id", HAIKU_ARN,
                   "--content-type", "application/json", "--accept", "application/json",
                   "--body", body, *binary_format_args, str(out), cwd=tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert json.loads(out.read_text())["content"][0]["text"].strip()


def test_cli_converse(server, aws_cli):
    proc = run_aws(aws_cli, "bedrock-runtime", "converse", "--model-id", HAIKU,
                   "--messages", json.dumps([{"role": "user", "content": [{"text": "Say hi."}]}]),
                   "--inference-config", json.dumps({"maxTokens": 16}))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    r = json.loads(proc.stdout)
    assert r["output"]["message"]["content"][0]["text"].strip()


def test_cli_list_foundation_models(server, aws_cli):
    proc = run_aws(aws_cli, "bedrock", "list-foundation-models")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    ids = {s["modelId"] for s in json.loads(proc.stdout)["modelSummaries"]}
    assert set(SEED_MODEL_IDS) <= ids


def test_cli_error_exit_code(server, aws_cli, binary_format_args, tmp_path):
    proc = run_aws(aws_cli, "bedrock-runtime", "invoke-model", "--model-id", "acme.nope-v1",
                   "--body", "{}", *binary_format_args, str(tmp_path / "x.json"), cwd=tmp_path)
    assert proc.returncode != 0
    assert "ValidationException" in proc.stderr
