"""On-demand quotas: requests per minute and tokens per minute per account and model,
ThrottlingException with Bedrock's messages past them, boto3's own retries recovering,
ServiceQuotaExceededException for a request no minute could hold, and provisioned
throughput bypassing them.

Each server here is started with tiny limits so that a minute's allowance runs out (and
comes back) in seconds.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import harness

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-text-express-v1"
RPM = 12  # one request back every 5 s
TPM = 300  # five tokens back a second
TOO_MANY_REQUESTS = "Too many requests, please wait before trying again."
TOO_MANY_TOKENS = "Too many tokens, please wait before trying again."


def claude_body(max_tokens=1, text="Say hi."):
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": text}]})


@pytest.fixture(scope="module")
def rpm_server(start_server):
    return start_server("quota-rpm", BASALT_REQUESTS_PER_MINUTE=str(RPM))


@pytest.fixture(scope="module")
def tpm_server(start_server):
    return start_server("quota-tpm", BASALT_TOKENS_PER_MINUTE=str(TPM))


def exhaust_requests(client, model_id=HAIKU, limit=4 * RPM):
    """Calls until the first ThrottlingException; returns (successes, the error)."""
    for n in range(limit):
        try:
            client.invoke_model(modelId=model_id, body=claude_body())
        except ClientError as e:
            return n, e
    pytest.fail(f"no throttling after {limit} requests at {RPM} requests per minute")


def recovers_after_throttling(plain, call):
    """Runs `call` right after the allowance runs out; returns its response, which must
    have taken at least one retry. A request trickles back every 5 s, so one can land
    in the few milliseconds between the refusal and the call; then the pair is run again
    (at most three times), since that call proves nothing about retries."""
    for _ in range(3):
        exhaust_requests(plain)
        r = call()
        if r["ResponseMetadata"]["RetryAttempts"] >= 1:
            return r
    pytest.fail("the call after a throttled one was never throttled itself, three times over")


def test_requests_per_minute_throttle_then_standard_retries_recover(rpm_server):
    plain = rpm_server.client("bedrock-runtime")  # max_attempts=1: no retries
    # Made before the allowance runs out: a request comes back every 5 s, and one made
    # after a slow client construction might not be throttled at all.
    retrying = rpm_server.client("bedrock-runtime", max_attempts=10)  # mode 'standard'
    served, err = exhaust_requests(plain)
    # A minute's allowance, plus what trickled back while the loop ran.
    assert RPM <= served <= RPM + 3, served
    assert harness.error_code(err) == "ThrottlingException"
    assert harness.error_message(err) == TOO_MANY_REQUESTS
    assert harness.http_status(err) == 429
    assert err.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ThrottlingException"

    started = time.monotonic()
    r = recovers_after_throttling(plain, lambda: retrying.invoke_model(modelId=HAIKU, body=claude_body()))
    assert json.loads(r["body"].read())["content"][0]["type"] == "text"
    assert time.monotonic() - started < 180


def test_adaptive_retries_recover_too(rpm_server):
    plain = rpm_server.client("bedrock-runtime")
    # Made first, so the call follows the throttled one at once.
    adaptive = boto3.session.Session().client(
        "bedrock-runtime", endpoint_url=rpm_server.url, region_name="us-east-1",
        aws_access_key_id=rpm_server.access_key_id,
        aws_secret_access_key=rpm_server.secret_access_key,
        config=Config(retries={"mode": "adaptive", "max_attempts": 10}))
    r = recovers_after_throttling(plain, lambda: adaptive.converse(
        modelId=HAIKU, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
        inferenceConfig={"maxTokens": 1}))
    assert r["stopReason"] in ("max_tokens", "end_turn")


def test_quotas_are_per_model(rpm_server):
    plain = rpm_server.client("bedrock-runtime")
    exhaust_requests(plain)
    body = json.dumps({"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": 1}})
    r = plain.invoke_model(modelId=TITAN, body=body)
    assert json.loads(r["body"].read())["results"]


def test_every_runtime_operation_is_metered(rpm_server):
    plain = rpm_server.client("bedrock-runtime")
    messages = [{"role": "user", "content": [{"text": "Hi"}]}]
    calls = {
        "InvokeModelWithResponseStream": lambda: plain.invoke_model_with_response_stream(
            modelId=HAIKU, body=claude_body()),
        "Converse": lambda: plain.converse(modelId=HAIKU, messages=messages,
                                           inferenceConfig={"maxTokens": 1}),
        "ConverseStream": lambda: plain.converse_stream(modelId=HAIKU, messages=messages,
                                                        inferenceConfig={"maxTokens": 1}),
    }
    for name, call in calls.items():
        exhaust_requests(plain)
        # The bucket refills continuously, so the last refusal can leave it a hair short
        # of one request that trickles back before the next call; the operation itself
        # must then be refused within a few calls.
        for _ in range(3):
            try:
                call()
            except ClientError as e:
                error = e
                break
        else:
            pytest.fail(f"{name} was never throttled: it is not metered")
        assert harness.error_code(error) == "ThrottlingException", name
        assert harness.error_message(error) == TOO_MANY_REQUESTS, name


def test_provisioned_throughput_bypasses_on_demand_quotas(rpm_server):
    bedrock = rpm_server.client("bedrock")
    arn = bedrock.create_provisioned_model_throughput(
        modelId=HAIKU, provisionedModelName="quota-bypass", modelUnits=1)["provisionedModelArn"]
    try:
        plain = rpm_server.client("bedrock-runtime")
        exhaust_requests(plain)
        started = time.monotonic()
        for _ in range(RPM + 2):  # more than a whole minute's on-demand allowance
            r = plain.invoke_model(modelId=arn, body=claude_body())
            assert json.loads(r["body"].read())["content"]
        # The on-demand bucket holds only what trickled back meanwhile (one per 5 s).
        served, err = exhaust_requests(plain)
        assert served <= (time.monotonic() - started) / (60 / RPM) + 1, served
        assert harness.error_code(err) == "ThrottlingException"
    finally:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)


def test_tokens_per_minute_reserve_max_tokens(tpm_server):
    plain = tpm_server.client("bedrock-runtime")
    messages = [{"role": "user", "content": [{"text": "Count from one to one hundred in words."}]}]
    # A stream holds its reservation (input + maxTokens) from its first byte to its end.
    held = plain.converse_stream(modelId=TITAN, messages=messages,
                                 inferenceConfig={"maxTokens": 200, "temperature": 0})
    try:
        with pytest.raises(ClientError) as e:
            plain.converse(modelId=TITAN, messages=messages, inferenceConfig={"maxTokens": 200})
        assert harness.error_code(e.value) == "ThrottlingException"
        assert harness.error_message(e.value) == TOO_MANY_TOKENS
        assert harness.http_status(e.value) == 429
        # Small enough to fit beside the held reservation: admitted.
        r = plain.converse(modelId=TITAN, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                           inferenceConfig={"maxTokens": 4})
        assert r["usage"]["outputTokens"] >= 1
    finally:
        events = harness.stream_events(held)
    usage = events[-1][1]["usage"]
    assert usage["totalTokens"] <= TPM

    # Once the stream ended, its unused allowance came back; retries get the rest.
    retrying = tpm_server.client("bedrock-runtime", max_attempts=10)
    r = retrying.converse(modelId=TITAN, messages=messages, inferenceConfig={"maxTokens": 200})
    assert r["usage"]["outputTokens"] >= 1


def test_request_bigger_than_a_minute_of_tokens_is_a_quota_error(tpm_server):
    plain = tpm_server.client("bedrock-runtime")
    with pytest.raises(ClientError) as e:
        plain.invoke_model(modelId=HAIKU, body=claude_body(max_tokens=TPM + 1))
    assert harness.error_code(e.value) == "ServiceQuotaExceededException"
    assert harness.http_status(e.value) == 400
    assert str(TPM) in harness.error_message(e.value)


def test_embeddings_count_their_input_tokens(tpm_server):
    plain = tpm_server.client("bedrock-runtime")
    long_text = " ".join(["token"] * 120)  # ~120 tokens each call, 300 a minute
    body = json.dumps({"inputText": long_text})
    outcomes = []
    for _ in range(4):
        try:
            plain.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=body)
            outcomes.append("ok")
        except ClientError as e:
            outcomes.append(harness.error_code(e))
            assert harness.error_message(e) == TOO_MANY_TOKENS
    assert outcomes[:2] == ["ok", "ok"], outcomes
    assert "ThrottlingException" in outcomes, outcomes
