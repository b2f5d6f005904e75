//! Against a real PostgreSQL with pgvector (see `basalt_pgvector::test_server`):
//! each test starts its own server on 127.0.0.1 and stops it at the end.

use basalt_index::{Chunk, EmbeddedIndex, Filter, IndexError, SearchRequest, SearchType};
use basalt_pgvector::test_server::TestPostgres;
use basalt_pgvector::{
    text_index_ddl, PgVectorStore, RdsMapping, StoreOptions, DOCUMENT_ID_KEY, TEXT_CANDIDATES,
};
use serde_json::{json, Map, Value};

const DIM: usize = 4;

type Docs = Vec<(String, Vec<Chunk>)>;
const TABLE: &str = "bedrock_integration.bedrock_kb";

fn server() -> Option<TestPostgres> {
    TestPostgres::start().expect("a PostgreSQL server for the test")
}

async fn store(pg: &TestPostgres) -> PgVectorStore {
    let conn = pg.conn_str("postgres");
    let mapping = RdsMapping::bedrock_default(TABLE);
    PgVectorStore::ensure_table(&conn, &mapping, DIM)
        .await
        .expect("table");
    PgVectorStore::connect(&conn, mapping, DIM)
        .await
        .expect("connects")
}

async fn sql(pg: &TestPostgres, statements: &str) {
    let (client, conn) = tokio_postgres::connect(&pg.conn_str("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(conn);
    client.batch_execute(statements).await.expect("sql runs");
}

fn meta(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn chunk(id: &str, doc: &str, text: &str, vector: [f32; DIM], metadata: Value) -> Chunk {
    Chunk {
        chunk_id: id.into(),
        document_id: doc.into(),
        text: text.into(),
        return_text: None,
        vector: vector.to_vec(),
        metadata: meta(metadata),
    }
}

fn request(vector: [f32; DIM], text: &str, search_type: SearchType, limit: usize) -> SearchRequest {
    SearchRequest {
        vector: vector.to_vec(),
        text: text.into(),
        search_type,
        filter: None,
        limit,
        offset: 0,
    }
}

/// Twelve chunks over three documents, vectors spread around the circle in
/// the first two dimensions.
fn corpus() -> Docs {
    let words = [
        "granite quarry near the river",
        "basalt columns formed by cooling lava",
        "the river delta floods each spring",
        "volcanic glass and obsidian blades",
        "sandstone arches in the desert",
        "limestone caves with stalactites",
        "marble statues of the old city",
        "slate roofs keep the rain out",
        "pumice floats on water",
        "chalk cliffs by the sea",
        "quartz crystals grow in veins",
        "lava tubes under basalt plains",
    ];
    let mut docs: Vec<(String, Vec<Chunk>)> =
        (0..3).map(|d| (format!("doc-{d}"), vec![])).collect();
    for (i, text) in words.iter().enumerate() {
        let a = i as f32 * 0.5;
        let doc = format!("doc-{}", i % 3);
        let mut c = chunk(
            &format!("chunk-{i:02}"),
            &doc,
            text,
            [a.cos(), a.sin(), 0.1 * i as f32, 0.05],
            json!({
                "x-amz-bedrock-kb-source-uri": format!("s3://bucket/{doc}.txt"),
                "n": i,
                "kind": if i % 2 == 0 { "even" } else { "odd" },
            }),
        );
        if i == 3 {
            c.return_text = Some("the whole parent section about volcanic glass".into());
        }
        docs[i % 3].1.push(c);
    }
    docs
}

#[tokio::test]
async fn semantic_search_matches_the_embedded_index() {
    let Some(pg) = server() else { return };
    let store = store(&pg).await;
    let docs = corpus();
    store.upsert_documents(docs.clone()).await.expect("upserts");
    assert_eq!(store.count().await.expect("counts"), 12);

    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = EmbeddedIndex::open(dir.path(), DIM).expect("opens");
    embedded.upsert_documents(docs).expect("upserts");

    for q in [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.3, 0.0],
        [-1.0, 0.2, 0.5, 0.1],
    ] {
        let req = request(q, "", SearchType::Semantic, 12);
        let got = store.search(&req).await.expect("searches");
        let want = embedded.search(&req).expect("searches");
        let ids =
            |h: &[basalt_index::Hit]| h.iter().map(|h| h.chunk_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want), "query {q:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.score - w.score).abs() < 1e-5,
                "{} {} vs {}",
                g.chunk_id,
                g.score,
                w.score
            );
            assert_eq!(g.text, w.text);
            assert_eq!(g.metadata, w.metadata);
            assert_eq!(g.document_id, w.document_id);
        }
    }

    // The exact vector scores 1; the hit carries the return text and the
    // metadata as given (no private keys).
    let req = request(
        [1.5f32.cos(), 1.5f32.sin(), 0.3, 0.05],
        "",
        SearchType::Semantic,
        1,
    );
    let top = &store.search(&req).await.expect("searches")[0];
    assert_eq!(top.chunk_id, "chunk-03");
    assert_eq!(top.document_id, "doc-0");
    assert!((top.score - 1.0).abs() < 1e-6, "{}", top.score);
    assert_eq!(top.text, "the whole parent section about volcanic glass");
    assert_eq!(
        top.metadata,
        meta(
            json!({"x-amz-bedrock-kb-source-uri": "s3://bucket/doc-0.txt", "n": 3, "kind": "odd"})
        )
    );

    // Pages concatenate to the full ranking.
    let full = store
        .search(&request([0.3, 0.7, 0.2, 0.0], "", SearchType::Semantic, 12))
        .await
        .expect("searches");
    let mut paged = Vec::new();
    for offset in (0..12).step_by(5) {
        let mut req = request([0.3, 0.7, 0.2, 0.0], "", SearchType::Semantic, 5);
        req.offset = offset;
        paged.extend(store.search(&req).await.expect("searches"));
    }
    assert_eq!(paged, full);
}

