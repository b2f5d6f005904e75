"""Titan and Cohere embeddings over the embedded all-MiniLM-L6-v2 model (plain-Python math)."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

import harness

TITAN_V2 = "amazon.titan-embed-text-v2:0"
TITAN_V1 = "amazon.titan-embed-text-v1"
COHERE = "cohere.embed-english-v3"

QUERY = "How do I bake bread?"
DOCUMENTS = [
    # 0, 1: directly about baking bread
    "To bake bread, mix flour, water, yeast and salt, knead the dough, let it rise, "
    "then bake the loaf in a hot oven until golden.",
    "Homemade sourdough bread needs an active starter, a long fermentation and a very hot oven.",
    # 2: baking, but not bread
    "Chocolate chip cookies bake at 180 degrees Celsius for about twelve minutes.",
    # 3: food, not baking
    "A healthy breakfast includes fruit, yoghurt and a cup of green tea.",
    # 4, 5: unrelated
    "The stock market fell sharply on Tuesday after the central bank raised interest rates.",
    "Quantum computers use qubits and entanglement to perform certain calculations.",
]


def embed(runtime, model_id, body):
    resp = runtime.invoke_model(modelId=model_id, contentType="application/json",
                                accept="application/json", body=json.dumps(body))
    return harness.read_json_body(resp)


def titan_v2(runtime, text, dimensions=1024, normalize=True, **extra):
    body = {"inputText": text, "dimensions": dimensions, "normalize": normalize}
    body.update(extra)
    return embed(runtime, TITAN_V2, body)


# ---------------------------------------------------------------------- Titan v2
@pytest.mark.parametrize("dimensions", [256, 512, 1024])
def test_titan_v2_dimensions(runtime, dimensions):
    r = titan_v2(runtime, "hello world", dimensions)
    emb = r["embedding"]
    assert len(emb) == dimensions
    assert all(isinstance(x, float) for x in emb)
    assert abs(harness.norm(emb) - 1.0) <= 1e-3
    assert isinstance(r["inputTextTokenCount"], int) and r["inputTextTokenCount"] > 0


def test_titan_v2_default_dimensions_is_1024(runtime):
    r = embed(runtime, TITAN_V2, {"inputText": "hello world"})
    assert len(r["embedding"]) == 1024
    assert abs(harness.norm(r["embedding"]) - 1.0) <= 1e-3


def test_titan_v2_normalize_false(runtime):
    for dims in (256, 1024):
        raw = titan_v2(runtime, "The quick brown fox jumps over the lazy dog.", dims, normalize=False)
        unit = titan_v2(runtime, "The quick brown fox jumps over the lazy dog.", dims, normalize=True)
        n = harness.norm(raw["embedding"])
        assert abs(n - 1.0) > 1e-2, f"normalize=false still gave a unit vector at {dims} dims"
        # Same direction, different length.
        assert harness.cosine(raw["embedding"], unit["embedding"]) > 0.999


def test_titan_v2_deterministic(runtime):
    a = titan_v2(runtime, "determinism check")["embedding"]
    b = titan_v2(runtime, "determinism check")["embedding"]
    assert harness.cosine(a, b) > 0.99999


def test_titan_v2_embedding_types(runtime):
    r = titan_v2(runtime, "hello world", 256, embeddingTypes=["float", "binary"])
    by_type = r["embeddingsByType"]
    assert len(by_type["float"]) == 256
    assert all(abs(x - y) < 1e-6 for x, y in zip(by_type["float"], r["embedding"]))
    assert len(by_type["binary"]) == 256
    assert set(by_type["binary"]) <= {0, 1}


@pytest.mark.parametrize("dimensions", [100, 0, 2048])
def test_titan_v2_invalid_dimensions(runtime, dimensions):
    with pytest.raises(ClientError) as exc:
        titan_v2(runtime, "hello", dimensions)
    assert harness.error_code(exc.value) == "ValidationException"
    assert "dimensions" in harness.error_message(exc.value)


def test_titan_v2_missing_input_text(runtime):
    with pytest.raises(ClientError) as exc:
        embed(runtime, TITAN_V2, {"dimensions": 256})
    assert harness.error_code(exc.value) == "ValidationException"
    assert "inputText" in harness.error_message(exc.value)


def test_titan_v1(runtime):
    r = embed(runtime, TITAN_V1, {"inputText": "hello world"})
    assert len(r["embedding"]) >= 384
    assert r["inputTextTokenCount"] > 0


def test_embedding_models_do_not_stream(runtime):
    with pytest.raises(ClientError) as exc:
        runtime.invoke_model_with_response_stream(
            modelId=TITAN_V2, contentType="application/json",
            body=json.dumps({"inputText": "hello"}))
    assert harness.error_code(exc.value) == "ValidationException"


# ---------------------------------------------------------------------- similarity ordering
def test_similarity_ordering_is_stable_across_dimensions(runtime):
    native_q = embed(runtime, TITAN_V1, {"inputText": QUERY})["embedding"]
    native_docs = [embed(runtime, TITAN_V1, {"inputText": d})["embedding"] for d in DOCUMENTS]
    native_rank = harness.ranking(native_q, native_docs)

    # Sanity on the underlying model: bread documents first, unrelated ones last.
    assert native_rank[0] in (0, 1), native_rank
    assert set(native_rank[-2:]) <= {3, 4, 5}, native_rank

    for dims in (256, 512, 1024):
        q = titan_v2(runtime, QUERY, dims)["embedding"]
        docs = [titan_v2(runtime, d, dims)["embedding"] for d in DOCUMENTS]
        assert harness.ranking(q, docs) == native_rank, f"ranking differs at {dims} dims"


def test_similar_texts_score_higher(runtime):
    a = titan_v2(runtime, "The cat sat on the mat.")["embedding"]
    b = titan_v2(runtime, "A cat is sitting on a rug.")["embedding"]
    c = titan_v2(runtime, "Interest rates rose again this quarter.")["embedding"]
    assert harness.cosine(a, b) > harness.cosine(a, c)


# ---------------------------------------------------------------------- Cohere
COHERE_TEXTS = ["hello world", "this is a test", "How do I bake bread?"]


def test_cohere_embed_floats(runtime):
    r = embed(runtime, COHERE, {"texts": COHERE_TEXTS, "input_type": "search_document"})
    assert isinstance(r["id"], str) and r["id"]
    assert r["response_type"] == "embeddings_floats"
    assert r["texts"] == COHERE_TEXTS
    embs = r["embeddings"]
    assert isinstance(embs, list) and len(embs) == len(COHERE_TEXTS)
    dims = {len(e) for e in embs}
    assert len(dims) == 1 and dims.pop() > 0
    assert all(isinstance(x, float) for e in embs for x in e)
    assert embs[0] != embs[1]


def test_cohere_embed_query_vs_document(runtime):
    q = embed(runtime, COHERE, {"texts": [QUERY], "input_type": "search_query"})["embeddings"][0]
    d = embed(runtime, COHERE, {"texts": [DOCUMENTS[0], DOCUMENTS[5]],
                                "input_type": "search_document"})["embeddings"]
    assert harness.cosine(q, d[0]) > harness.cosine(q, d[1])


def test_cohere_embed_by_type(runtime):
    r = embed(runtime, COHERE, {"texts": COHERE_TEXTS, "input_type": "clustering",
                                "truncate": "END", "embedding_types": ["float", "int8"]})
    assert r["response_type"] == "embeddings_by_type"
    by_type = r["embeddings"]
    assert set(by_type) >= {"float", "int8"}
    assert len(by_type["float"]) == len(by_type["int8"]) == len(COHERE_TEXTS)
    for f, q in zip(by_type["float"], by_type["int8"]):
        assert len(f) == len(q)
        assert all(isinstance(x, int) and -128 <= x <= 127 for x in q)
        assert all(isinstance(x, float) for x in f)


def test_cohere_embed_requires_input_type(runtime):
    with pytest.raises(ClientError) as exc:
        embed(runtime, COHERE, {"texts": COHERE_TEXTS})
    assert harness.error_code(exc.value) == "ValidationException"
    assert "input_type" in harness.error_message(exc.value)


def test_cohere_embed_too_many_texts(runtime):
    with pytest.raises(ClientError) as exc:
        embed(runtime, COHERE, {"texts": ["x"] * 97, "input_type": "search_document"})
    assert harness.error_code(exc.value) == "ValidationException"


# ---------------------------------------------------------------------- seed batch helper
def test_seed_batch_embeddings_ten_texts(seed):
    texts = [f"Document number {i} talks about topic {i % 3}." for i in range(10)]
    embs = seed.batch_embeddings(texts)
    assert len(embs) == 10
    for e in embs:
        assert len(e) == 1024
        assert abs(harness.norm(e) - 1.0) <= 1e-3
    assert len({tuple(e) for e in embs}) == 10
    again = seed.invoke_titan_embeddings(texts[3])
    assert harness.cosine(again, embs[3]) > 0.99999
