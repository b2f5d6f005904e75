//! The embedded index end to end: persistence, replacement, deletion, filters,
//! hybrid ranking and pagination, on both the exact and the HNSW paths.

use std::path::Path;

use basalt_index::{
    Chunk, EmbeddedIndex, Filter, Hit, IndexError, IndexOptions, SearchRequest, SearchType,
};
use serde_json::{json, Map, Value};

const DIM: usize = 16;
const GENRES: [&str; 3] = ["news", "sport", "science"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIM).map(|_| self.next()).collect()
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn chunk(id: &str, doc: &str, text: &str, vector: Vec<f32>, metadata: Value) -> Chunk {
    Chunk {
        chunk_id: id.into(),
        document_id: doc.into(),
        text: text.into(),
        return_text: None,
        vector,
        metadata: obj(metadata),
    }
}

fn semantic(vector: Vec<f32>, limit: usize) -> SearchRequest {
    SearchRequest {
        vector,
        text: String::new(),
        search_type: SearchType::Semantic,
        filter: None,
        limit,
        offset: 0,
    }
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.chunk_id.as_str()).collect()
}

/// Forces the HNSW path even for small indexes.
fn ann_options() -> IndexOptions {
    IndexOptions {
        exact_below: 0,
        ..IndexOptions::default()
    }
}

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i % DIM] = 1.0;
    v
}

/// 600 chunks in 60 documents, random vectors, metadata with every kind of value.
fn populate(index: &EmbeddedIndex, seed: u64) -> Vec<Chunk> {
    let mut rng = Rng(seed);
    let mut all = Vec::new();
    for d in 0..60 {
        let chunks: Vec<Chunk> = (0..10)
            .map(|c| {
                let n = d * 10 + c;
                chunk(
                    &format!("c{n:04}"),
                    &format!("d{d:02}"),
                    &format!("chunk {n} of document {d} about topic{}", n % 7),
                    rng.vector(),
                    json!({
                        "year": 2000 + (n % 25),
                        "genre": GENRES[n % 3],
                        "tags": [format!("t{}", n % 5), format!("t{}", n % 11)],
                        "public": n % 2 == 0,
                    }),
                )
            })
            .collect();
        all.extend(chunks.clone());
        index
            .upsert_document(&format!("d{d:02}"), chunks)
            .expect("upsert");
    }
    all
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn index_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<EmbeddedIndex>();
}

#[test]
fn persists_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let index = EmbeddedIndex::open(dir.path(), DIM).expect("open");
        index
            .upsert_document(
                "doc",
                vec![chunk(
                    "a",
                    "doc",
                    "the basalt columns",
                    axis(3),
                    json!({"k": 1}),
                )],
            )
            .expect("upsert");
    }
    let index = EmbeddedIndex::open(dir.path(), DIM).expect("reopen");
    assert_eq!(index.len(), 1);
    let hits = index.search(&semantic(axis(3), 5)).expect("search");
    assert_eq!(ids(&hits), ["a"]);
    assert_eq!(hits[0].text, "the basalt columns");
    assert_eq!(hits[0].document_id, "doc");
    assert_eq!(hits[0].metadata, obj(json!({"k": 1})));
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    let hybrid = index
        .search(&SearchRequest {
            text: "columns".into(),
            search_type: SearchType::Hybrid,
            ..semantic(axis(5), 5)
        })
        .expect("hybrid");
    assert_eq!(ids(&hybrid), ["a"]);
    // A wrong dimension count is refused, at open and at search.
    drop(index);
    assert!(matches!(
        EmbeddedIndex::open(dir.path(), DIM + 1),
        Err(IndexError::Dimensions { .. })
    ));
}

