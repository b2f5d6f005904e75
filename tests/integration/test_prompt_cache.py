"""Prompt caching: Converse ``cachePoint`` blocks and Anthropic ``cache_control``.

A cache point keeps the prompt's KV state up to that point; the next request with the
same prefix skips its prefill. Usage reports the cached part apart from ``inputTokens``:
``cacheWriteInputTokens`` when the prefix is stored, ``cacheReadInputTokens`` when it is
reused (Anthropic: ``cache_creation_input_tokens`` / ``cache_read_input_tokens``).

Every long prompt here starts with a fresh nonce, so no earlier request (of this run,
or of a server that outlived it) can have left a reusable prefix behind.
"""

from __future__ import annotations

import json
import random
import time
import uuid

import pytest

import harness

MODEL = "anthropic.claude-3-sonnet-20240229-v1:0"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
QUESTION = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]
CACHE_POINT = {"cachePoint": {"type": "default"}}

_SUBJECTS = ["The archive", "A river", "Our committee", "The old lighthouse", "Every sensor",
             "The baker", "This protocol", "A migrating flock", "The night shift", "Each ledger"]
_VERBS = ["records", "describes", "ignores", "measures", "celebrates", "questions", "rebuilds",
          "predicts", "borrows", "repaints"]
_OBJECTS = ["the tides of March", "seven copper valves", "an unfinished map",
            "quiet harbor traffic", "the winter solstice", "forty-two ledgers", "a lost recipe",
            "granite foundations", "the northern orchard", "a brass telescope"]


def long_text(words: int = 1000) -> str:
    """Varied prose of about 1.5 tokens a word, led by a nonce (a distinct prefix)."""
    nonce = uuid.uuid4().hex
    rng = random.Random(nonce)
    out = [f"Reference notes {nonce}."]
    count = 0
    while count < words:
        sentence = (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
                    f"near sector {rng.randint(1, 999)}.")
        out.append(sentence)
        count += len(sentence.split())
    return " ".join(out)


def usage_total_ok(u: dict) -> None:
    assert u["totalTokens"] == (u["inputTokens"] + u["outputTokens"]
                                + u.get("cacheReadInputTokens", 0)
                                + u.get("cacheWriteInputTokens", 0)), u


def converse_cached(runtime, system, messages=QUESTION, max_tokens=8):
    return runtime.converse(modelId=MODEL, system=system, messages=messages,
                            inferenceConfig={"maxTokens": max_tokens, "temperature": 0})


def stream_ttft(runtime, system, messages=QUESTION) -> tuple[float, dict]:
    """ConverseStream time to the first contentBlockDelta, and the metadata usage."""
    started = time.monotonic()
    resp = runtime.converse_stream(modelId=MODEL, system=system, messages=messages,
                                   inferenceConfig={"maxTokens": 4, "temperature": 0})
    first = None
    usage = None
    for event in resp["stream"]:
        if "contentBlockDelta" in event and first is None:
            first = time.monotonic() - started
        if "metadata" in event:
            usage = event["metadata"]["usage"]
    assert first is not None and usage is not None
    return first, usage


def first_words(text: str, n: int = 2) -> list[str]:
    return text.split()[:n]


# ---------------------------------------------------------------------- Converse
@pytest.fixture(scope="module")
def cached_system():
    return [{"text": long_text()}, CACHE_POINT]


@pytest.fixture(scope="module")
def first_call(runtime, cached_system):
    return converse_cached(runtime, cached_system)


def test_first_call_writes_the_cache(first_call):
    u = first_call["usage"]
    assert u["cacheWriteInputTokens"] > 1000, u
    assert u.get("cacheReadInputTokens", 0) == 0, u
    # inputTokens counts only what follows the cache point: the question and the template.
    assert 0 < u["inputTokens"] < 40, u
    usage_total_ok(u)


def test_identical_call_reads_what_the_first_wrote(runtime, cached_system, first_call):
    second = converse_cached(runtime, cached_system)
    u1, u2 = first_call["usage"], second["usage"]
    assert u2["cacheReadInputTokens"] == u1["cacheWriteInputTokens"], (u1, u2)
    assert u2.get("cacheWriteInputTokens", 0) == 0, u2
    assert u2["inputTokens"] == u1["inputTokens"]
    usage_total_ok(u2)
    assert u2["totalTokens"] - u2["outputTokens"] == u1["totalTokens"] - u1["outputTokens"]
    # Same answer from the cached prefix: a cache that kept the wrong states would
    # not start the same way. (Only the first words: prefill of the suffix alone may
    # round differently from a full prefill, which can flip a near-tie later on. The
    # system prompt is new random prose each run, so what the answer says is not
    # asserted.)
    t1 = first_call["output"]["message"]["content"][0]["text"]
    t2 = second["output"]["message"]["content"][0]["text"]
    assert first_words(t1) == first_words(t2), (t1, t2)


def test_cached_prefix_cuts_time_to_first_token(runtime, cached_system, first_call):
    """TTFT with the ~1,500-token prefix cached is well under half that of a fresh
    system prompt of the same length (a prefill of ~1,500 tokens)."""
    cached = []
    for _ in range(2):  # the faster of two, so a scheduling hiccup cannot decide it
        ttft, usage = stream_ttft(runtime, cached_system)
        assert usage["cacheReadInputTokens"] == first_call["usage"]["cacheWriteInputTokens"]
        cached.append(ttft)
    uncached, usage = stream_ttft(runtime, [{"text": long_text()}])
    assert usage.get("cacheReadInputTokens", 0) == 0 and usage["inputTokens"] > 1000, usage
    assert min(cached) < 0.5 * uncached, (cached, uncached)


