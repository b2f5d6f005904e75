"""InvokeModelWithResponseStream chunk shapes per provider, and ConverseStream event order."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

import harness

PROMPT = "Name three colors."
LONG_Q = "Write a detailed, multi-paragraph essay about the history of the Roman Empire."
METRICS_KEY = "amazon-bedrock-invocationMetrics"


def stream_invoke(runtime, model_id, body):
    resp = runtime.invoke_model_with_response_stream(
        modelId=model_id, contentType="application/json", accept="application/json",
        body=json.dumps(body))
    assert resp["contentType"] == "application/json"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    return resp


def assert_metrics_only_on_last(chunks):
    assert chunks, "stream produced no chunks"
    for c in chunks[:-1]:
        assert METRICS_KEY not in c, f"invocation metrics on a non-final chunk: {c}"
    m = chunks[-1].get(METRICS_KEY)
    assert m is not None, f"last chunk lacks {METRICS_KEY}: {chunks[-1]}"
    assert isinstance(m["inputTokenCount"], int) and m["inputTokenCount"] > 0
    assert isinstance(m["outputTokenCount"], int) and m["outputTokenCount"] > 0
    assert isinstance(m["invocationLatency"], int) and m["invocationLatency"] >= 0
    assert isinstance(m["firstByteLatency"], int) and m["firstByteLatency"] >= 0
    assert m["firstByteLatency"] <= m["invocationLatency"]
    return m


# ---------------------------------------------------------------------- Anthropic
def test_stream_anthropic_messages(runtime):
    resp = stream_invoke(runtime, "anthropic.claude-3-haiku-20240307-v1:0", {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 32,
        "messages": [{"role": "user", "content": PROMPT}]})
    chunks = harness.stream_chunks(resp)
    types = [c["type"] for c in chunks]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert set(types) <= {"message_start", "content_block_start", "content_block_delta",
                          "content_block_stop", "message_delta", "message_stop", "ping"}
    start = chunks[0]["message"]
    assert start["id"].startswith("msg_") and start["role"] == "assistant"
    assert start["type"] == "message" and start["content"] == []
    assert start["usage"]["input_tokens"] > 0

    # content_block_start < deltas < content_block_stop < message_delta < message_stop
    assert types.index("content_block_start") < types.index("content_block_delta")
    last_delta = len(types) - 1 - types[::-1].index("content_block_delta")
    assert last_delta < types.index("content_block_stop") < types.index("message_delta")
    assert types.count("message_delta") == 1

    text = ""
    for c in chunks:
        if c["type"] == "content_block_start":
            assert c["index"] == 0 and c["content_block"]["type"] == "text"
        elif c["type"] == "content_block_delta":
            assert c["index"] == 0 and c["delta"]["type"] == "text_delta"
            text += c["delta"]["text"]
        elif c["type"] == "content_block_stop":
            assert c["index"] == 0
    assert text.strip()

    delta = chunks[types.index("message_delta")]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence")
    out_tokens = delta["usage"]["output_tokens"]
    assert 0 < out_tokens <= 32
    m = assert_metrics_only_on_last(chunks)
    assert m["outputTokenCount"] == out_tokens
    assert m["inputTokenCount"] == start["usage"]["input_tokens"]


def test_stream_matches_invoke_at_temperature_zero(reproducible_runtime):
    runtime = reproducible_runtime
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 32, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    full = json.loads(runtime.invoke_model(
        modelId="anthropic.claude-3-haiku-20240307-v1:0", body=json.dumps(body))["body"].read())
    chunks = harness.stream_chunks(stream_invoke(runtime, "anthropic.claude-3-haiku-20240307-v1:0", body))
    streamed = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    assert streamed == full["content"][0]["text"]


# ---------------------------------------------------------------------- Titan
def test_stream_titan_text(runtime):
    resp = stream_invoke(runtime, "amazon.titan-text-express-v1", {
        "inputText": f"User: {PROMPT}\nBot:",
        "textGenerationConfig": {"maxTokenCount": 32, "temperature": 0.5, "topP": 0.9}})
    chunks = harness.stream_chunks(resp)
    text = ""
    for c in chunks:
        assert isinstance(c["outputText"], str)
        assert c.get("index", 0) == 0
        text += c["outputText"]
    for c in chunks[:-1]:
        assert c.get("completionReason") is None
    last = chunks[-1]
    assert last["completionReason"] in ("FINISH", "FINISHED", "LENGTH", "STOP_CRITERIA_MET")
    assert 0 < last["totalOutputTextTokenCount"] <= 32
    assert last["inputTextTokenCount"] > 0
    assert text.strip()
    m = assert_metrics_only_on_last(chunks)
    assert m["outputTokenCount"] == last["totalOutputTextTokenCount"]


# ---------------------------------------------------------------------- Llama
def test_stream_llama(runtime):
    resp = stream_invoke(runtime, "meta.llama3-8b-instruct-v1:0", {
        "prompt": harness.llama3_prompt(PROMPT), "max_gen_len": 32, "temperature": 0.5})
    chunks = harness.stream_chunks(resp)
    text = ""
    for i, c in enumerate(chunks):
        assert isinstance(c["generation"], str)
        assert "generation_token_count" in c and "prompt_token_count" in c and "stop_reason" in c
        text += c["generation"]
        if i < len(chunks) - 1:
            assert c["stop_reason"] is None
    assert chunks[0]["prompt_token_count"] > 0
    assert chunks[-1]["stop_reason"] in ("stop", "length")
    assert text.strip()
    m = assert_metrics_only_on_last(chunks)
    assert m["outputTokenCount"] <= 32


# ---------------------------------------------------------------------- Mistral
def test_stream_mistral_text(runtime):
    resp = stream_invoke(runtime, "mistral.mistral-7b-instruct-v0:2", {
        "prompt": f"<s>[INST] {PROMPT} [/INST]", "max_tokens": 32, "temperature": 0.5})
    chunks = harness.stream_chunks(resp)
    text = ""
    for i, c in enumerate(chunks):
        out = c["outputs"]
        assert isinstance(out, list) and len(out) == 1
        assert isinstance(out[0]["text"], str)
        text += out[0]["text"]
        if i < len(chunks) - 1:
            assert out[0]["stop_reason"] is None
    assert chunks[-1]["outputs"][0]["stop_reason"] in ("stop", "length")
    assert text.strip()
    assert_metrics_only_on_last(chunks)


def test_stream_mistral_chat(runtime):
    resp = stream_invoke(runtime, "mistral.mistral-large-2407-v1:0", {
        "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 32, "temperature": 0.5})
    chunks = harness.stream_chunks(resp)
    text = ""
    for i, c in enumerate(chunks):
        choice = c["choices"][0]
        assert choice["index"] == 0
        content = choice["message"]["content"]
        assert content is None or isinstance(content, str)
        text += content or ""
        if i < len(chunks) - 1:
            assert choice.get("stop_reason") is None
    last = chunks[-1]["choices"][0]
    assert (last.get("stop_reason") or last.get("finish_reason")) in ("stop", "length")
    assert text.strip()
    assert_metrics_only_on_last(chunks)


# ---------------------------------------------------------------------- Nova
def test_stream_nova(runtime):
    resp = stream_invoke(runtime, "amazon.nova-micro-v1:0", {
        "schemaVersion": "messages-v1",
        "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
        "inferenceConfig": {"maxTokens": 32, "temperature": 0.5}})
    chunks = harness.stream_chunks(resp)
    names = []
    text = ""
    for c in chunks:
        keys = [k for k in c if k != METRICS_KEY]
        assert len(keys) == 1, f"Nova chunk must wrap exactly one event: {c}"
        name = keys[0]
        names.append(name)
        if name == "contentBlockDelta":
            assert c[name]["contentBlockIndex"] == 0
            text += c[name]["delta"]["text"]
    assert names[0] == "messageStart" and chunks[0]["messageStart"]["role"] == "assistant"
    assert names[-2:] == ["messageStop", "metadata"]
    assert "contentBlockDelta" in names and "contentBlockStop" in names
    assert chunks[-2]["messageStop"]["stopReason"] in ("end_turn", "max_tokens")
    usage = chunks[-1]["metadata"]["usage"]
    assert usage["inputTokens"] > 0 and 0 < usage["outputTokens"] <= 32
    assert text.strip()
    m = assert_metrics_only_on_last(chunks)
    assert m["outputTokenCount"] == usage["outputTokens"]


# ---------------------------------------------------------------------- Cohere
def test_stream_cohere_command_r(runtime):
    resp = stream_invoke(runtime, "cohere.command-r-v1:0",
                         {"message": PROMPT, "max_tokens": 32, "temperature": 0.5})
    chunks = harness.stream_chunks(resp)
    kinds = [c["event_type"] for c in chunks]
    assert kinds[0] == "stream-start"
    assert kinds[-1] == "stream-end"
    assert set(kinds) <= {"stream-start", "text-generation", "stream-end"}
    for c in chunks[:-1]:
        assert c["is_finished"] is False
    last = chunks[-1]
    assert last["is_finished"] is True
    assert last["finish_reason"].upper() in ("COMPLETE", "MAX_TOKENS")
    text = "".join(c["text"] for c in chunks if c["event_type"] == "text-generation")
    assert text.strip()
    if "response" in last:
        assert last["response"]["text"] == text
    assert_metrics_only_on_last(chunks)


# ---------------------------------------------------------------------- ConverseStream
def check_converse_stream_order(events):
    names = [n for n, _ in events]
    assert names[0] == "messageStart", names
    assert events[0][1]["role"] == "assistant"
    assert names[-2:] == ["messageStop", "metadata"], names
    open_index = None
    seen = set()
    text = ""
    deltas = 0
    for name, payload in events[1:-2]:
        if name == "contentBlockStart":
            assert open_index is None, "contentBlockStart inside an open block"
            open_index = payload["contentBlockIndex"]
            assert open_index not in seen
        elif name == "contentBlockDelta":
            idx = payload["contentBlockIndex"]
            if open_index is None:
                assert idx not in seen
                open_index = idx
            assert idx == open_index
            deltas += 1
            if "text" in payload["delta"]:
                text += payload["delta"]["text"]
        elif name == "contentBlockStop":
            assert open_index is not None and payload["contentBlockIndex"] == open_index
            seen.add(open_index)
            open_index = None
        else:
            raise AssertionError(f"unexpected event {name} in the middle of the stream: {names}")
    assert open_index is None, "content block never stopped"
    assert deltas >= 1
    return text


def test_converse_stream_event_order_and_metadata(runtime):
    resp = runtime.converse_stream(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        system=[{"text": "Be concise."}],
        messages=[{"role": "user", "content": [{"text": PROMPT}]}],
        inferenceConfig={"maxTokens": 32, "temperature": 0.5})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    events = harness.stream_events(resp)
    text = check_converse_stream_order(events)
    assert text.strip()
    assert events[-2][1]["stopReason"] in ("end_turn", "max_tokens")
    meta = events[-1][1]
    u = meta["usage"]
    assert u["inputTokens"] > 0 and 0 < u["outputTokens"] <= 32
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]
    assert meta["metrics"]["latencyMs"] >= 0


@pytest.mark.parametrize("model_id", [
    "amazon.titan-text-express-v1", "meta.llama3-8b-instruct-v1:0",
    "mistral.mistral-7b-instruct-v0:2", "amazon.nova-micro-v1:0", "cohere.command-r-v1:0",
    "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
])
def test_converse_stream_other_models(runtime, model_id):
    resp = runtime.converse_stream(
        modelId=model_id, messages=[{"role": "user", "content": [{"text": PROMPT}]}],
        inferenceConfig={"maxTokens": 24})
    events = harness.stream_events(resp)
    assert check_converse_stream_order(events).strip()
    assert events[-1][1]["usage"]["outputTokens"] <= 24


def test_converse_stream_matches_converse_at_temperature_zero(reproducible_runtime):
    runtime = reproducible_runtime
    kwargs = dict(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                  messages=[{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
                  inferenceConfig={"maxTokens": 32, "temperature": 0})
    full = runtime.converse(**kwargs)
    events = harness.stream_events(runtime.converse_stream(**kwargs))
    streamed = check_converse_stream_order(events)
    assert streamed == full["output"]["message"]["content"][0]["text"]
    assert events[-1][1]["usage"]["outputTokens"] == full["usage"]["outputTokens"]
    assert events[-1][1]["usage"]["inputTokens"] == full["usage"]["inputTokens"]


def test_converse_stream_max_tokens(runtime):
    events = harness.stream_events(runtime.converse_stream(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "user", "content": [{"text": LONG_Q}]}],
        inferenceConfig={"maxTokens": 4, "temperature": 0}))
    check_converse_stream_order(events)
    assert events[-2][1]["stopReason"] == "max_tokens"
    assert events[-1][1]["usage"]["outputTokens"] <= 4


def test_converse_stream_stop_sequence(reproducible_runtime):
    runtime = reproducible_runtime
    events = harness.stream_events(runtime.converse_stream(
        modelId="anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
        inferenceConfig={"maxTokens": 48, "temperature": 0, "stopSequences": ["Paris"]}))
    names = [n for n, _ in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    text = "".join(p["delta"].get("text", "") for n, p in events if n == "contentBlockDelta")
    assert "Paris" not in text
    assert events[-2][1]["stopReason"] == "stop_sequence"


# ---------------------------------------------------------------------- client hang-ups
def _long_stream(client):
    return client.invoke_model_with_response_stream(
        modelId="anthropic.claude-3-haiku-20240307-v1:0", contentType="application/json",
        body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 512,
                         "temperature": 1.0, "messages": [{"role": "user", "content": LONG_Q}]}))


def test_stream_closed_early_by_client(runtime, server):
    resp = _long_stream(runtime)
    stream = resp["body"]
    first = next(iter(stream))
    assert "chunk" in first
    stream.close()
    # The server keeps serving.
    r = runtime.converse(modelId="amazon.titan-text-express-v1",
                         messages=[{"role": "user", "content": [{"text": "Say hi."}]}],
                         inferenceConfig={"maxTokens": 8})
    assert r["output"]["message"]["content"][0]["text"] is not None
    assert server.health()[0] == 200
    assert server.alive()


def test_converse_stream_closed_early_by_client(runtime, server):
    resp = runtime.converse_stream(
        modelId="amazon.nova-micro-v1:0",
        messages=[{"role": "user", "content": [{"text": LONG_Q}]}],
        inferenceConfig={"maxTokens": 512, "temperature": 1.0})
    stream = resp["stream"]
    next(iter(stream))
    stream.close()
    events = harness.stream_events(runtime.converse_stream(
        modelId="amazon.nova-micro-v1:0",
        messages=[{"role": "user", "content": [{"text": "Say hi."}]}],
        inferenceConfig={"maxTokens": 8}))
    check_converse_stream_order(events)
    assert server.alive()


def _retry_while_throttled(fn, deadline):
    while True:
        try:
            return fn()
        except ClientError as e:
            if harness.error_code(e) != "ThrottlingException" or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_abandoned_streams_free_their_slots(queue1_server):
    """With an admission queue of depth 1, abandoned streams must not keep their slot:
    after a few hang-ups a normal request is admitted again (allowing a short grace period
    for the server to notice the closed connections)."""
    client = queue1_server.client("bedrock-runtime")
    deadline = time.monotonic() + 30
    for _ in range(3):
        resp = _retry_while_throttled(lambda: _long_stream(client), deadline)
        stream = resp["body"]
        next(iter(stream))
        stream.close()
    r = _retry_while_throttled(lambda: client.converse(
        modelId="amazon.titan-text-express-v1",
        messages=[{"role": "user", "content": [{"text": "Say hi."}]}],
        inferenceConfig={"maxTokens": 8}), deadline)
    assert r["usage"]["outputTokens"] > 0
    assert queue1_server.alive()