#[test]
fn persists_the_hnsw_side_and_survives_a_lost_or_damaged_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = {
        let index = EmbeddedIndex::open_with(dir.path(), DIM, ann_options()).expect("open");
        let all = populate(&index, 11);
        index.delete_document("d03").expect("delete");
        all
    };
    let query = all[123].vector.clone();
    let expect = {
        let index = EmbeddedIndex::open_with(dir.path(), DIM, ann_options()).expect("reopen");
        assert_eq!(index.len(), 590);
        assert_eq!(index.document_count(), 59);
        let hits = index.search(&semantic(query.clone(), 10)).expect("search");
        assert_eq!(hits[0].chunk_id, "c0123");
        ids(&hits).iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    // A damaged snapshot is rebuilt; a torn vector record (a crash while
    // appending) is cut.
    let graph = dir.path().join("graph-0.bin");
    let bytes = std::fs::read(&graph).expect("graph snapshot exists");
    std::fs::write(&graph, &bytes[..bytes.len() / 3]).expect("damage");
    let mut vf = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("vectors-0.bin"))
        .expect("vectors");
    std::io::Write::write_all(&mut vf, &[1, 2, 3, 4, 5]).expect("tear");
    drop(vf);
    let index = EmbeddedIndex::open_with(dir.path(), DIM, ann_options()).expect("reopen");
    assert_eq!(index.len(), 590);
    let hits = index.search(&semantic(query.clone(), 10)).expect("search");
    assert_eq!(hits[0].chunk_id, "c0123");
    let overlap = ids(&hits)
        .iter()
        .filter(|h| expect.contains(&h.to_string()))
        .count();
    assert!(overlap >= 9, "{overlap}");
    // Writes after the repair land aligned and survive another reopen.
    index
        .upsert_document("new", vec![chunk("n1", "new", "fresh", axis(1), json!({}))])
        .expect("upsert");
    drop(index);
    std::fs::remove_file(&graph).ok();
    let index = EmbeddedIndex::open_with(dir.path(), DIM, ann_options()).expect("reopen");
    assert_eq!(index.len(), 591);
    assert_eq!(
        ids(&index.search(&semantic(axis(1), 1)).expect("search")),
        ["n1"]
    );
    assert_eq!(
        index.search(&semantic(query, 1)).expect("search")[0].chunk_id,
        "c0123"
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _index = EmbeddedIndex::open(dir.path(), DIM).expect("open");
    let err = EmbeddedIndex::open(dir.path(), DIM).expect_err("second open");
    assert!(err.to_string().contains("open in another process"), "{err}");
}

fn hybrid(vector: Vec<f32>, text: &str, limit: usize) -> SearchRequest {
    SearchRequest {
        text: text.into(),
        search_type: SearchType::Hybrid,
        ..semantic(vector, limit)
    }
}

fn upsert_replaces_and_delete_removes(options: IndexOptions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EmbeddedIndex::open_with(dir.path(), DIM, options).expect("open");
    populate(&index, 5);
    let old = vec![
        chunk("x1", "doc", "zebra stripes", axis(0), json!({})),
        chunk("x2", "doc", "zebra crossing", axis(1), json!({})),
        chunk("x3", "doc", "zebra finch", axis(2), json!({})),
    ];
    index.upsert_document("doc", old).expect("upsert");
    assert_eq!(index.len(), 603);
    index
        .upsert_document(
            "doc",
            vec![chunk("x4", "doc", "giraffe neck", axis(0), json!({}))],
        )
        .expect("replace");
    assert_eq!(index.len(), 601);
    let hits = index.search(&hybrid(axis(1), "zebra", 50)).expect("search");
    assert!(hits
        .iter()
        .all(|h| !h.chunk_id.starts_with("x1") && h.chunk_id != "x2" && h.chunk_id != "x3"));
    let hits = index.search(&semantic(axis(0), 1)).expect("search");
    assert_eq!(ids(&hits), ["x4"]);
    let hits = index
        .search(&hybrid(axis(0), "giraffe", 1))
        .expect("search");
    assert_eq!(ids(&hits), ["x4"]);

    assert_eq!(index.delete_document("doc").expect("delete"), 1);
    assert_eq!(index.delete_document("doc").expect("delete again"), 0);
    assert_eq!(index.len(), 600);
    assert!(!index.contains_document("doc"));
    let hits = index.search(&semantic(axis(0), 600)).expect("search");
    assert!(hits.iter().all(|h| h.chunk_id != "x4"));
    assert_eq!(hits.len(), 600);
    let hits = index
        .search(&hybrid(axis(0), "giraffe", 600))
        .expect("search");
    assert!(hits.iter().all(|h| h.chunk_id != "x4"));

    // Upserting a document with no chunks deletes it.
    index.upsert_document("d00", Vec::new()).expect("empty");
    assert_eq!(index.len(), 590);
    // A chunk id moves from its old document to the new one.
    index
        .upsert_document(
            "moved",
            vec![chunk("c0015", "moved", "moved text", axis(4), json!({}))],
        )
        .expect("move");
    assert_eq!(index.len(), 590);
    let hit = &index.search(&semantic(axis(4), 1)).expect("search")[0];
    assert_eq!(
        (hit.chunk_id.as_str(), hit.document_id.as_str()),
        ("c0015", "moved")
    );
}

