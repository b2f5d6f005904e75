"""ModelTimeoutException past the generation time limit, ModelNotReadyException from
lazy loading and idle unloading (then success on retry), a provisioned throughput's
Creating -> InService transition while its model loads, and the seed's BedrockInvoker
driven through its throttling, not-ready, validation and other branches.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError, EventStreamError

import harness

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
IDLE_S = 2.0


def claude_body(max_tokens=4, text="Say hi."):
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}]}


def wait_until(predicate, timeout=60.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


# ---------------------------------------------------------------------- ModelTimeoutException
@pytest.fixture(scope="module")
def timeout_server(start_server):
    return start_server("timeout", BASALT_MODEL_TIMEOUT_S="1.5", BASALT_PROMPT_CACHE_MIB="0")


LONG = "Write a very long story about a lighthouse keeper, with many chapters."


def times_out(call) -> ClientError:
    """The error of a generation that ran past the 1.5 s limit. The model may end a
    reply by itself before the limit (it samples); such a call must then have finished
    inside the limit, and the request is tried again."""
    for _ in range(5):
        started = time.monotonic()
        try:
            call()
        except ClientError as e:
            assert time.monotonic() - started < 10
            return e
        assert time.monotonic() - started < 10, "a reply past the limit was not cut off"
    raise AssertionError("five replies in a row ended by themselves inside 1.5 s")


def test_generation_over_the_limit_times_out(timeout_server):
    client = timeout_server.client("bedrock-runtime")
    e = times_out(lambda: client.invoke_model(modelId=HAIKU, body=json.dumps(claude_body(2000, LONG))))
    assert harness.error_code(e) == "ModelTimeoutException"
    assert harness.http_status(e) == 408
    e = times_out(lambda: client.converse(modelId=HAIKU, messages=[{"role": "user", "content": [{"text": LONG}]}],
                                          inferenceConfig={"maxTokens": 2000}))
    assert harness.error_code(e) == "ModelTimeoutException"
    # Short generations finish well inside the limit.
    r = client.invoke_model(modelId=HAIKU, body=json.dumps(claude_body(2)))
    assert json.loads(r["body"].read())["content"]


def test_streams_end_with_an_in_stream_timeout(timeout_server):
    client = timeout_server.client("bedrock-runtime")
    # times_out catches EventStreamError too: botocore makes it a ClientError.
    e = times_out(lambda: harness.stream_events(client.converse_stream(
        modelId=HAIKU, messages=[{"role": "user", "content": [{"text": LONG}]}],
        inferenceConfig={"maxTokens": 2000})))
    assert isinstance(e, EventStreamError)
    # ConverseStream's union has no modelTimeoutException member. botocore reports an
    # in-stream error by its member name.
    assert e.response["Error"]["Code"] == "modelStreamErrorException"
    assert "timed out" in e.response["Error"]["Message"]
    e = times_out(lambda: harness.stream_chunks(client.invoke_model_with_response_stream(
        modelId=HAIKU, body=json.dumps(claude_body(2000, LONG)))))
    assert isinstance(e, EventStreamError)
    assert e.response["Error"]["Code"] == "modelTimeoutException"


# ---------------------------------------------------------------------- lazy load, idle unload
@pytest.fixture(scope="module")
def idle_server(start_server):
    return start_server("idle", BASALT_LAZY_LOAD="1", BASALT_IDLE_UNLOAD_S=str(IDLE_S))


def loaded_models(srv) -> set[str]:
    """Local models resident now, as /metrics reports them."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(srv.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    loaded = set()
    for line in text.splitlines():
        if line.startswith("basalt_model_loaded{"):
            name = line.split('model="')[1].split('"')[0]
            if line.rsplit(" ", 1)[1] == "1":
                loaded.add(name)
    return loaded


def test_lazy_then_idle_unload_gives_not_ready_then_success(idle_server):
    client = idle_server.client("bedrock-runtime")  # no retries
    body = json.dumps(claude_body())
    assert loaded_models(idle_server) == set(), "lazy: nothing loaded at start"
    with pytest.raises(ClientError) as e:
        client.invoke_model(modelId=HAIKU, body=body)
    assert harness.error_code(e.value) == "ModelNotReadyException"
    assert harness.http_status(e.value) == 429
    assert wait_until(lambda: loaded_models(idle_server) != set())
    assert json.loads(client.invoke_model(modelId=HAIKU, body=body)["body"].read())["content"]

    assert wait_until(lambda: loaded_models(idle_server) == set(), timeout=IDLE_S * 5), \
        "the model should unload after being idle"
    with pytest.raises(ClientError) as e:
        client.invoke_model(modelId=HAIKU, body=body)
    assert harness.error_code(e.value) == "ModelNotReadyException"
    # botocore's standard mode retries ModelNotReadyException (a modeled retryable error).
    retrying = idle_server.client("bedrock-runtime", max_attempts=8)
    r = retrying.invoke_model(modelId=HAIKU, body=body)
    assert json.loads(r["body"].read())["content"]


