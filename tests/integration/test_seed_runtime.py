"""The reference invocation patterns (seed_patterns.py) run unmodified against Basalt."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jsonschema
import pytest
from botocore.exceptions import ClientError

import harness

SEED_FILE = Path(__file__).resolve().parent / "seed_patterns.py"
EXPECTED_BLOCKS = {
    "claude", "claude-text-generation", "claude-with-image", "titan-text", "titan-embeddings",
    "llama", "mistral", "converse", "converse-example", "converse-with-tools",
    "converse-with-tools-example", "error-handling", "guardrails", "batch", "rag", "retrieve-only", "generate-image",
}


def _seed_blocks() -> dict[str, str]:
    text = SEED_FILE.read_text()
    pattern = re.compile(
        r"^[ \t]*# >>> seed-block: (?P<name>[\w-]+)\n(?P<body>.*?)^[ \t]*# <<< seed-block\n",
        re.S | re.M)
    return {m.group("name"): textwrap.dedent(m.group("body")) for m in pattern.finditer(text)}


# ---------------------------------------------------------------------- the copy itself
def test_seed_copy_matches_reference():
    blocks = _seed_blocks()
    assert set(blocks) == EXPECTED_BLOCKS
    if not harness.REFERENCE_PATTERNS.exists():
        pytest.skip(f"reference not present at {harness.REFERENCE_PATTERNS}")
    reference = harness.REFERENCE_PATTERNS.read_text()
    for name, body in blocks.items():
        assert body.strip(), name
        assert body in reference, f"seed block {name!r} is not a verbatim copy of the reference"


def test_seed_client_points_at_basalt(seed, server):
    assert seed.bedrock.meta.endpoint_url == server.url
    assert seed.bedrock.meta.region_name == harness.REGION


# ---------------------------------------------------------------------- Claude
def _assert_claude_message(result: dict) -> None:
    assert isinstance(result["id"], str) and result["id"].startswith("msg_")
    assert result["type"] == "message"
    assert result["role"] == "assistant"
    assert isinstance(result["content"], list) and result["content"]
    first = result["content"][0]
    assert first["type"] == "text"
    assert isinstance(first["text"], str) and first["text"].strip()
    assert result["stop_reason"] in ("end_turn", "max_tokens", "stop_sequence")
    usage = result["usage"]
    assert isinstance(usage["input_tokens"], int) and usage["input_tokens"] > 0
    assert isinstance(usage["output_tokens"], int) and usage["output_tokens"] > 0


def test_claude_text_generation(seed):
    result = seed.claude_text_generation()
    _assert_claude_message(result)
    assert result["usage"]["output_tokens"] <= 1024


def test_claude_invoke_direct(reproducible_seed):
    seed = reproducible_seed
    result = seed.invoke_claude(
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=48, temperature=0.0)
    _assert_claude_message(result)
    assert result["usage"]["output_tokens"] <= 48
    assert "Paris" in result["content"][0]["text"]


def test_claude_with_image_is_rejected(seed, tmp_cwd):
    (tmp_cwd / "diagram.png").write_bytes(harness.make_png(32, 24))
    with pytest.raises(ClientError) as exc:
        seed.claude_with_image()
    assert harness.error_code(exc.value) == "ValidationException"
    assert harness.http_status(exc.value) == 400
    assert "image" in harness.error_message(exc.value).lower()


# ---------------------------------------------------------------------- Titan
def test_titan_text(seed):
    text = seed.invoke_titan_text("What is the capital of France?")
    assert isinstance(text, str) and text.strip()


def test_titan_text_small_budget(seed):
    text = seed.invoke_titan_text("Name three colors.", max_tokens=16, temperature=0.0)
    assert isinstance(text, str) and text.strip()


def test_titan_embeddings_default(seed):
    emb = seed.invoke_titan_embeddings("Amazon Bedrock is a managed service.")
    assert isinstance(emb, list) and len(emb) == 1024
    assert all(isinstance(x, float) for x in emb)
    assert abs(harness.norm(emb) - 1.0) <= 1e-3


def test_batch_embeddings(seed):
    texts = ["first document", "second document", "a third, longer document about bread"]
    embs = seed.batch_embeddings(texts)
    assert len(embs) == len(texts)
    for emb in embs:
        assert len(emb) == 1024
        assert all(isinstance(x, float) for x in emb)
        assert abs(harness.norm(emb) - 1.0) <= 1e-3
    assert embs[0] != embs[2]


def test_batch_embeddings_small_dimensions(seed):
    embs = seed.batch_embeddings(["alpha", "beta"], dimensions=256)
    assert [len(e) for e in embs] == [256, 256]


# ---------------------------------------------------------------------- Llama / Mistral
def test_llama_with_reference_prompt(seed):
    generation = seed.invoke_llama(seed.prompt)
    assert isinstance(generation, str) and generation.strip()
    # The Llama 3 control tokens of the prompt must not leak into the output.
    assert "<|eot_id|>" not in generation
    assert "<|start_header_id|>" not in generation


def test_mistral(seed):
    text = seed.invoke_mistral("What is Amazon S3?")
    assert isinstance(text, str) and text.strip()
    assert "[/INST]" not in text


# ---------------------------------------------------------------------- Converse
def test_converse_example(seed):
    text = seed.converse_example()
    assert isinstance(text, str) and text.strip()


def test_converse_function_small(seed):
    text = seed.converse(
        messages=[{"role": "user", "content": [{"text": "Say hello."}]}],
        model_id="amazon.titan-text-express-v1",
        max_tokens=16)
    assert isinstance(text, str) and text.strip()


def test_converse_with_tools_example(reproducible_seed):
    """The tool-use pattern returns a get_weather call whose input matches its schema.

    The seed sets no temperature, so the reply is sampled (0.7, a fresh seed each call),
    not greedy. The schema allows an empty location, and the 135M model sometimes writes
    one (CI, 2026-12-03); so the location is checked against the schema only, not for
    being a real place."""
    seed = reproducible_seed
    result = seed.converse_with_tools_example()
    assert result.get("tool_name") == "get_weather", result
    schema = seed.tools[0]["toolSpec"]["inputSchema"]["json"]
    jsonschema.Draft202012Validator(schema).validate(result["tool_input"])
    assert isinstance(result["tool_input"]["location"], str), result
    assert isinstance(result["tool_use_id"], str) and result["tool_use_id"].startswith("tooluse_")


# ---------------------------------------------------------------------- BedrockInvoker
def _count_sends(client) -> list:
    calls = []
    client.meta.events.register("before-send.bedrock-runtime.InvokeModel",
                                lambda request, **kw: calls.append(request.url))
    return calls


def test_bedrock_invoker_success(seed):
    invoker = seed.BedrockInvoker("amazon.titan-text-express-v1")
    calls = _count_sends(invoker.bedrock)
    result = invoker.invoke({"inputText": "Say hello.",
                             "textGenerationConfig": {"maxTokenCount": 16, "temperature": 0}})
    assert isinstance(result["results"][0]["outputText"], str)
    assert len(calls) == 1


def test_bedrock_invoker_claude_success(seed):
    invoker = seed.BedrockInvoker("anthropic.claude-3-haiku-20240307-v1:0")
    result = invoker.invoke({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 16,
                             "messages": [{"role": "user", "content": "Hi"}]})
    _assert_claude_message(result)


@pytest.mark.parametrize("model_id,body", [
    ("anthropic.claude-3-haiku-20240307-v1:0",
     {"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": "Hi"}]}),
    ("amazon.titan-text-express-v1", {"textGenerationConfig": {"maxTokenCount": 16}}),
])
def test_bedrock_invoker_validation_not_retried(seed, model_id, body):
    invoker = seed.BedrockInvoker(model_id)
    calls = _count_sends(invoker.bedrock)
    with pytest.raises(ClientError) as exc:
        invoker.invoke(body)
    assert harness.error_code(exc.value) == "ValidationException"
    assert isinstance(exc.value, invoker.bedrock.exceptions.ValidationException)
    assert len(calls) == 1, f"expected exactly one HTTP attempt, saw {len(calls)}"


def test_bedrock_invoker_unknown_model(seed):
    invoker = seed.BedrockInvoker("acme.not-a-model-v1:0")
    with pytest.raises(ClientError) as exc:
        invoker.invoke({"inputText": "hi"})
    assert harness.error_code(exc.value) == "ValidationException"
    assert harness.error_message(exc.value) == "The provided model identifier is invalid."


def test_seed_bodies_are_plain_json_round_trip(seed):
    """json.loads(response['body'].read()) in the seed requires a JSON body; sanity-check
    the content type header the seed relies on."""
    resp = seed.bedrock.invoke_model(
        modelId="amazon.titan-text-express-v1", contentType="application/json",
        accept="application/json",
        body=json.dumps({"inputText": "Hi", "textGenerationConfig": {"maxTokenCount": 8}}))
    assert resp["contentType"] == "application/json"
    assert isinstance(json.loads(resp["body"].read()), dict)
