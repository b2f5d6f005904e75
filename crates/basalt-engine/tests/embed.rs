//! Embeddings with the real default embedding model (fetched by `basalt models fetch`):
//! texts batched with others of other lengths get the vectors they get alone.

use std::path::PathBuf;

use basalt_engine::{EmbeddingModel, EmbeddingModelConfig};

fn model() -> EmbeddingModel {
    let dir = std::env::var_os("BASALT_MODELS_DIR").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/basalt/models"),
        PathBuf::from,
    );
    EmbeddingModel::load(&EmbeddingModelConfig {
        dir: dir.join("all-minilm-l6-v2"),
        max_tokens: 256,
        max_queue: 4,
    })
    .expect("the default embedding model is fetched (basalt models fetch)")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn batched_vectors_match_each_text_alone_in_input_order() {
    let model = model();
    // Lengths from 3 to a few hundred tokens, out of order, so passes are sorted,
    // split and padded differently from one text alone.
    let mut texts: Vec<String> = (0..70)
        .map(|i| {
            let words = 1 + (i * 37) % 200;
            (0..words)
                .map(|w| ["river", "stone", "bread", "orbit", "violin"][(i + w) % 5])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    texts.push("Passage 7 is a short note about chess and how it works.".into());
    let batched = model.embed_blocking(&texts).expect("batch");
    assert_eq!(batched.vectors.len(), texts.len());
    for (i, text) in texts.iter().enumerate() {
        let alone = model
            .embed_blocking(std::slice::from_ref(text))
            .expect("alone");
        assert_eq!(batched.token_counts[i], alone.token_counts[0], "text {i}");
        assert_eq!(
            batched.token_counts[i],
            model.count_tokens(text).expect("count")
        );
        let c = cosine(&batched.vectors[i], &alone.vectors[0]);
        assert!(c > 1.0 - 1e-5, "text {i}: cosine {c}");
        let diff = batched.vectors[i]
            .iter()
            .zip(&alone.vectors[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "text {i}: largest difference {diff}");
    }
    // Distinct texts are not given each other's vectors.
    assert!(cosine(&batched.vectors[0], &batched.vectors[70]) < 0.99);
}