#[tokio::test]
async fn hybrid_search_rewards_the_words() {
    let Some(pg) = server() else { return };
    let store = store(&pg).await;
    store.upsert_documents(corpus()).await.expect("upserts");
    // A vector nearest chunk-00; the words belong to chunk-05 alone.
    let q = [1.0, 0.0, 0.0, 0.05];
    let semantic = store
        .search(&request(
            q,
            "limestone stalactites",
            SearchType::Semantic,
            12,
        ))
        .await
        .expect("searches");
    let hybrid = store
        .search(&request(q, "limestone stalactites", SearchType::Hybrid, 12))
        .await
        .expect("searches");
    let rank = |hits: &[basalt_index::Hit], id: &str| hits.iter().position(|h| h.chunk_id == id);
    assert!(rank(&hybrid, "chunk-05") < rank(&semantic, "chunk-05"));
    assert!(hybrid.iter().all(|h| (0.0..=1.0).contains(&h.score)));
    assert!(hybrid.windows(2).all(|w| w[0].score >= w[1].score));
    // Half the semantic score plus half of the (best) text rank.
    let sem05 = semantic
        .iter()
        .find(|h| h.chunk_id == "chunk-05")
        .expect("present")
        .score;
    let hyb05 = hybrid
        .iter()
        .find(|h| h.chunk_id == "chunk-05")
        .expect("present")
        .score;
    assert!(
        (hyb05 - (0.5 * sem05 + 0.5)).abs() < 1e-9,
        "{hyb05} vs {sem05}"
    );
    // Chunks without the words keep half their semantic score.
    let sem00 = semantic
        .iter()
        .find(|h| h.chunk_id == "chunk-00")
        .expect("present")
        .score;
    let hyb00 = hybrid
        .iter()
        .find(|h| h.chunk_id == "chunk-00")
        .expect("present")
        .score;
    assert!((hyb00 - 0.5 * sem00).abs() < 1e-9);

    // Any of the words counts (OR, as BM25), and the filter applies to both sides.
    let mut req = request(q, "basalt obsidian", SearchType::Hybrid, 12);
    req.filter =
        Some(Filter::parse(&json!({"equals": {"key": "kind", "value": "odd"}})).expect("parses"));
    let hits = store.search(&req).await.expect("searches");
    assert!(hits.iter().all(|h| h.metadata["kind"] == "odd"));
    let top: Vec<&str> = hits.iter().take(3).map(|h| h.chunk_id.as_str()).collect();
    for id in ["chunk-01", "chunk-03", "chunk-11"] {
        assert!(top.contains(&id), "{top:?}");
    }

    // Words no chunk holds (or none at all) leave the semantic order, halved.
    for text in ["zzzz", "", "  ,, "] {
        let hits = store
            .search(&request(q, text, SearchType::Hybrid, 12))
            .await
            .expect("searches");
        let ids: Vec<&str> = hits.iter().map(|h| h.chunk_id.as_str()).collect();
        let sem_ids: Vec<&str> = semantic.iter().map(|h| h.chunk_id.as_str()).collect();
        assert_eq!(ids, sem_ids, "{text:?}");
    }
}

/// Metadata covering every kind of value a filter meets.
fn filter_corpus() -> Vec<Chunk> {
    let metas = [
        json!({"s": "report-2024.pdf", "n": 1, "f": 2.5, "b": true, "l": ["alpha", "beta"], "nums": [1, 2]}),
        json!({"s": "report-2025.pdf", "n": 2, "f": -1.0, "b": false, "l": ["gamma"], "nums": [3]}),
        json!({"s": "notes.txt", "n": 3, "b": true, "l": [], "quote'key": "it's", "dq\"key": "x"}),
        json!({"s": "Report", "n": 1.0, "f": 2.5, "l": ["alpha"], "nums": [2.0]}),
        json!({"n": "1", "s": 7, "l": "alpha", "b": "true"}),
        json!({"s": "", "n": 100000000000i64, "f": 1e-3, "l": ["a%b_c", "beta"]}),
        json!({}),
        json!({"s": "report-%_.pdf", "n": -5, "l": ["alpha", "ALPHA"], "x-amz-bedrock-kb-source-uri": "s3://b/k"}),
    ];
    metas
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let a = i as f32;
            chunk(
                &format!("c{i}"),
                &format!("d{}", i % 3),
                "text",
                [1.0, a, 0.5, 0.0],
                m,
            )
        })
        .collect()
}