#[test]
fn upsert_replaces_and_delete_removes_exact() {
    upsert_replaces_and_delete_removes(IndexOptions::default());
}

#[test]
fn upsert_replaces_and_delete_removes_hnsw() {
    upsert_replaces_and_delete_removes(ann_options());
}

#[test]
fn hybrid_lifts_a_rare_keyword_that_semantic_ranks_low() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EmbeddedIndex::open(dir.path(), DIM).expect("open");
    let q = axis(0);
    let mut rng = Rng(9);
    let mut chunks = Vec::new();
    for i in 0..20 {
        // Near the query but without the keyword.
        let mut v = q.clone();
        v.iter_mut().for_each(|x| *x += 0.2 * rng.next());
        chunks.push(chunk(
            &format!("near{i:02}"),
            "doc",
            "general notes on volcanic rock",
            v,
            json!({}),
        ));
    }
    // Far from the query but holding the rare keyword.
    chunks.push(chunk(
        "rare",
        "doc",
        "the part number XJ9000 fits this pump",
        axis(7),
        json!({}),
    ));
    index.upsert_document("doc", chunks).expect("upsert");
    let sem = index.search(&semantic(q.clone(), 21)).expect("semantic");
    assert_eq!(sem.last().map(|h| h.chunk_id.as_str()), Some("rare"));
    let hyb = index
        .search(&hybrid(q.clone(), "which pump takes xj9000", 5))
        .expect("hybrid");
    assert_eq!(hyb[0].chunk_id, "rare");
    assert!(hyb.iter().all(|h| (0.0..=1.0).contains(&h.score)));
    // Scores: 0.5 * (1 + cos) / 2 + 0.5 * bm25 / max bm25.
    let cos_rare = 0.0;
    assert!((hyb[0].score - (0.5 * (1.0 + cos_rare) / 2.0 + 0.5)).abs() < 1e-6);
    // No query term matches anything: HYBRID still answers, in semantic order.
    let none = index
        .search(&hybrid(q.clone(), "qqqq zzzz", 21))
        .expect("hybrid");
    assert_eq!(ids(&none), ids(&sem));
    for (h, s) in none.iter().zip(&sem) {
        assert!((h.score - 0.5 * s.score).abs() < 1e-9);
    }
    // An empty query text too.
    let empty = index.search(&hybrid(q, "", 21)).expect("hybrid");
    assert_eq!(ids(&empty), ids(&sem));
}

fn filters() -> Vec<Value> {
    vec![
        json!({"equals":{"key":"genre","value":"sport"}}),
        json!({"notEquals":{"key":"genre","value":"sport"}}),
        json!({"greaterThan":{"key":"year","value":2020}}),
        json!({"lessThanOrEquals":{"key":"year","value":2003}}),
        json!({"in":{"key":"genre","value":["news","science"]}}),
        json!({"notIn":{"key":"year","value":[2001, 2002, 2003]}}),
        json!({"listContains":{"key":"tags","value":"t3"}}),
        json!({"stringContains":{"key":"genre","value":"ien"}}),
        json!({"startsWith":{"key":"genre","value":"sp"}}),
        json!({"equals":{"key":"public","value":true}}),
        json!({"andAll":[{"equals":{"key":"genre","value":"news"}},{"greaterThanOrEquals":{"key":"year","value":2010}}]}),
        json!({"orAll":[{"listContains":{"key":"tags","value":"t10"}},{"lessThan":{"key":"year","value":2002}}]}),
        json!({"equals":{"key":"missing","value":1}}),
        // One chunk only: chunk 123 has year 2023, tags t3 and t2, genre news.
        json!({"andAll":[{"equals":{"key":"x-amz-bedrock-kb-chunk-id","value":"c0123"}},{"equals":{"key":"public","value":false}}]}),
    ]
}

