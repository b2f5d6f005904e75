"""Error mapping, request validation, SigV4 authentication, keys CLI and admission throttling."""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import urllib.error
import urllib.request

import botocore.auth
import pytest
from botocore.exceptions import ClientError

import harness

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-text-express-v1"
INVALID_MODEL_MSG = "The provided model identifier is invalid."


def claude_body(**overrides):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 16,
            "messages": [{"role": "user", "content": "Hi"}]}
    body.update(overrides)
    return body


def expect_error(fn, code, status=None):
    with pytest.raises(ClientError) as exc:
        fn()
    err = exc.value
    assert harness.error_code(err) == code, err.response
    if status is not None:
        assert harness.http_status(err) == status, err.response
    return err


def invoke_raw(runtime, model_id, body: bytes | str, **kw):
    return runtime.invoke_model(modelId=model_id, contentType="application/json",
                                accept="application/json", body=body, **kw)


# ---------------------------------------------------------------------- health / request ids
def test_health_is_public(server):
    status, _ = server.health()
    assert status == 200


def test_request_id_on_success_and_error(runtime):
    ok = invoke_raw(runtime, TITAN, json.dumps({"inputText": "Hi",
                                                "textGenerationConfig": {"maxTokenCount": 4}}))
    assert ok["ResponseMetadata"]["RequestId"]
    assert ok["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-requestid")
    err = expect_error(lambda: invoke_raw(runtime, "acme.nope-v1", "{}"), "ValidationException", 400)
    assert err.response["ResponseMetadata"]["RequestId"]
    assert err.response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-requestid")
    assert err.response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-errortype", "").startswith(
        "ValidationException")


# ---------------------------------------------------------------------- model ids
@pytest.mark.parametrize("model_id", [
    "acme.not-a-model-v1:0",
    "anthropic.claude-99-v1:0",
    "arn:aws:bedrock:us-east-1::foundation-model/acme.not-a-model-v1:0",
])
def test_unknown_model_invoke(runtime, model_id):
    err = expect_error(lambda: invoke_raw(runtime, model_id, json.dumps(claude_body())),
                       "ValidationException", 400)
    assert harness.error_message(err) == INVALID_MODEL_MSG
    assert isinstance(err, runtime.exceptions.ValidationException)


def test_unknown_model_converse_and_streams(runtime):
    msgs = [{"role": "user", "content": [{"text": "Hi"}]}]
    for fn in (
        lambda: runtime.converse(modelId="acme.nope-v1", messages=msgs),
        lambda: runtime.converse_stream(modelId="acme.nope-v1", messages=msgs),
        lambda: runtime.invoke_model_with_response_stream(modelId="acme.nope-v1",
                                                          body=json.dumps(claude_body())),
    ):
        err = expect_error(fn, "ValidationException", 400)
        assert harness.error_message(err) == INVALID_MODEL_MSG


def test_embedding_model_is_not_a_chat_model(runtime):
    expect_error(lambda: runtime.converse(
        modelId="amazon.titan-embed-text-v2:0",
        messages=[{"role": "user", "content": [{"text": "Hi"}]}]), "ValidationException", 400)


# ---------------------------------------------------------------------- body validation
def test_bad_json(runtime):
    expect_error(lambda: invoke_raw(runtime, CLAUDE, b'{"anthropic_version": "bedrock-2023'),
                 "ValidationException", 400)


def test_body_not_an_object(runtime):
    expect_error(lambda: invoke_raw(runtime, CLAUDE, b"[1, 2, 3]"), "ValidationException", 400)


def test_empty_body(runtime):
    expect_error(lambda: invoke_raw(runtime, CLAUDE, b""), "ValidationException", 400)


@pytest.mark.parametrize("field,value", [
    ("max_tokens", "ten"),
    ("max_tokens", 1.5),
    ("temperature", "hot"),
    ("messages", "Hi"),
])
def test_wrong_field_type_names_field(runtime, field, value):
    err = expect_error(lambda: invoke_raw(runtime, CLAUDE, json.dumps(claude_body(**{field: value}))),
                       "ValidationException", 400)
    assert field in harness.error_message(err)


