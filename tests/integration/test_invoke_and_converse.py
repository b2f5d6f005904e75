"""InvokeModel bodies per provider family, Converse across families, and generation semantics
(determinism, maxTokens, stop sequences, token-count headers)."""

from __future__ import annotations

import json

import pytest

import harness

CAPITAL_Q = "What is the capital of France?"
LONG_Q = "Write a detailed, multi-paragraph essay about the history of the Roman Empire."

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN = "amazon.titan-text-express-v1"
TITAN_LITE = "amazon.titan-text-lite-v1"
LLAMA = "meta.llama3-8b-instruct-v1:0"
MISTRAL = "mistral.mistral-7b-instruct-v0:2"
MISTRAL_CHAT = "mistral.mistral-large-2407-v1:0"
NOVA = "amazon.nova-micro-v1:0"
COHERE = "cohere.command-r-v1:0"

TEXT_MODELS = [
    CLAUDE, "anthropic.claude-3-sonnet-20240229-v1:0", TITAN, TITAN_LITE, LLAMA,
    "meta.llama3-70b-instruct-v1:0", MISTRAL, "mistral.mistral-large-2402-v1:0", MISTRAL_CHAT,
    NOVA, COHERE,
]


def invoke(runtime, model_id, body, **kw):
    resp = runtime.invoke_model(modelId=model_id, contentType="application/json",
                                accept="application/json", body=json.dumps(body), **kw)
    return resp, harness.read_json_body(resp)


def claude_body(text, max_tokens=32, **extra):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}]}
    body.update(extra)
    return body


# Per-family request builders and response readers: (body(text, max_tokens), text(resp), stop(resp)).
FAMILIES = {
    "anthropic": (
        CLAUDE,
        lambda t, n: claude_body(t, n, temperature=0),
        lambda r: r["content"][0]["text"],
        lambda r: r["stop_reason"],
        "max_tokens",
    ),
    "titan": (
        TITAN_LITE,
        lambda t, n: {"inputText": t, "textGenerationConfig": {"maxTokenCount": n, "temperature": 0}},
        lambda r: r["results"][0]["outputText"],
        lambda r: r["results"][0]["completionReason"],
        "LENGTH",
    ),
    "llama": (
        LLAMA,
        lambda t, n: {"prompt": harness.llama3_prompt(t), "max_gen_len": n, "temperature": 0},
        lambda r: r["generation"],
        lambda r: r["stop_reason"],
        "length",
    ),
    "mistral-text": (
        MISTRAL,
        lambda t, n: {"prompt": f"<s>[INST] {t} [/INST]", "max_tokens": n, "temperature": 0},
        lambda r: r["outputs"][0]["text"],
        lambda r: r["outputs"][0]["stop_reason"],
        "length",
    ),
    "mistral-chat": (
        MISTRAL_CHAT,
        lambda t, n: {"messages": [{"role": "user", "content": t}], "max_tokens": n, "temperature": 0},
        lambda r: r["choices"][0]["message"]["content"],
        lambda r: r["choices"][0].get("stop_reason") or r["choices"][0].get("finish_reason"),
        "length",
    ),
    "nova": (
        NOVA,
        lambda t, n: {"schemaVersion": "messages-v1",
                      "messages": [{"role": "user", "content": [{"text": t}]}],
                      "inferenceConfig": {"maxTokens": n, "temperature": 0}},
        lambda r: r["output"]["message"]["content"][0]["text"],
        lambda r: r["stopReason"],
        "max_tokens",
    ),
    "cohere": (
        COHERE,
        lambda t, n: {"message": t, "max_tokens": n, "temperature": 0},
        lambda r: r["text"],
        lambda r: r["finish_reason"].upper(),
        "MAX_TOKENS",
    ),
}


# ---------------------------------------------------------------------- provider shapes
def test_anthropic_response_shape(runtime):
    _, r = invoke(runtime, CLAUDE, claude_body(CAPITAL_Q, 32, system="Be brief."))
    assert r["id"].startswith("msg_")
    assert r["type"] == "message" and r["role"] == "assistant"
    assert r["content"][0]["type"] == "text" and r["content"][0]["text"].strip()
    assert r["stop_reason"] in ("end_turn", "max_tokens")
    assert "stop_sequence" in r and r["stop_sequence"] is None
    assert r["usage"]["input_tokens"] > 0 and 0 < r["usage"]["output_tokens"] <= 32


def test_anthropic_content_blocks_and_system_list(runtime):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 24,
            "system": [{"type": "text", "text": "You are terse."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi there."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
                {"role": "user", "content": [{"type": "text", "text": "Name a fruit."}]},
            ]}
    _, r = invoke(runtime, CLAUDE, body)
    assert r["content"][0]["text"].strip()