fn filters() -> Vec<Value> {
    vec![
        json!({"equals": {"key": "s", "value": "report-2024.pdf"}}),
        json!({"equals": {"key": "n", "value": 1}}),
        json!({"equals": {"key": "n", "value": 1.0}}),
        json!({"equals": {"key": "n", "value": "1"}}),
        json!({"equals": {"key": "n", "value": 100000000000i64}}),
        json!({"equals": {"key": "b", "value": true}}),
        json!({"equals": {"key": "l", "value": ["alpha", "beta"]}}),
        json!({"equals": {"key": "l", "value": "alpha"}}),
        json!({"equals": {"key": "nums", "value": [2]}}),
        json!({"equals": {"key": "quote'key", "value": "it's"}}),
        json!({"equals": {"key": "dq\"key", "value": "x"}}),
        json!({"equals": {"key": DOCUMENT_ID_KEY, "value": "d0"}}),
        json!({"notEquals": {"key": "n", "value": 1}}),
        json!({"notEquals": {"key": "missing", "value": 1}}),
        json!({"notEquals": {"key": "b", "value": true}}),
        json!({"notEquals": {"key": DOCUMENT_ID_KEY, "value": "d0"}}),
        json!({"greaterThan": {"key": "n", "value": 1}}),
        json!({"greaterThan": {"key": "f", "value": 0}}),
        json!({"greaterThanOrEquals": {"key": "n", "value": 1}}),
        json!({"lessThan": {"key": "n", "value": 2.5}}),
        json!({"lessThan": {"key": "s", "value": 100}}),
        json!({"lessThanOrEquals": {"key": "f", "value": 0.001}}),
        json!({"in": {"key": "n", "value": [2, 3.0, "1"]}}),
        json!({"in": {"key": "s", "value": ["notes.txt", "Report"]}}),
        json!({"in": {"key": "l", "value": ["alpha"]}}),
        json!({"notIn": {"key": "n", "value": [1, 2]}}),
        json!({"notIn": {"key": "missing", "value": ["a"]}}),
        json!({"startsWith": {"key": "s", "value": "report"}}),
        json!({"startsWith": {"key": "s", "value": "report-%"}}),
        json!({"startsWith": {"key": "s", "value": ""}}),
        json!({"startsWith": {"key": "l", "value": "al"}}),
        json!({"listContains": {"key": "l", "value": "alpha"}}),
        json!({"listContains": {"key": "nums", "value": 2}}),
        json!({"listContains": {"key": "l", "value": "a%b_c"}}),
        json!({"listContains": {"key": "s", "value": "notes.txt"}}),
        json!({"stringContains": {"key": "s", "value": "2024"}}),
        json!({"stringContains": {"key": "s", "value": "%_"}}),
        json!({"stringContains": {"key": "s", "value": ""}}),
        json!({"stringContains": {"key": "l", "value": "eta"}}),
        json!({"stringContains": {"key": "l", "value": "_"}}),
        json!({"stringContains": {"key": "x-amz-bedrock-kb-source-uri", "value": "s3://"}}),
        json!({"andAll": [
            {"startsWith": {"key": "s", "value": "report"}},
            {"equals": {"key": "b", "value": true}}
        ]}),
        json!({"orAll": [
            {"equals": {"key": "n", "value": 3}},
            {"listContains": {"key": "l", "value": "gamma"}},
            {"notEquals": {"key": "f", "value": 2.5}}
        ]}),
        json!({"orAll": [
            {"andAll": [
                {"greaterThan": {"key": "n", "value": 0}},
                {"notIn": {"key": "s", "value": ["notes.txt"]}}
            ]},
            {"andAll": [
                {"equals": {"key": "missing", "value": 1}},
                {"notEquals": {"key": "n", "value": 1}}
            ]}
        ]}),
    ]
}