def test_titan_wrong_type_names_field(runtime):
    body = {"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": "many"}}
    err = expect_error(lambda: invoke_raw(runtime, TITAN, json.dumps(body)), "ValidationException", 400)
    assert "maxTokenCount" in harness.error_message(err)


def test_missing_max_tokens(runtime):
    body = claude_body()
    del body["max_tokens"]
    err = expect_error(lambda: invoke_raw(runtime, CLAUDE, json.dumps(body)), "ValidationException", 400)
    assert "max_tokens" in harness.error_message(err)


def test_missing_anthropic_version(runtime):
    body = claude_body()
    del body["anthropic_version"]
    err = expect_error(lambda: invoke_raw(runtime, CLAUDE, json.dumps(body)), "ValidationException", 400)
    assert "anthropic_version" in harness.error_message(err)


def test_missing_titan_input_text(runtime):
    err = expect_error(lambda: invoke_raw(runtime, TITAN, json.dumps(
        {"textGenerationConfig": {"maxTokenCount": 4}})), "ValidationException", 400)
    assert "inputText" in harness.error_message(err)


def test_anthropic_temperature_out_of_range(runtime):
    expect_error(lambda: invoke_raw(runtime, CLAUDE, json.dumps(claude_body(temperature=5))),
                 "ValidationException", 400)


def test_converse_temperature_out_of_range(runtime):
    # botocore does not check the modelled maximum, so this reaches the server.
    expect_error(lambda: runtime.converse(
        modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
        inferenceConfig={"maxTokens": 8, "temperature": 5}), "ValidationException", 400)


def test_converse_top_p_out_of_range(runtime):
    expect_error(lambda: runtime.converse(
        modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
        inferenceConfig={"maxTokens": 8, "topP": 3}), "ValidationException", 400)


def test_converse_empty_messages(runtime):
    expect_error(lambda: runtime.converse(modelId=CLAUDE, messages=[],
                                          inferenceConfig={"maxTokens": 8}),
                 "ValidationException", 400)


def test_converse_stream_empty_messages(runtime):
    expect_error(lambda: runtime.converse_stream(modelId=CLAUDE, messages=[],
                                                 inferenceConfig={"maxTokens": 8}),
                 "ValidationException", 400)


def test_oversized_body(server):
    """A 26,000,000-byte body is over the 25,000,000-byte InvokeModel limit."""
    client = server.client("bedrock-runtime", read_timeout=300)
    head, tail = b'{"inputText": "', b'"}'
    body = head + b"a" * (26_000_000 - len(head) - len(tail)) + tail
    assert len(body) == 26_000_000
    err = expect_error(lambda: client.invoke_model(modelId=TITAN, contentType="application/json",
                                                   body=body), "ValidationException")
    assert harness.http_status(err) in (400, 413)
    assert server.alive()


def test_invoke_without_content_type(runtime):
    """boto3 sends no Content-Type for the InvokeModel payload when contentType is omitted."""
    seen = []
    handler = lambda request, **kw: seen.append(dict(request.headers))  # noqa: E731
    runtime.meta.events.register("before-send.bedrock-runtime.InvokeModel", handler)
    try:
        resp = runtime.invoke_model(modelId=TITAN, body=json.dumps(
            {"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": 8}}))
    finally:
        runtime.meta.events.unregister("before-send.bedrock-runtime.InvokeModel", handler)
    assert seen and not any(k.lower() == "content-type" for k in seen[0])
    assert json.loads(resp["body"].read())["results"][0]["outputText"] is not None
    assert resp["contentType"] == "application/json"


# ---------------------------------------------------------------------- images
PNG = harness.make_png(16, 16)
PNG_B64 = base64.b64encode(PNG).decode()


def claude_image_body(media_type, data):
    return claude_body(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}},
        {"type": "text", "text": "What is this?"}]}])


