//! Times the embedding forward pass on the batch benchmark's texts (bench/batch.py):
//! records/s and tokens/s by forward-batch size, and the padding share.
//!
//! cargo run --release -p basalt-engine --example embed_profile -- [MODEL_DIR] [RECORDS]

use std::time::Instant;

use basalt_engine::{EmbeddingModel, EmbeddingModelConfig};

const TOPICS: [&str; 8] = [
    "rivers",
    "volcanoes",
    "bread",
    "chess",
    "orbits",
    "glaciers",
    "violins",
    "bridges",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the server does, so the figures are the server's.
    basalt_engine::embed::configure_candle_threads();
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/basalt/models/all-minilm-l6-v2")
    });
    let records: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let model = EmbeddingModel::load(&EmbeddingModelConfig {
        dir: dir.into(),
        max_tokens: 512,
        max_queue: 4,
    })?;
    let texts: Vec<String> = (0..records)
        .map(|i| {
            format!(
                "Passage {i} is a short note about {} and how it works.",
                TOPICS[i % 8]
            )
        })
        .collect();
    let counts = texts
        .iter()
        .map(|t| model.count_tokens(t))
        .collect::<Result<Vec<usize>, _>>()?;
    let tokens: usize = counts.iter().sum();
    let longest = counts.iter().copied().max().unwrap_or(0);
    println!(
        "{records} texts, {tokens} tokens ({:.1} a text, longest {longest})",
        tokens as f64 / records as f64
    );
    model.embed_blocking(&texts[..8.min(records)])?; // warm
    for batch in [1usize, 8, 32, 64, 128, 256] {
        let n = if batch == 1 {
            records.min(100)
        } else {
            records
        };
        // Per-call times: the shared machine's noise comes in bursts, so the fastest call
        // (best) says what the code costs, and the median what a run can expect.
        let mut per_token_ms = Vec::new();
        let started = Instant::now();
        for (i, chunk) in texts[..n].chunks(batch).enumerate() {
            let call = Instant::now();
            model.embed_blocking(chunk)?;
            let chunk_tokens: usize = counts[i * batch..i * batch + chunk.len()].iter().sum();
            per_token_ms.push(call.elapsed().as_secs_f64() * 1000.0 / chunk_tokens as f64);
        }
        let s = started.elapsed().as_secs_f64();
        let toks: usize = counts[..n].iter().sum();
        per_token_ms.sort_by(f64::total_cmp);
        println!(
            "calls of {batch:>3}: {:.1} records/s, {:.0} tokens/s, {:.3} ms/token (per call: best {:.3}, median {:.3})",
            n as f64 / s,
            toks as f64 / s,
            s * 1000.0 / toks as f64,
            per_token_ms[0],
            per_token_ms[per_token_ms.len() / 2],
        );
    }
    Ok(())
}