def test_titan_response_shape(runtime):
    _, r = invoke(runtime, TITAN_LITE, {"inputText": "User: Name three colors\nBot:",
                                        "textGenerationConfig": {"maxTokenCount": 32}})
    assert isinstance(r["inputTextTokenCount"], int) and r["inputTextTokenCount"] > 0
    res = r["results"][0]
    assert isinstance(res["outputText"], str) and res["outputText"].strip()
    assert isinstance(res["tokenCount"], int) and 0 < res["tokenCount"] <= 32
    assert res["completionReason"] in ("FINISH", "FINISHED", "LENGTH", "STOP_CRITERIA_MET")


def test_llama_response_shape(runtime):
    _, r = invoke(runtime, LLAMA, {"prompt": harness.llama3_prompt(CAPITAL_Q), "max_gen_len": 32})
    assert isinstance(r["generation"], str) and r["generation"].strip()
    assert r["prompt_token_count"] > 0
    assert 0 < r["generation_token_count"] <= 32
    assert r["stop_reason"] in ("stop", "length")


def test_mistral_text_response_shape(runtime):
    _, r = invoke(runtime, MISTRAL, {"prompt": f"<s>[INST] {CAPITAL_Q} [/INST]", "max_tokens": 32})
    out = r["outputs"]
    assert isinstance(out, list) and len(out) == 1
    assert out[0]["text"].strip() and out[0]["stop_reason"] in ("stop", "length")


def test_mistral_chat_response_shape(runtime):
    _, r = invoke(runtime, MISTRAL_CHAT, {
        "messages": [{"role": "system", "content": "You are helpful."},
                     {"role": "user", "content": CAPITAL_Q}],
        "max_tokens": 32})
    choice = r["choices"][0]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert (choice.get("stop_reason") or choice.get("finish_reason")) in ("stop", "length")


def test_nova_response_shape(runtime):
    _, r = invoke(runtime, NOVA, {
        "schemaVersion": "messages-v1", "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": CAPITAL_Q}]}],
        "inferenceConfig": {"maxTokens": 32, "temperature": 0.5, "topP": 0.9}})
    msg = r["output"]["message"]
    assert msg["role"] == "assistant" and msg["content"][0]["text"].strip()
    assert r["stopReason"] in ("end_turn", "max_tokens")
    u = r["usage"]
    assert u["inputTokens"] > 0 and 0 < u["outputTokens"] <= 32
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]


def test_cohere_command_r_response_shape(runtime):
    _, r = invoke(runtime, COHERE, {
        "message": CAPITAL_Q, "preamble": "Be brief.",
        "chat_history": [{"role": "USER", "message": "Hi"}, {"role": "CHATBOT", "message": "Hello!"}],
        "max_tokens": 32})
    assert isinstance(r["text"], str) and r["text"].strip()
    assert r["finish_reason"].upper() in ("COMPLETE", "MAX_TOKENS")
    assert isinstance(r.get("generation_id"), str)


# ---------------------------------------------------------------------- headers
def test_invoke_token_count_headers_match_usage(runtime):
    resp, r = invoke(runtime, CLAUDE, claude_body("Say hello.", 16))
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-input-token-count"]) == r["usage"]["input_tokens"]
    assert int(headers["x-amzn-bedrock-output-token-count"]) == r["usage"]["output_tokens"]
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0
    assert resp["ResponseMetadata"]["RequestId"]
    assert resp["contentType"] == "application/json"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_invoke_token_count_headers_every_family(runtime, family):
    model_id, body, text_of, _, _ = FAMILIES[family]
    resp, r = invoke(runtime, model_id, body("Say hello.", 12))
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-input-token-count"]) > 0
    assert 0 < int(headers["x-amzn-bedrock-output-token-count"]) <= 12
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0
    assert isinstance(text_of(r), str)