def test_valid_image_rejected_with_clear_message(runtime):
    err = expect_error(lambda: invoke_raw(runtime, CLAUDE, json.dumps(claude_image_body("image/png", PNG_B64))),
                       "ValidationException", 400)
    assert "image" in harness.error_message(err).lower()


@pytest.mark.parametrize("media_type,data", [
    ("image/png", "!!! this is not base64 !!!"),
    ("image/jpeg", PNG_B64),                      # media type does not match the bytes
    ("image/bmp", PNG_B64),                       # unsupported media type
    ("image/png", base64.b64encode(b"definitely not a png").decode()),
])
def test_invalid_image_rejected(runtime, media_type, data):
    expect_error(lambda: invoke_raw(runtime, CLAUDE, json.dumps(claude_image_body(media_type, data))),
                 "ValidationException", 400)


def test_converse_image_rejected(runtime):
    err = expect_error(lambda: runtime.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": PNG}}},
        {"text": "What is this?"}]}], inferenceConfig={"maxTokens": 8}), "ValidationException", 400)
    assert "image" in harness.error_message(err).lower()


def test_converse_image_format_mismatch_rejected(runtime):
    expect_error(lambda: runtime.converse(modelId=CLAUDE, messages=[{"role": "user", "content": [
        {"image": {"format": "jpeg", "source": {"bytes": PNG}}},
        {"text": "What is this?"}]}], inferenceConfig={"maxTokens": 8}), "ValidationException", 400)


def test_nova_invoke_image_rejected(runtime):
    body = {"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": PNG_B64}}}, {"text": "What is this?"}]}],
        "inferenceConfig": {"maxTokens": 8}}
    err = expect_error(lambda: invoke_raw(runtime, "amazon.nova-micro-v1:0", json.dumps(body)),
                       "ValidationException", 400)
    assert "image" in harness.error_message(err).lower()


# ---------------------------------------------------------------------- SigV4
def test_unknown_access_key(server):
    client = server.client(access_key_id=harness.random_access_key_id(),
                           secret_access_key=harness.random_secret_access_key())
    err = expect_error(lambda: invoke_raw(client, TITAN, json.dumps({"inputText": "Hi"})),
                       "UnrecognizedClientException", 403)
    assert err.response["ResponseMetadata"]["RequestId"]


def test_wrong_secret(server):
    client = server.client(secret_access_key=harness.random_secret_access_key())
    expect_error(lambda: invoke_raw(client, TITAN, json.dumps({"inputText": "Hi"})),
                 "InvalidSignatureException", 403)


def test_wrong_secret_control_plane(server):
    client = server.client("bedrock", secret_access_key=harness.random_secret_access_key())
    expect_error(lambda: client.list_foundation_models(), "InvalidSignatureException", 403)


