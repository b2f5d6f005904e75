//! Retrieval benchmark for the embedded index: build rate, search latency and
//! recall@10 against exact search.
//!
//! `cargo bench -p basalt-index --bench retrieve` (BENCH_CHUNKS, BENCH_QUERIES
//! and BENCH_DIM override the sizes: 100,000 chunks, 1,000 queries, 384
//! dimensions, the shape of all-MiniLM-L6-v2 embeddings; BENCH_NOISE the noise
//! weight, 0.5).
//!
//! The vectors are synthetic but shaped like sentence embeddings: 2,000 topic
//! centres in 100 groups, a shared 64-dimensional "style" subspace, and
//! isotropic noise, so that near neighbours are meaningful (uniform random vectors in 384
//! dimensions have none, and no ANN index does well on them). Queries are
//! fresh draws from the same distribution, not indexed points.

use std::time::{Duration, Instant};

use basalt_index::hnsw::dot;
use basalt_index::{Chunk, EmbeddedIndex, Filter, IndexOptions, SearchRequest, SearchType};
use serde_json::{json, Map, Value};

mod synthetic;

use synthetic::*;

fn exact_top10(vectors: &[Vec<f32>], q: &[f32], keep: &dyn Fn(usize) -> bool) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = vectors
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, v)| (dot(q, v), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(10).map(|(_, i)| i).collect()
}

struct Row {
    name: String,
    p50: f64,
    p99: f64,
    recall: Option<f64>,
}

