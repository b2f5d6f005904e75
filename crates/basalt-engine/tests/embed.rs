//! Embeddings with the real default embedding model (fetched by `basalt models fetch`):
//! texts batched with others of other lengths get the vectors they get alone, and our
//! encoder gives what candle-transformers' BERT gives.

use std::path::PathBuf;

use basalt_engine::bert::BertEncoder;
use basalt_engine::{EmbeddingModel, EmbeddingModelConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

fn model_dir() -> PathBuf {
    std::env::var_os("BASALT_MODELS_DIR")
        .map_or_else(
            || {
                PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/basalt/models")
            },
            PathBuf::from,
        )
        .join("all-minilm-l6-v2")
}

fn model() -> EmbeddingModel {
    EmbeddingModel::load(&EmbeddingModelConfig {
        dir: model_dir(),
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

#[test]
fn encoder_matches_candle_transformers_bert() {
    let dir = model_dir();
    let config: Config =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config.json"))
            .expect("config");
    let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let vb = || {
        VarBuilder::from_buffered_safetensors(weights.clone(), DType::F32, &Device::Cpu)
            .expect("safetensors")
    };
    let ours = BertEncoder::load(vb(), &config).expect("our encoder");
    let theirs = BertModel::load(vb(), &config).expect("candle's BertModel");
    // Three rows of 40 tokens; the last two padded after 25 and 7 real tokens.
    let rows = 3;
    let cols = 40;
    let ids: Vec<u32> = (0..rows * cols)
        .map(|i| 1000 + (i as u32 * 7919) % 20000)
        .collect();
    let mut mask = vec![1u32; rows * cols];
    mask[cols + 25..2 * cols].fill(0);
    mask[2 * cols + 7..].fill(0);
    let ids = Tensor::from_vec(ids, (rows, cols), &Device::Cpu).expect("ids");
    let mask = Tensor::from_vec(mask, (rows, cols), &Device::Cpu).expect("mask");
    let want = theirs
        .forward(&ids, &ids.zeros_like().expect("types"), Some(&mask))
        .expect("theirs");
    let got = ours.forward(&ids, &mask).expect("ours");
    assert_eq!(got.dims(), want.dims());
    let mask = mask
        .to_dtype(DType::F32)
        .expect("f32")
        .unsqueeze(2)
        .expect("mask");
    // Padded positions are never pooled, so only real tokens must agree.
    let diff = ((got - want).expect("diff").abs().expect("abs"))
        .broadcast_mul(&mask)
        .expect("masked")
        .max_all()
        .expect("max")
        .to_scalar::<f32>()
        .expect("scalar");
    assert!(diff < 1e-4, "largest difference in a hidden state: {diff}");
}