#[tokio::test]
async fn filters_select_what_filter_matches_selects() {
    let Some(pg) = server() else { return };
    let store = store(&pg).await;
    let chunks = filter_corpus();
    for c in &chunks {
        store
            .upsert_document(&c.document_id.clone(), vec![c.clone()])
            .await
            .expect("upserts");
    }
    // Every chunk is its own document here; re-upserting replaces.
    assert_eq!(store.count().await.expect("counts"), 3);
    store.delete_document("d0").await.expect("deletes");
    store.delete_document("d1").await.expect("deletes");
    store.delete_document("d2").await.expect("deletes");
    let mut by_doc: Vec<(String, Vec<Chunk>)> = Vec::new();
    for c in &chunks {
        match by_doc.iter_mut().find(|(d, _)| *d == c.document_id) {
            Some((_, list)) => list.push(c.clone()),
            None => by_doc.push((c.document_id.clone(), vec![c.clone()])),
        }
    }
    store.upsert_documents(by_doc).await.expect("upserts");
    assert_eq!(store.count().await.expect("counts"), chunks.len());

    let mut discriminating = 0;
    for wire in filters() {
        let filter = Filter::parse(&wire).expect("parses");
        let mut want: Vec<String> = chunks
            .iter()
            .filter(|c| filter.matches(&c.metadata))
            .map(|c| c.chunk_id.clone())
            .collect();
        want.sort();
        if !want.is_empty() && want.len() < chunks.len() {
            discriminating += 1;
        }
        let got = store.chunk_ids(Some(&filter)).await.expect("filters");
        assert_eq!(got, want, "filter {wire}");

        // The same through search (both kinds), which returns exactly those.
        for search_type in [SearchType::Semantic, SearchType::Hybrid] {
            let mut req = request([1.0, 2.0, 0.5, 0.0], "text", search_type, 20);
            req.filter = Some(filter.clone());
            let mut ids: Vec<String> = store
                .search(&req)
                .await
                .expect("searches")
                .into_iter()
                .map(|h| h.chunk_id)
                .collect();
            ids.sort();
            assert_eq!(ids, want, "filter {wire} via {search_type:?}");
        }
    }
    // Most filters keep some chunks and drop others, so the comparison means something.
    assert!(discriminating >= 35, "{discriminating}");
    let all = store.chunk_ids(None).await.expect("lists");
    assert_eq!(all.len(), chunks.len());
}

#[tokio::test]
async fn documents_are_replaced_and_deleted_whole() {
    let Some(pg) = server() else { return };
    let store = store(&pg).await;
    let v = [1.0, 0.0, 0.0, 0.0];
    let a: Vec<Chunk> = (0..3)
        .map(|i| chunk(&format!("a{i}"), "A", "alpha", v, json!({"i": i})))
        .collect();
    store.upsert_document("A", a).await.expect("upserts");
    store
        .upsert_document("B", vec![chunk("b0", "B", "beta", v, json!({}))])
        .await
        .expect("upserts");
    assert_eq!(store.count().await.expect("counts"), 4);

    // Re-upserting A with fewer chunks drops the others.
    let a2 = vec![
        chunk("a0", "A", "alpha again", v, json!({"i": 10})),
        chunk("a9", "A", "alpha new", v, json!({})),
    ];
    store.upsert_document("A", a2).await.expect("upserts");
    assert_eq!(
        store.chunk_ids(None).await.expect("lists"),
        ["a0", "a9", "b0"]
    );
    // A chunk id moving to another document leaves the old one.
    store
        .upsert_document("C", vec![chunk("b0", "C", "moved", v, json!({}))])
        .await
        .expect("upserts");
    let hits = store
        .search(&request(v, "", SearchType::Semantic, 10))
        .await
        .expect("searches");
    let b0 = hits.iter().find(|h| h.chunk_id == "b0").expect("b0");
    assert_eq!((b0.document_id.as_str(), b0.text.as_str()), ("C", "moved"));
    assert_eq!(store.delete_document("B").await.expect("deletes"), 0);
    assert_eq!(store.delete_document("A").await.expect("deletes"), 2);
    assert_eq!(store.delete_document("A").await.expect("deletes"), 0);
    assert_eq!(store.chunk_ids(None).await.expect("lists"), ["b0"]);

    // What the embedded index refuses is refused here, before any write.
    let bad = |c: Chunk| vec![("D".to_string(), vec![c])];
    let cases: Vec<(Docs, &str)> = vec![
        (
            bad(chunk("d0", "D", "t", [0.0; DIM], json!({}))),
            "all zeros",
        ),
        (
            bad(chunk("d0", "D", "t", [f32::NAN, 0.0, 0.0, 1.0], json!({}))),
            "finite",
        ),
        (bad(chunk("", "D", "t", v, json!({}))), "chunk id is empty"),
        (vec![(String::new(), vec![])], "document id is empty"),
        (
            vec![(
                "D".into(),
                vec![
                    chunk("d0", "D", "t", v, json!({})),
                    chunk("d0", "D", "t", v, json!({})),
                ],
            )],
            "appears twice",
        ),
    ];
    for (docs, message) in cases {
        let e = store.upsert_documents(docs).await.expect_err("refused");
        assert!(
            matches!(e, IndexError::Invalid(_)) && e.to_string().contains(message),
            "{e}"
        );
    }
    let e = store
        .upsert_document(
            "D",
            vec![Chunk {
                vector: vec![1.0; 3],
                ..chunk("d0", "D", "t", v, json!({}))
            }],
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(
            e,
            IndexError::Dimensions {
                expected: 4,
                got: 3
            }
        ),
        "{e}"
    );
    let e = store
        .search(&request([0.0; DIM], "", SearchType::Semantic, 1))
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("all zeros"), "{e}");
    let mut req = request(v, "", SearchType::Semantic, 10_000);
    req.offset = 1;
    assert!(store
        .search(&req)
        .await
        .expect_err("refused")
        .to_string()
        .contains("offset + limit"));
    assert_eq!(store.count().await.expect("counts"), 1);
}