def test_provisioned_throughput_goes_creating_to_in_service_and_pins(idle_server):
    bedrock = idle_server.client("bedrock")
    assert wait_until(lambda: loaded_models(idle_server) == set(), timeout=IDLE_S * 5)
    arn = bedrock.create_provisioned_model_throughput(
        modelId=HAIKU, provisionedModelName="pinned", modelUnits=1)["provisionedModelArn"]
    try:
        first = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)["status"]
        assert first in ("Creating", "InService")
        statuses = []
        assert wait_until(lambda: statuses.append(
            bedrock.get_provisioned_model_throughput(provisionedModelId=arn)["status"])
            or statuses[-1] == "InService")
        assert first == "Creating", "creating it started the model's load, which takes a while"
        # Pinned: it stays loaded well past the idle time.
        time.sleep(IDLE_S * 2)
        assert loaded_models(idle_server) != set()
        client = idle_server.client("bedrock-runtime")
        r = client.invoke_model(modelId=arn, body=json.dumps(claude_body()))
        assert json.loads(r["body"].read())["content"]
    finally:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
    assert wait_until(lambda: loaded_models(idle_server) == set(), timeout=IDLE_S * 5), \
        "unpinned once deleted, it unloads when idle"


# ---------------------------------------------------------------------- the seed's BedrockInvoker
class SleepLog:
    """Stands in for the ``time`` module inside seed_patterns: records each sleep and
    really sleeps, so the server sees the waits the class means to make."""

    def __init__(self):
        self.sleeps: list[float] = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        time.sleep(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def invoker_for(tmp_path_factory, monkeypatch):
    """Builds the seed's BedrockInvoker against a given server, with botocore's own
    retries off (AWS_MAX_ATTEMPTS=1), so every error reaches the class's branches."""
    saved_envs = []
    cached = sys.modules.pop("seed_patterns", None)
    log = SleepLog()

    def make(srv, model_id=HAIKU):
        saved_envs.append(harness.apply_client_env(srv, tmp_path_factory.mktemp("aws-env")))
        import os
        os.environ["AWS_MAX_ATTEMPTS"] = "1"
        seed = importlib.import_module("seed_patterns")
        monkeypatch.setattr(seed, "time", log)
        return seed.BedrockInvoker(model_id), log

    yield make
    for saved in reversed(saved_envs):
        harness.restore_env(saved)
    sys.modules.pop("seed_patterns", None)
    if cached is not None:
        sys.modules["seed_patterns"] = cached


@pytest.fixture(scope="module")
def throttle_server(start_server):
    return start_server("invoker-rpm", BASALT_REQUESTS_PER_MINUTE="20")  # one back every 3 s


def exhaust(srv):
    client = srv.client("bedrock-runtime")
    for _ in range(100):
        try:
            client.invoke_model(modelId=HAIKU, body=json.dumps(claude_body(1)))
        except ClientError as e:
            assert harness.error_code(e) == "ThrottlingException"
            return
    pytest.fail("never throttled")


def test_invoker_throttling_backs_off_then_succeeds(throttle_server, invoker_for):
    invoker, log = invoker_for(throttle_server)
    exhaust(throttle_server)
    result = invoker.invoke(claude_body(), max_retries=3)
    assert result["content"][0]["type"] == "text"
    # Throttled at least once; each wait is 2**attempt plus up to a second.
    assert 1 <= len(log.sleeps) <= 2, log.sleeps
    for attempt, waited in enumerate(log.sleeps):
        assert 2 ** attempt <= waited < 2 ** attempt + 1, log.sleeps


def test_invoker_gives_up_after_max_retries(throttle_server, invoker_for):
    invoker, log = invoker_for(throttle_server)
    exhaust(throttle_server)
    with pytest.raises(ClientError) as e:
        invoker.invoke(claude_body(), max_retries=1)
    assert harness.error_code(e.value) == "ThrottlingException"
    assert len(log.sleeps) == 1 and 1 <= log.sleeps[0] < 2, log.sleeps


def test_invoker_validation_is_raised_at_once(throttle_server, invoker_for):
    invoker, log = invoker_for(throttle_server)
    with pytest.raises(ClientError) as e:
        invoker.invoke({"anthropic_version": "bedrock-2023-05-31",
                        "messages": [{"role": "user", "content": "hi"}]})  # no max_tokens
    assert harness.error_code(e.value) == "ValidationException"
    assert log.sleeps == []


def test_invoker_other_errors_are_raised_at_once(throttle_server, invoker_for):
    invoker, log = invoker_for(
        throttle_server, "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/none-here")
    with pytest.raises(ClientError) as e:
        invoker.invoke(claude_body())
    assert harness.error_code(e.value) == "ResourceNotFoundException"
    assert log.sleeps == []


def test_invoker_waits_five_seconds_for_a_model_that_is_not_ready(idle_server, invoker_for):
    assert wait_until(lambda: loaded_models(idle_server) == set(), timeout=IDLE_S * 5)
    invoker, log = invoker_for(idle_server)
    result = invoker.invoke(claude_body(), max_retries=3)
    assert result["content"][0]["type"] == "text"
    assert log.sleeps == [5], log.sleeps