def test_unknown_key_streaming(server):
    client = server.client(access_key_id=harness.random_access_key_id())
    expect_error(lambda: client.converse_stream(
        modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Hi"}]}]),
        "UnrecognizedClientException", 403)


def test_signature_expired(server, monkeypatch):
    real = botocore.auth.get_current_datetime

    def twenty_minutes_ago(*args, **kwargs):
        return real(*args, **kwargs) - datetime.timedelta(minutes=20)

    monkeypatch.setattr(botocore.auth, "get_current_datetime", twenty_minutes_ago)
    client = server.client()
    err = expect_error(lambda: invoke_raw(client, TITAN, json.dumps({"inputText": "Hi"})),
                       "InvalidSignatureException", 403)
    assert harness.error_message(err).startswith("Signature expired")


def test_tampered_body_fails_signature(server):
    client = server.client()

    def tamper(request, **kwargs):
        request.body = b'{"inputText": "tampered"}'
        request.headers["Content-Length"] = str(len(request.body))

    client.meta.events.register("before-send.bedrock-runtime.InvokeModel", tamper)
    expect_error(lambda: invoke_raw(client, TITAN, json.dumps({"inputText": "original!"})),
                 "InvalidSignatureException", 403)


def test_unsigned_request_rejected(server):
    req = urllib.request.Request(
        f"{server.url}/model/{TITAN}/invoke", method="POST",
        data=json.dumps({"inputText": "Hi"}).encode(), headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as exc:
        opener.open(req, timeout=30)
    assert exc.value.code == 403
    assert exc.value.headers.get("x-amzn-RequestId")


# ---------------------------------------------------------------------- keys CLI
def _parse_exports(stdout: str) -> dict:
    lines = [l for l in stdout.splitlines() if l.strip()]
    assert len(lines) == 2, f"expected two export lines, got: {stdout!r}"
    out = {}
    for line in lines:
        assert line.startswith("export "), line
        name, _, value = line[len("export "):].partition("=")
        out[name] = value.strip().strip("'\"")
    assert set(out) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    return out


def _wait_until(predicate, timeout=10.0, interval=0.25):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def test_keys_create_list_delete_round_trip(server):
    data_dir = str(server.data_dir)
    creds = _parse_exports(server.cli("keys", "create", "--data-dir", data_dir).stdout)
    akid, secret = creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"]
    assert akid and secret and akid != server.access_key_id

    listed = server.cli("keys", "list", "--data-dir", data_dir).stdout.split()
    assert akid in listed

    client = server.client(access_key_id=akid, secret_access_key=secret)
    body = json.dumps({"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": 4}})

    def works():
        try:
            invoke_raw(client, TITAN, body)
            return True
        except ClientError as e:
            if harness.error_code(e) == "UnrecognizedClientException":
                return False
            raise

    assert _wait_until(works), "the running server did not pick up the new key"
    # The control plane accepts the same key.
    assert server.client("bedrock", access_key_id=akid, secret_access_key=secret) \
        .list_foundation_models()["modelSummaries"]

    server.cli("keys", "delete", "--data-dir", data_dir, akid)
    assert akid not in server.cli("keys", "list", "--data-dir", data_dir).stdout.split()
    assert _wait_until(lambda: not works()), "the running server still accepts a deleted key"
    expect_error(lambda: invoke_raw(client, TITAN, body), "UnrecognizedClientException", 403)

    # The root key is unaffected.
    assert invoke_raw(server.client(), TITAN, body)["ResponseMetadata"]["HTTPStatusCode"] == 200


# ---------------------------------------------------------------------- throttling
def test_throttling_when_queue_full(queue1_server):
    n = 12
    clients = [queue1_server.client("bedrock-runtime", max_attempts=1, read_timeout=300)
               for _ in range(n)]
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
                       "temperature": 1.0,
                       "messages": [{"role": "user", "content":
                                     "Write a long story about a dragon who learns to bake bread."}]})
    barrier = threading.Barrier(n)
    outcomes: list = [None] * n

    def worker(i):
        barrier.wait()
        try:
            clients[i].invoke_model(modelId=CLAUDE, contentType="application/json", body=body)
            outcomes[i] = "ok"
        except ClientError as e:
            outcomes[i] = e
        except Exception as e:  # noqa: BLE001
            outcomes[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert all(o is not None for o in outcomes), outcomes

    throttled = [o for o in outcomes if isinstance(o, ClientError)
                 and harness.error_code(o) == "ThrottlingException"]
    others = [o for o in outcomes if o != "ok" and o not in throttled]
    assert not others, f"unexpected failures: {others}"
    assert throttled, "no request was throttled with BASALT_MAX_QUEUE=1"
    assert outcomes.count("ok") >= 1
    for e in throttled:
        assert harness.http_status(e) == 429
        # Each client has its own modelled exception classes; compare by name.
        assert type(e).__name__ == "ThrottlingException"
        assert e.response["ResponseMetadata"]["RequestId"]

    # The server recovers once the queue drains.
    r = clients[0].converse(modelId=TITAN, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                            inferenceConfig={"maxTokens": 4})
    assert r["usage"]["outputTokens"] > 0