#[tokio::test]
async fn chunks_survive_a_server_restart() {
    let Some(mut pg) = server() else { return };
    let store1 = store(&pg).await;
    store1.upsert_documents(corpus()).await.expect("upserts");
    let req = request([0.2, 0.9, 0.1, 0.0], "river", SearchType::Hybrid, 5);
    let before = store1.search(&req).await.expect("searches");

    pg.restart().expect("restarts");
    // A new connection sees everything.
    let conn = pg.conn_str("postgres");
    let store2 = PgVectorStore::connect(&conn, RdsMapping::bedrock_default(TABLE), DIM)
        .await
        .expect("connects");
    assert_eq!(store2.count().await.expect("counts"), 12);
    assert_eq!(store2.search(&req).await.expect("searches"), before);
    // The old store reopens its dropped connection (the first call may still
    // see the old one fail).
    let mut after = store1.search(&req).await;
    if after.is_err() {
        after = store1.search(&req).await;
    }
    assert_eq!(after.expect("searches after reconnecting"), before);
}

async fn connect_err(conn: &str, mapping: RdsMapping, dimensions: usize) -> String {
    match PgVectorStore::connect(conn, mapping, dimensions).await {
        Ok(_) => panic!("connected"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn the_mapping_is_checked_against_the_table() {
    let Some(pg) = server() else { return };
    let conn = pg.conn_str("postgres");
    sql(
        &pg,
        "CREATE EXTENSION vector;
         CREATE TABLE kb (id text PRIMARY KEY, vec vector(4), body varchar, meta jsonb, n int);
         CREATE TABLE loose (id uuid, vec vector, body text, meta json);",
    )
    .await;
    let mapping = RdsMapping {
        table_name: "kb".into(),
        primary_key_field: "id".into(),
        vector_field: "vec".into(),
        text_field: "body".into(),
        metadata_field: "meta".into(),
        custom_metadata_field: None,
    };
    let e = connect_err(
        &conn,
        RdsMapping {
            table_name: "nope".into(),
            ..mapping.clone()
        },
        4,
    )
    .await;
    assert!(
        e.contains("table nope (rdsConfiguration.tableName) does not exist"),
        "{e}"
    );
    let e = connect_err(
        &conn,
        RdsMapping {
            table_name: "public.nope".into(),
            ..mapping.clone()
        },
        4,
    )
    .await;
    assert!(e.contains("does not exist"), "{e}");
    let e = connect_err(
        &conn,
        RdsMapping {
            vector_field: "embedding".into(),
            ..mapping.clone()
        },
        4,
    )
    .await;
    assert!(
        e.contains(
            "table kb has no column \"embedding\" (rdsConfiguration.fieldMapping.vectorField)"
        ),
        "{e}"
    );
    let e = connect_err(
        &conn,
        RdsMapping {
            custom_metadata_field: Some("custom".into()),
            ..mapping.clone()
        },
        4,
    )
    .await;
    assert!(
        e.contains("no column \"custom\" (rdsConfiguration.fieldMapping.customMetadataField)"),
        "{e}"
    );
    let e = connect_err(
        &conn,
        RdsMapping {
            text_field: "n".into(),
            ..mapping.clone()
        },
        4,
    )
    .await;
    assert!(
        e.contains("fieldMapping.textField) has type int4; expected text or varchar"),
        "{e}"
    );
    let e = connect_err(
        &conn,
        RdsMapping {
            metadata_field: "body".into(),
            ..mapping.clone()
        },
        4,
    )
    .await;
    assert!(e.contains("expected json or jsonb"), "{e}");
    let e = connect_err(&conn, mapping.clone(), 8).await;
    assert!(
        e.contains("holds vectors of 4 dimensions but the embedding model makes 8"),
        "{e}"
    );
    let e = connect_err(
        "host=127.0.0.1 port=1 user=postgres connect_timeout=2",
        mapping.clone(),
        4,
    )
    .await;
    assert!(e.starts_with("PostgreSQL: "), "{e}");

    // A text primary key, varchar text and jsonb metadata without custom
    // metadata work too; and an unconstrained vector column takes any size.
    let store = PgVectorStore::connect(&conn, mapping, 4)
        .await
        .expect("connects");
    let v = [0.0, 1.0, 0.0, 0.0];
    store
        .upsert_document(
            "doc",
            vec![chunk("c1", "doc", "hello world", v, json!({"k": "v"}))],
        )
        .await
        .expect("upserts");
    let hits = store
        .search(&request(v, "hello", SearchType::Hybrid, 3))
        .await
        .expect("searches");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].chunk_id, "c1");
    assert_eq!(hits[0].metadata, meta(json!({"k": "v"})));
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    let loose = RdsMapping {
        table_name: "loose".into(),
        primary_key_field: "id".into(),
        vector_field: "vec".into(),
        text_field: "body".into(),
        metadata_field: "meta".into(),
        custom_metadata_field: None,
    };
    let store = PgVectorStore::connect(&conn, loose, 4)
        .await
        .expect("connects");
    store
        .upsert_document("doc", vec![chunk("c1", "doc", "t", v, json!({}))])
        .await
        .expect("upserts");
    assert_eq!(store.chunk_ids(None).await.expect("lists"), ["c1"]);
}

#[tokio::test]
async fn bedrocks_layout_holds_the_chunk_where_bedrock_puts_it() {
    let Some(pg) = server() else { return };
    let store = store(&pg).await;
    let mut c = chunk(
        "chunk-1",
        "doc-1",
        "searched text",
        [0.5, 0.5, 0.0, 0.0],
        json!({"x-amz-bedrock-kb-source-uri": "s3://b/doc-1.pdf", "year": 2024, "tags": ["a"]}),
    );
    c.return_text = Some("parent text".into());
    store
        .upsert_document("doc-1", vec![c])
        .await
        .expect("upserts");
    let (client, conn) = tokio_postgres::connect(&pg.conn_str("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT id, chunks, metadata::jsonb, custom_metadata, vector_dims(embedding) \
             FROM bedrock_integration.bedrock_kb",
            &[],
        )
        .await
        .expect("one row");
    let id: uuid::Uuid = row.get(0);
    assert_eq!(id.get_version_num(), 5);
    assert_eq!(row.get::<_, String>(1), "searched text");
    assert_eq!(
        row.get::<_, Value>(2),
        json!({
            "x-amz-bedrock-kb-source-uri": "s3://b/doc-1.pdf", "year": 2024, "tags": ["a"],
            "x-basalt-kb-document-id": "doc-1", "x-basalt-kb-chunk-id": "chunk-1",
            "x-basalt-kb-return-text": "parent text"
        })
    );
    assert_eq!(row.get::<_, Value>(3), json!({"year": 2024, "tags": ["a"]}));
    assert_eq!(row.get::<_, i32>(4), 4);
    // ensure_table is idempotent.
    PgVectorStore::ensure_table(&pg.conn_str("postgres"), store.mapping(), DIM)
        .await
        .expect("again");
}

// ---- HYBRID's bounded full-text side, and the pool ----

/// `n` chunks round the circle, each holding "stone" and two filler words;
/// chunk-000 sits at the query vector and holds no rare word; the last chunk
/// sits opposite, holds "obsidian", and says "stone" three times (the best
/// text rank for "stone"), so neither side alone would find both.
fn sample_corpus(n: usize) -> Docs {
    let fillers = ["grey", "heavy", "old", "smooth", "wet", "cold"];
    let chunks: Vec<Chunk> = (0..n)
        .map(|i| {
            let a = std::f32::consts::PI * i as f32 / (n - 1) as f32;
            let text = if i == n - 1 {
                "stone stone stone obsidian".to_string()
            } else {
                format!("stone {} {}", fillers[i % 6], fillers[(i / 6) % 6])
            };
            chunk(
                &format!("chunk-{i:03}"),
                &format!("doc-{i:03}"),
                &text,
                [a.cos(), a.sin(), 0.0, 0.0],
                json!({"kind": if i == n - 1 { "rare" } else { "common" }, "n": i}),
            )
        })
        .collect();
    // One document per chunk, written in order, so the heap holds them in order.
    chunks
        .into_iter()
        .map(|c| (c.document_id.clone(), vec![c]))
        .collect()
}

async fn store_with(pg: &TestPostgres, options: StoreOptions) -> PgVectorStore {
    let conn = pg.conn_str("postgres");
    let mapping = RdsMapping::bedrock_default(TABLE);
    PgVectorStore::ensure_table(&conn, &mapping, DIM)
        .await
        .expect("table");
    PgVectorStore::connect_with(&conn, mapping, DIM, options)
        .await
        .expect("connects")
}

fn ids(hits: &[basalt_index::Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.chunk_id.as_str()).collect()
}

#[tokio::test]
async fn hybrid_ranks_a_bounded_sample_and_still_finds_both_sides() {
    let Some(pg) = server() else { return };
    let n = 300;
    let store = store(&pg).await;
    assert!(store.has_text_index(), "ensure_table creates the GIN index");
    assert_eq!(store.options().text_candidates, TEXT_CANDIDATES);
    store
        .upsert_documents(sample_corpus(n))
        .await
        .expect("upserts");
    let last = format!("chunk-{:03}", n - 1);
    let q = [1.0, 0.0, 0.0, 0.0];

    // A word match far from the query vector (outside the 100 nearest) and
    // the nearest chunk, which holds no rare word, both come back.
    let hits = store
        .search(&request(q, "obsidian", SearchType::Hybrid, 5))
        .await
        .expect("searches");
    // Each scores 0.5: the words' best rank and no similarity, or the reverse.
    assert_eq!(
        ids(&hits)[..2],
        ["chunk-000", last.as_str()],
        "{:?}",
        ids(&hits)
    );
    assert!(hits.iter().all(|h| (0.0..=1.0).contains(&h.score)));

    // Every row holds "stone", so all 300 fit under the default bound: the
    // last chunk, best by text rank, is found.
    // (150: more than the candidates, so a missing row was no candidate.)
    let stone = request(q, "stone", SearchType::Hybrid, 150);
    let hits = store.search(&stone).await.expect("searches");
    assert!(ids(&hits).contains(&last.as_str()), "{:?}", ids(&hits));

    // With a bound of 3 rows per tier, only the first three "stone" rows are
    // ranked, and the last is none of the 100 nearest: it is no candidate at
    // all, so the bound is real.
    let conn = pg.conn_str("postgres");
    let small = StoreOptions {
        text_candidates: 3,
        ..StoreOptions::default()
    };
    let bounded =
        PgVectorStore::connect_with(&conn, RdsMapping::bedrock_default(TABLE), DIM, small)
            .await
            .expect("connects");
    let hits = bounded.search(&stone).await.expect("searches");
    assert!(!ids(&hits).contains(&last.as_str()), "{:?}", ids(&hits));

    // The all-words tier comes first: "stone obsidian" finds the one row with
    // both although 299 others hold "stone".
    let hits = bounded
        .search(&request(q, "stone obsidian", SearchType::Hybrid, 150))
        .await
        .expect("searches");
    assert!(ids(&hits).contains(&last.as_str()), "{:?}", ids(&hits));
}

#[tokio::test]
async fn hybrid_filters_apply_to_both_candidate_sides() {
    let Some(pg) = server() else { return };
    let store = store_with(
        &pg,
        StoreOptions {
            text_candidates: 5,
            ..StoreOptions::default()
        },
    )
    .await;
    store
        .upsert_documents(sample_corpus(300))
        .await
        .expect("upserts");
    let q = [1.0, 0.0, 0.0, 0.0];
    // The filter drops the one row holding both words; the rest of each side
    // passes it.
    let common = Filter::parse(&json!({"andAll": [
        {"notEquals": {"key": "kind", "value": "rare"}},
        {"greaterThan": {"key": "n", "value": 100}}
    ]}))
    .expect("parses");
    let mut req = request(q, "obsidian stone", SearchType::Hybrid, 150);
    req.filter = Some(common);
    let hits = store.search(&req).await.expect("searches");
    assert!(!hits.is_empty());
    assert!(
        hits.iter()
            .all(|h| h.metadata["kind"] == "common" && h.metadata["n"].as_u64() > Some(100)),
        "{:?}",
        ids(&hits)
    );
    // The nearest passing row comes first.
    assert_eq!(hits[0].chunk_id, "chunk-101");
    // The text side's sample is taken among passing rows: with the filter
    // passing only the rare row, it is found although 299 rows hold "stone".
    req.filter =
        Some(Filter::parse(&json!({"equals": {"key": "kind", "value": "rare"}})).expect("parses"));
    req.text = "stone".into();
    let hits = store.search(&req).await.expect("searches");
    assert_eq!(ids(&hits), ["chunk-299"]);
}

/// The store's HYBRID before it was bounded: every matching row ranked.
async fn exhaustive_hybrid(
    pg: &TestPostgres,
    q: [f32; DIM],
    text: &str,
    limit: usize,
) -> Vec<(String, f64)> {
    let (client, conn) = tokio_postgres::connect(&pg.conn_str("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(conn);
    let rows = client
        .query(
            "WITH tq AS (SELECT replace(plainto_tsquery('simple', $2::text)::text, ' & ', ' | ')::tsquery AS q), \
             by_vector AS (SELECT id FROM bedrock_integration.bedrock_kb ORDER BY embedding <=> $1 LIMIT 100), \
             by_text AS (SELECT id FROM bedrock_integration.bedrock_kb, tq \
               WHERE to_tsvector('simple', chunks) @@ tq.q \
               ORDER BY ts_rank_cd(to_tsvector('simple', chunks), tq.q) DESC LIMIT 100) \
             SELECT metadata::jsonb ->> 'x-basalt-kb-chunk-id', (embedding <=> $1)::float8, \
               CASE WHEN to_tsvector('simple', chunks) @@ tq.q \
               THEN ts_rank_cd(to_tsvector('simple', chunks), tq.q)::float8 ELSE 0 END \
             FROM bedrock_integration.bedrock_kb, tq \
             WHERE id IN (SELECT id FROM by_vector UNION SELECT id FROM by_text)",
            &[&pgvector::Vector::from(q.to_vec()), &text],
        )
        .await
        .expect("the exhaustive query runs");
    let scored: Vec<(String, f64, f64)> = rows
        .iter()
        .map(|r| (r.get(0), 1.0 - r.get::<_, f64>(1) / 2.0, r.get(2)))
        .collect();
    let best = scored.iter().map(|s| s.2).fold(0.0, f64::max);
    let mut hits: Vec<(String, f64)> = scored
        .into_iter()
        .map(|(id, sem, rank)| {
            let kw = if best > 0.0 { rank / best } else { 0.0 };
            (id, 0.5 * sem.clamp(0.0, 1.0) + 0.5 * kw)
        })
        .collect();
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    hits.truncate(limit);
    hits
}

#[tokio::test]
async fn hybrid_matches_the_exhaustive_query_where_every_match_fits() {
    let Some(pg) = server() else { return };
    let store = store(&pg).await;
    // 150 chunks of three words from 30: a two-word query matches about 30
    // rows, under both the old text top 100 and the new bound.
    let vocab: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
    let mut seed: u64 = 7;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    let docs: Docs = (0..150)
        .map(|i| {
            let text = (0..3)
                .map(|_| vocab[next() % 30].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let v = [
                (next() % 1000) as f32 / 500.0 - 1.0,
                (next() % 1000) as f32 / 500.0 - 1.0,
                (next() % 1000) as f32 / 500.0 - 1.0,
                0.1,
            ];
            let c = chunk(
                &format!("c{i:03}"),
                &format!("d{i:03}"),
                &text,
                v,
                json!({}),
            );
            (c.document_id.clone(), vec![c])
        })
        .collect();
    store.upsert_documents(docs).await.expect("upserts");
    for qi in 0..12 {
        let q = [
            (next() % 1000) as f32 / 500.0 - 1.0,
            (next() % 1000) as f32 / 500.0 - 1.0,
            (next() % 1000) as f32 / 500.0 - 1.0,
            0.1,
        ];
        let text = format!("{} {}", vocab[next() % 30], vocab[next() % 30]);
        let want = exhaustive_hybrid(&pg, q, &text, 20).await;
        let got = store
            .search(&request(q, &text, SearchType::Hybrid, 20))
            .await
            .expect("searches");
        let got_ids: Vec<&str> = ids(&got);
        let want_ids: Vec<&str> = want.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(got_ids, want_ids, "query {qi}: {text:?}");
        for (g, (_, w)) in got.iter().zip(&want) {
            assert!((g.score - w).abs() < 1e-9, "query {qi}: {} vs {w}", g.score);
        }
    }
}

#[tokio::test]
async fn a_users_table_without_the_text_index_still_answers_hybrid() {
    let Some(pg) = server() else { return };
    // The table as a user makes it, without the GIN index.
    sql(
        &pg,
        "CREATE EXTENSION vector;
         CREATE SCHEMA bedrock_integration;
         CREATE TABLE bedrock_integration.bedrock_kb (id uuid PRIMARY KEY, embedding vector(4), \
           chunks text, metadata json, custom_metadata jsonb);",
    )
    .await;
    let conn = pg.conn_str("postgres");
    let mapping = RdsMapping::bedrock_default(TABLE);
    let store = PgVectorStore::connect_with(
        &conn,
        mapping.clone(),
        DIM,
        StoreOptions {
            text_candidates: 5,
            ..StoreOptions::default()
        },
    )
    .await
    .expect("connects without the index");
    assert!(!store.has_text_index());
    store
        .upsert_documents(sample_corpus(300))
        .await
        .expect("upserts");
    let q = [1.0, 0.0, 0.0, 0.0];
    let hits = store
        .search(&request(q, "obsidian", SearchType::Hybrid, 5))
        .await
        .expect("searches");
    assert_eq!(ids(&hits)[..2], ["chunk-000", "chunk-299"]);

    // The statement the warning names is the one that makes the store see it.
    let ddl = text_index_ddl(&mapping);
    assert_eq!(
        ddl,
        "CREATE INDEX ON \"bedrock_integration\".\"bedrock_kb\" USING gin \
         (to_tsvector('simple', \"chunks\"));"
    );
    sql(&pg, &ddl).await;
    let again = PgVectorStore::connect(&conn, mapping, DIM)
        .await
        .expect("connects");
    assert!(again.has_text_index());
    assert_eq!(
        again
            .search(&request(q, "obsidian", SearchType::Hybrid, 5))
            .await
            .expect("searches"),
        hits
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_a_bounded_pool() {
    let Some(pg) = server() else { return };
    let store = std::sync::Arc::new(
        store_with(
            &pg,
            StoreOptions {
                pool_size: 2,
                ..StoreOptions::default()
            },
        )
        .await,
    );
    store
        .upsert_documents(sample_corpus(300))
        .await
        .expect("upserts");
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let a = i as f32 * 0.1;
                let kind = if i % 2 == 0 {
                    SearchType::Hybrid
                } else {
                    SearchType::Semantic
                };
                store
                    .search(&request(
                        [a.cos(), a.sin(), 0.0, 0.0],
                        "stone obsidian",
                        kind,
                        10,
                    ))
                    .await
            })
        })
        .collect();
    for t in tasks {
        let hits = t.await.expect("task").expect("searches");
        assert_eq!(hits.len(), 10);
    }
    assert!(
        (1..=2).contains(&store.open_connections()),
        "{}",
        store.open_connections()
    );
    // The server agrees: the store's sessions plus this one.
    let (client, conn) = tokio_postgres::connect(&pg.conn_str("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(conn);
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("counts")
        .get(0);
    assert!((1..=2).contains(&n), "{n} sessions");
    assert!(PgVectorStore::connect_with(
        &pg.conn_str("postgres"),
        RdsMapping::bedrock_default(TABLE),
        DIM,
        StoreOptions {
            pool_size: 0,
            ..StoreOptions::default()
        }
    )
    .await
    .is_err());
}