fn run_queries(
    index: &EmbeddedIndex,
    queries: &[Vec<f32>],
    texts: &[String],
    search_type: SearchType,
    filter: Option<&Filter>,
    truth: Option<&[Vec<usize>]>,
) -> (Duration, Duration, Option<f64>) {
    let mut times = Vec::with_capacity(queries.len());
    let mut found = 0usize;
    let mut total = 0usize;
    for (qi, q) in queries.iter().enumerate() {
        let req = SearchRequest {
            vector: q.clone(),
            text: texts[qi].clone(),
            search_type,
            filter: filter.cloned(),
            limit: 10,
            offset: 0,
        };
        let t = Instant::now();
        let hits = match index.search(&req) {
            Ok(h) => h,
            Err(e) => panic!("search failed: {e}"),
        };
        times.push(t.elapsed());
        if let Some(truth) = truth {
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
    let recall = truth.map(|_| found as f64 / total.max(1) as f64);
    (percentile(&times, 0.5), percentile(&times, 0.99), recall)
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; stay quick then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let n = env("BENCH_CHUNKS", 100_000);
    let nq = env("BENCH_QUERIES", 1_000);
    let dim = env("BENCH_DIM", 384);
    // Weight of the isotropic noise; higher makes neighbours vaguer and ANN harder.
    let noise = std::env::var("BENCH_NOISE")
        .ok()
        .and_then(|v| v.parse::<f32>().ok())
        .unwrap_or(0.5);
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

    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let index = match EmbeddedIndex::open(dir.path(), dim) {
        Ok(i) => i,
        Err(e) => panic!("open: {e}"),
    };
    println!("building...");
    let t = Instant::now();
    let mut pending: Vec<(String, Vec<Chunk>)> = Vec::new();
    let mut in_batch = 0;
    for c in chunks {
        if pending.last().is_none_or(|(d, _)| *d != c.document_id) {
            pending.push((c.document_id.clone(), Vec::new()));
        }
        if let Some((_, list)) = pending.last_mut() {
            list.push(c);
        }
        in_batch += 1;
        if in_batch >= 1_000 {
            if let Err(e) = index.upsert_documents(std::mem::take(&mut pending)) {
                panic!("upsert: {e}");
            }
            in_batch = 0;
        }
    }
    if !pending.is_empty() {
        if let Err(e) = index.upsert_documents(pending) {
            panic!("upsert: {e}");
        }
    }
    if let Err(e) = index.flush() {
        panic!("flush: {e}");
    }
    let build = t.elapsed();

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

    println!("exact ground truth...");
    let truth: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| exact_top10(&vectors, q, &|_| true))
        .collect();
    let nn_cos = truth
        .iter()
        .zip(&queries)
        .map(|(t, q)| t.first().map_or(0.0, |&i| dot(q, &vectors[i])) as f64)
        .sum::<f64>()
        / nq as f64;
    let tenth_cos = truth
        .iter()
        .zip(&queries)
        .map(|(t, q)| t.last().map_or(0.0, |&i| dot(q, &vectors[i])) as f64)
        .sum::<f64>()
        / nq as f64;
    let random_cos = (0..nq)
        .map(|i| dot(&queries[i], &vectors[(i * 7919) % n]) as f64)
        .sum::<f64>()
        / nq as f64;
    let broad = match Filter::parse(&json!({"in": {"key": "lang", "value": ["en", "de"]}})) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let broad_truth: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| exact_top10(&vectors, q, &|i| broad.matches(&metas[i])))
        .collect();
    let narrow = match Filter::parse(&json!({"andAll": [
        {"equals": {"key": "lang", "value": "fr"}},
        {"greaterThanOrEquals": {"key": "year", "value": 2023}}]}))
    {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let narrow_truth: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| exact_top10(&vectors, q, &|i| narrow.matches(&metas[i])))
        .collect();

    let mut rows = Vec::new();
    let mut row = |name: &str, r: (Duration, Duration, Option<f64>)| {
        rows.push(Row {
            name: name.to_string(),
            p50: ms(r.0),
            p99: ms(r.1),
            recall: r.2,
        })
    };
    // Warm the caches once.
    run_queries(
        &index,
        &queries[..nq.min(50)],
        &texts,
        SearchType::Semantic,
        None,
        None,
    );
    row(
        "SEMANTIC",
        run_queries(
            &index,
            &queries,
            &texts,
            SearchType::Semantic,
            None,
            Some(&truth),
        ),
    );
    row(
        "SEMANTIC, filter passing 50%",
        run_queries(
            &index,
            &queries,
            &texts,
            SearchType::Semantic,
            Some(&broad),
            Some(&broad_truth),
        ),
    );
    row(
        "SEMANTIC, filter passing 2%",
        run_queries(
            &index,
            &queries,
            &texts,
            SearchType::Semantic,
            Some(&narrow),
            Some(&narrow_truth),
        ),
    );
    row(
        "HYBRID (2 query words)",
        run_queries(&index, &queries, &texts, SearchType::Hybrid, None, None),
    );
    row(
        "HYBRID, filter passing 50%",
        run_queries(
            &index,
            &queries,
            &texts,
            SearchType::Hybrid,
            Some(&broad),
            None,
        ),
    );
    let live = index.len();
    drop(index);
    let t = Instant::now();
    let reopened = match EmbeddedIndex::open(dir.path(), dim) {
        Ok(i) => i,
        Err(e) => panic!("reopen: {e}"),
    };
    let reopen = t.elapsed();
    assert_eq!(reopened.len(), live);
    drop(reopened);

    // Recall and latency against the HNSW beam width.
    let mut sweep = Vec::new();
    for ef in [32, 64, 96, 128, 200] {
        let options = IndexOptions {
            ef_search: ef,
            ..IndexOptions::default()
        };
        let index = match EmbeddedIndex::open_with(dir.path(), dim, options) {
            Ok(i) => i,
            Err(e) => panic!("reopen: {e}"),
        };
        let r = run_queries(
            &index,
            &queries,
            &texts,
            SearchType::Semantic,
            None,
            Some(&truth),
        );
        sweep.push((ef, r));
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "chunks: {n}, dimensions: {dim}, queries: {nq}, k = 10, noise: {noise}, cores: {cores}"
    );
    println!(
        "build: {:.1} s ({:.0} chunks/s, batches of 1,000 chunks, one commit each)",
        build.as_secs_f64(),
        n as f64 / build.as_secs_f64()
    );
    println!("reopen: {:.2} s", reopen.as_secs_f64());
    println!(
        "data: mean cosine of a query to its nearest chunk {nn_cos:.2}, to its 10th {tenth_cos:.2}, to a random chunk {random_cos:.2}"
    );
    println!();
    println!("| search | p50 ms | p99 ms | recall@10 |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        let recall = r.recall.map_or("-".to_string(), |x| format!("{x:.4}"));
        println!("| {} | {:.2} | {:.2} | {} |", r.name, r.p50, r.p99, recall);
    }
    println!();
    println!("| ef_search | p50 ms | p99 ms | recall@10 |");
    println!("|---:|---:|---:|---:|");
    for (ef, (p50, p99, recall)) in sweep {
        println!(
            "| {ef} | {:.2} | {:.2} | {:.4} |",
            ms(p50),
            ms(p99),
            recall.unwrap_or(0.0)
        );
    }
}