# ---------------------------------------------------------------------- semantics
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_max_tokens_hit_reports_length(runtime, family):
    model_id, body, text_of, stop_of, length_reason = FAMILIES[family]
    resp, r = invoke(runtime, model_id, body(LONG_Q, 4))
    assert stop_of(r) == length_reason
    assert int(resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-output-token-count"]) <= 4
    assert isinstance(text_of(r), str)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_is_deterministic(reproducible_runtime, family):
    runtime = reproducible_runtime
    model_id, body, text_of, _, _ = FAMILIES[family]
    _, a = invoke(runtime, model_id, body("Tell me a fun fact about cats.", 24))
    _, b = invoke(runtime, model_id, body("Tell me a fun fact about cats.", 24))
    assert text_of(a) == text_of(b)
    assert text_of(a).strip()


def test_capital_of_france_greedy(reproducible_runtime):
    runtime = reproducible_runtime
    r = runtime.converse(modelId=CLAUDE,
                         messages=[{"role": "user", "content": [{"text": CAPITAL_Q}]}],
                         inferenceConfig={"maxTokens": 48, "temperature": 0})
    assert "Paris" in r["output"]["message"]["content"][0]["text"]


def test_converse_stop_sequence_honoured(reproducible_runtime):
    runtime = reproducible_runtime
    msgs = [{"role": "user", "content": [{"text": CAPITAL_Q}]}]
    full = runtime.converse(modelId=CLAUDE, messages=msgs,
                            inferenceConfig={"maxTokens": 48, "temperature": 0})
    full_text = full["output"]["message"]["content"][0]["text"]
    assert "Paris" in full_text
    cut = runtime.converse(modelId=CLAUDE, messages=msgs,
                           inferenceConfig={"maxTokens": 48, "temperature": 0,
                                            "stopSequences": ["Paris"]})
    assert cut["stopReason"] == "stop_sequence"
    content = cut["output"]["message"]["content"]
    cut_text = "".join(block.get("text", "") for block in content)
    assert "Paris" not in cut_text
    assert full_text.startswith(cut_text.rstrip())
    assert cut["usage"]["outputTokens"] <= full["usage"]["outputTokens"]


def test_anthropic_stop_sequence_honoured(reproducible_runtime):
    runtime = reproducible_runtime
    _, r = invoke(runtime, CLAUDE, claude_body(CAPITAL_Q, 48, temperature=0,
                                               stop_sequences=["Paris"]))
    assert r["stop_reason"] == "stop_sequence"
    assert r["stop_sequence"] == "Paris"
    assert "Paris" not in "".join(b.get("text", "") for b in r["content"])


def test_titan_stop_sequence_honoured(reproducible_runtime):
    runtime = reproducible_runtime
    _, r = invoke(runtime, TITAN, {"inputText": CAPITAL_Q,
                                   "textGenerationConfig": {"maxTokenCount": 48, "temperature": 0,
                                                            "stopSequences": ["Paris"]}})
    assert "Paris" not in r["results"][0]["outputText"]
    assert r["results"][0]["completionReason"] in ("STOP_CRITERIA_MET", "FINISH", "FINISHED")


# ---------------------------------------------------------------------- Converse
@pytest.mark.parametrize("model_id", TEXT_MODELS)
def test_converse_every_text_model(runtime, model_id):
    r = runtime.converse(modelId=model_id,
                         system=[{"text": "Be concise."}],
                         messages=[{"role": "user", "content": [{"text": "Say hello."}]}],
                         inferenceConfig={"maxTokens": 16, "temperature": 0.5, "topP": 0.9})
    msg = r["output"]["message"]
    assert msg["role"] == "assistant"
    assert isinstance(msg["content"][0]["text"], str) and msg["content"][0]["text"].strip()
    assert r["stopReason"] in ("end_turn", "max_tokens")
    u = r["usage"]
    assert u["inputTokens"] > 0 and 0 < u["outputTokens"] <= 16
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]
    assert r["metrics"]["latencyMs"] >= 0
    assert r["ResponseMetadata"]["RequestId"]


def test_converse_multi_turn(runtime):
    r = runtime.converse(modelId=NOVA, messages=[
        {"role": "user", "content": [{"text": "My name is Ada."}]},
        {"role": "assistant", "content": [{"text": "Nice to meet you, Ada."}]},
        {"role": "user", "content": [{"text": "What is my name?"}]},
    ], inferenceConfig={"maxTokens": 24, "temperature": 0})
    assert r["output"]["message"]["content"][0]["text"].strip()


def test_converse_max_tokens_hit(runtime):
    r = runtime.converse(modelId=CLAUDE,
                         messages=[{"role": "user", "content": [{"text": LONG_Q}]}],
                         inferenceConfig={"maxTokens": 4, "temperature": 0})
    assert r["stopReason"] == "max_tokens"
    assert r["usage"]["outputTokens"] <= 4


def test_converse_deterministic_at_temperature_zero(reproducible_runtime):
    runtime = reproducible_runtime
    kwargs = dict(modelId=TITAN, messages=[{"role": "user", "content": [{"text": "Describe the sea."}]}],
                  inferenceConfig={"maxTokens": 32, "temperature": 0})
    a = runtime.converse(**kwargs)["output"]["message"]["content"][0]["text"]
    b = runtime.converse(**kwargs)["output"]["message"]["content"][0]["text"]
    assert a == b and a.strip()


def test_converse_and_invoke_agree_on_input_tokens(runtime):
    r1 = runtime.converse(modelId=CLAUDE,
                          messages=[{"role": "user", "content": [{"text": CAPITAL_Q}]}],
                          inferenceConfig={"maxTokens": 8})
    _, r2 = invoke(runtime, CLAUDE, claude_body(CAPITAL_Q, 8))
    assert r1["usage"]["inputTokens"] == r2["usage"]["input_tokens"]


def test_converse_additional_model_request_fields_accepted(runtime):
    r = runtime.converse(modelId=CLAUDE,
                         messages=[{"role": "user", "content": [{"text": "Say hi."}]}],
                         inferenceConfig={"maxTokens": 8},
                         additionalModelRequestFields={"top_k": 20})
    assert r["output"]["message"]["content"][0]["text"] is not None