fn filtered_search_is_exact(options: IndexOptions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EmbeddedIndex::open_with(dir.path(), DIM, options).expect("open");
    let mut all = populate(&index, 21);
    // Give one chunk the Bedrock chunk id key so a filter can single it out.
    let mut c = all[123].clone();
    c.metadata
        .insert("x-amz-bedrock-kb-chunk-id".into(), json!("c0123"));
    all[123] = c;
    let doc12: Vec<Chunk> = all[120..130].to_vec();
    index.upsert_document("d12", doc12).expect("upsert");

    let mut rng = Rng(77);
    for f in filters() {
        let filter = Filter::parse(&f).expect("filter");
        for _ in 0..5 {
            let q = rng.vector();
            let mut expect: Vec<(f64, &str)> = all
                .iter()
                .filter(|c| filter.matches(&c.metadata))
                .map(|c| ((1.0 + cos(&q, &c.vector)) / 2.0, c.chunk_id.as_str()))
                .collect();
            expect.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
            let hits = index
                .search(&SearchRequest {
                    filter: Some(filter.clone()),
                    ..semantic(q.clone(), 10)
                })
                .expect("search");
            let want = expect.len().min(10);
            assert_eq!(hits.len(), want, "{f}");
            for h in &hits {
                let c = all
                    .iter()
                    .find(|c| c.chunk_id == h.chunk_id)
                    .expect("known");
                assert!(filter.matches(&c.metadata), "{f}: {} passes", h.chunk_id);
            }
            // The HNSW path may miss a neighbour now and then; the top must match.
            let got: Vec<&str> = ids(&hits);
            let exp: Vec<&str> = expect.iter().take(want).map(|e| e.1).collect();
            let overlap = got.iter().filter(|g| exp.contains(g)).count();
            assert!(overlap + 1 >= want, "{f}: {got:?} vs {exp:?}");
            // HYBRID obeys the filter as well.
            let hyb = index
                .search(&SearchRequest {
                    filter: Some(filter.clone()),
                    ..hybrid(q.clone(), "topic3 document", 10)
                })
                .expect("hybrid");
            assert_eq!(hyb.len(), want, "{f}");
            for h in &hyb {
                let c = all
                    .iter()
                    .find(|c| c.chunk_id == h.chunk_id)
                    .expect("known");
                assert!(
                    filter.matches(&c.metadata),
                    "{f}: {} passes hybrid",
                    h.chunk_id
                );
            }
        }
    }
}

#[test]
fn filtered_search_is_exact_on_the_exact_path() {
    filtered_search_is_exact(IndexOptions::default());
}

#[test]
fn filtered_search_is_exact_on_the_hnsw_path() {
    filtered_search_is_exact(ann_options());
}

fn paginates(options: IndexOptions, search_type: SearchType) {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EmbeddedIndex::open_with(dir.path(), DIM, options).expect("open");
    populate(&index, 33);
    // Ties: identical vectors order by chunk id.
    let twins: Vec<Chunk> = ["t3", "t1", "t2"]
        .iter()
        .map(|id| chunk(id, "twins", "twin topic3", axis(2), json!({})))
        .collect();
    index.upsert_document("twins", twins).expect("upsert");
    let req = SearchRequest {
        text: "topic3 twin".into(),
        search_type,
        ..semantic(axis(2), 60)
    };
    let full = index.search(&req).expect("full");
    assert_eq!(full.len(), 60);
    assert_eq!(&ids(&full)[..3], ["t1", "t2", "t3"]);
    let mut paged = Vec::new();
    for page in 0..6 {
        let hits = index
            .search(&SearchRequest {
                offset: page * 10,
                limit: 10,
                ..req.clone()
            })
            .expect("page");
        paged.extend(hits);
    }
    assert_eq!(ids(&paged), ids(&full));
    for w in full.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    let past = index
        .search(&SearchRequest {
            offset: 10_000 - 5,
            limit: 5,
            ..req.clone()
        })
        .expect("past the end");
    assert!(past.is_empty());
}

#[test]
fn paginates_stably() {
    paginates(IndexOptions::default(), SearchType::Semantic);
    paginates(ann_options(), SearchType::Semantic);
    paginates(IndexOptions::default(), SearchType::Hybrid);
    paginates(ann_options(), SearchType::Hybrid);
}