def test_second_cache_point_in_a_message(runtime, cached_system, first_call):
    """System prefix (cached) + a cache point inside the user message: the first call
    reads the system prefix and writes the rest; the second reads both."""
    messages = [{"role": "user", "content": [
        {"text": long_text(120)}, CACHE_POINT, {"text": "What is the capital of France?"}]}]
    one = converse_cached(runtime, cached_system, messages, max_tokens=4)
    system_tokens = first_call["usage"]["cacheWriteInputTokens"]
    u1 = one["usage"]
    assert u1["cacheReadInputTokens"] == system_tokens, u1
    assert u1["cacheWriteInputTokens"] > 100, u1
    usage_total_ok(u1)
    two = converse_cached(runtime, cached_system, messages, max_tokens=4)
    u2 = two["usage"]
    assert u2["cacheReadInputTokens"] == system_tokens + u1["cacheWriteInputTokens"], (u1, u2)
    assert u2.get("cacheWriteInputTokens", 0) == 0, u2
    assert u2["inputTokens"] == u1["inputTokens"]
    usage_total_ok(u2)


def test_no_cache_point_reports_no_cache_usage(runtime):
    resp = converse_cached(runtime, [{"text": "Be brief."}], max_tokens=4)
    u = resp["usage"]
    assert u.get("cacheReadInputTokens", 0) == 0 and u.get("cacheWriteInputTokens", 0) == 0, u
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]


def test_tools_cache_point(runtime):
    """A cachePoint after the tools caches the tools section."""
    schema = {"type": "object", "properties": {"note": {"type": "string"}},
              "required": ["note"]}
    tools = [{"toolSpec": {"name": f"note_{uuid.uuid4().hex[:8]}",
                           "description": "Stores a note.",
                           "inputSchema": {"json": schema}}}, CACHE_POINT]

    def call():
        return runtime.converse(modelId=MODEL, messages=QUESTION,
                                toolConfig={"tools": tools, "toolChoice": {"any": {}}},
                                inferenceConfig={"maxTokens": 8, "temperature": 0})
    u1, u2 = call()["usage"], call()["usage"]
    assert u1["cacheWriteInputTokens"] > 50 and u1.get("cacheReadInputTokens", 0) == 0, u1
    assert u2["cacheReadInputTokens"] == u1["cacheWriteInputTokens"], (u1, u2)
    assert u2.get("cacheWriteInputTokens", 0) == 0
    usage_total_ok(u1)
    usage_total_ok(u2)


def test_reported_cache_write_is_readable(start_server):
    """Whatever is reported as written can be read by the very next identical call."""
    small = start_server("cache1mib", BASALT_PROMPT_CACHE_MIB="1")  # ~45 tokens of prefixes
    runtime = small.client("bedrock-runtime")
    system = [{"text": long_text(60)}, CACHE_POINT]
    u1 = converse_cached(runtime, system, max_tokens=2)["usage"]
    u2 = converse_cached(runtime, system, max_tokens=2)["usage"]
    if u1.get("cacheWriteInputTokens", 0):
        assert u2.get("cacheReadInputTokens", 0) == u1["cacheWriteInputTokens"], (u1, u2)


# ---------------------------------------------------------------------- Anthropic
def claude(runtime, system_text, stream=False):
    body = json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 8, "temperature": 0,
        "system": [{"type": "text", "text": system_text, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    if stream:
        return harness.stream_chunks(runtime.invoke_model_with_response_stream(
            modelId=CLAUDE, contentType="application/json", accept="application/json",
            body=body))
    return harness.read_json_body(runtime.invoke_model(
        modelId=CLAUDE, contentType="application/json", accept="application/json", body=body))


@pytest.fixture(scope="module")
def anthropic_calls(runtime):
    text = long_text()
    first = claude(runtime, text)
    second = claude(runtime, text)
    return text, first, second


def test_anthropic_cache_control_creation_then_read(anthropic_calls):
    _text, first, second = anthropic_calls
    u1, u2 = first["usage"], second["usage"]
    assert u1["cache_creation_input_tokens"] > 1000, u1
    assert u1["cache_read_input_tokens"] == 0, u1
    assert u2["cache_read_input_tokens"] == u1["cache_creation_input_tokens"], (u1, u2)
    assert u2["cache_creation_input_tokens"] == 0, u2
    assert 0 < u1["input_tokens"] == u2["input_tokens"] < 40, (u1, u2)
    assert u1["output_tokens"] > 0 and u2["output_tokens"] > 0
    assert first_words(first["content"][0]["text"]) == first_words(second["content"][0]["text"])


def test_anthropic_stream_reports_cache_read(runtime, anthropic_calls):
    text, _first, second = anthropic_calls
    chunks = claude(runtime, text, stream=True)
    delta = next(c for c in chunks if c["type"] == "message_delta")
    assert delta["usage"]["cache_read_input_tokens"] == \
        second["usage"]["cache_read_input_tokens"], delta
    assert delta["usage"]["cache_creation_input_tokens"] == 0, delta


def test_anthropic_stream_input_tokens_match_invoke(runtime, anthropic_calls):
    """message_start usage.input_tokens is the same count InvokeModel reports."""
    text, _first, second = anthropic_calls
    chunks = claude(runtime, text, stream=True)
    start = chunks[0]
    assert start["type"] == "message_start"
    usage = start["message"]["usage"]
    assert usage["input_tokens"] == second["usage"]["input_tokens"], (usage, second["usage"])
    assert usage["cache_read_input_tokens"] == second["usage"]["cache_read_input_tokens"], usage
    assert usage["cache_creation_input_tokens"] == 0, usage
