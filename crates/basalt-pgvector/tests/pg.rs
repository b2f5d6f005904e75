//! Against a real PostgreSQL with pgvector (see `basalt_pgvector::test_server`):
//! each test starts its own server on 127.0.0.1 and stops it at the end.

use basalt_index::{Chunk, EmbeddedIndex, Filter, IndexError, SearchRequest, SearchType};
use basalt_pgvector::test_server::TestPostgres;
use basalt_pgvector::{PgVectorStore, RdsMapping, DOCUMENT_ID_KEY};
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