#[test]
fn refuses_what_is_out_of_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EmbeddedIndex::open(dir.path(), DIM).expect("open");
    let bad = index.upsert_document(
        "d",
        vec![chunk("a", "d", "x", vec![1.0; DIM - 1], json!({}))],
    );
    assert!(matches!(
        bad,
        Err(IndexError::Dimensions {
            expected: DIM,
            got: 15
        })
    ));
    assert!(matches!(
        index.upsert_document("d", vec![chunk("a", "d", "x", vec![0.0; DIM], json!({}))]),
        Err(IndexError::Invalid(_))
    ));
    assert!(matches!(
        index.upsert_document(
            "d",
            vec![chunk("a", "d", "x", vec![f32::NAN; DIM], json!({}))]
        ),
        Err(IndexError::Invalid(_))
    ));
    let twice = vec![
        chunk("a", "d", "x", axis(1), json!({})),
        chunk("a", "d", "y", axis(2), json!({})),
    ];
    assert!(matches!(
        index.upsert_document("d", twice),
        Err(IndexError::Invalid(_))
    ));
    assert!(index.is_empty());
    assert!(matches!(
        index.search(&semantic(vec![1.0; DIM + 3], 1)),
        Err(IndexError::Dimensions { .. })
    ));
    let long = SearchRequest {
        text: "x".repeat(20_001),
        ..hybrid(axis(1), "", 1)
    };
    assert!(matches!(index.search(&long), Err(IndexError::Invalid(_))));
    let deep = SearchRequest {
        offset: 9_999,
        limit: 2,
        ..semantic(axis(1), 1)
    };
    assert!(matches!(index.search(&deep), Err(IndexError::Invalid(_))));
    assert!(index
        .search(&semantic(axis(1), 0))
        .expect("limit 0")
        .is_empty());
    assert!(matches!(
        EmbeddedIndex::open(&dir.path().join("other"), 0),
        Err(IndexError::Invalid(_))
    ));
}

#[test]
fn compaction_drops_dead_vectors_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = {
        let index = EmbeddedIndex::open_with(dir.path(), DIM, ann_options()).expect("open");
        let all = populate(&index, 3);
        for d in 0..50 {
            index.delete_document(&format!("d{d:02}")).expect("delete");
        }
        index.compact().expect("compact");
        assert_eq!(index.len(), 100);
        all
    };
    assert!(!dir.path().join("vectors-0.bin").exists());
    assert!(Path::new(&dir.path().join("vectors-1.bin")).exists());
    let index = EmbeddedIndex::open_with(dir.path(), DIM, ann_options()).expect("reopen");
    assert_eq!(index.len(), 100);
    let hits = index
        .search(&semantic(all[555].vector.clone(), 3))
        .expect("search");
    assert_eq!(hits[0].chunk_id, "c0555");
    let hits = index
        .search(&hybrid(all[555].vector.clone(), "chunk 555", 3))
        .expect("hybrid");
    assert_eq!(hits[0].chunk_id, "c0555");
    // The metadata columns were rebuilt with the rest: a filtered search finds
    // exactly the surviving chunks that pass, on the HNSW walk and on the
    // exact scan (default options: 100 chunks are below the threshold).
    let check = |index: &EmbeddedIndex| {
        let filter = Filter::parse(&json!({"equals":{"key":"year","value":2005}})).expect("filter");
        let hits = index
            .search(&SearchRequest {
                filter: Some(filter),
                ..semantic(all[555].vector.clone(), 100)
            })
            .expect("filtered");
        let mut got: Vec<&str> = ids(&hits);
        got.sort_unstable();
        let expect: Vec<String> = (500..600)
            .filter(|n| 2000 + (n % 25) == 2005)
            .map(|n| format!("c{n:04}"))
            .collect();
        assert_eq!(got, expect);
    };
    check(&index);
    drop(index);
    check(&EmbeddedIndex::open(dir.path(), DIM).expect("reopen"));
}

#[test]
fn searches_run_while_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EmbeddedIndex::open_with(dir.path(), DIM, ann_options()).expect("open");
    populate(&index, 8);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut rng = Rng(4);
            for _ in 0..200 {
                let hits = index
                    .search(&hybrid(rng.vector(), "topic2", 10))
                    .expect("search");
                assert_eq!(hits.len(), 10);
            }
        });
        for i in 0..20 {
            let doc = format!("w{i}");
            index
                .upsert_document(
                    &doc,
                    vec![chunk(&format!("w{i}"), &doc, "topic2", axis(i), json!({}))],
                )
                .expect("upsert");
        }
        reader.join().expect("reader");
    });
    assert_eq!(index.len(), 620);
}
