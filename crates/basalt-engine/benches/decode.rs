//! Prefill and decode speed of Basalt's text engine against its peer in the same
//! run: a bare llama.cpp loop over the same GGUF file (llama-cpp-2 with llama.cpp's
//! own greedy sampler), same threads, same prompt. The gap is Basalt's own cost
//! (sampler, stop matcher, channel, worker hand-off).
//!
//! `BASALT_MODELS_DIR=... cargo bench -p basalt-engine --bench decode`
//! Prints one line per engine: prefill tok/s, decode tok/s (median of runs).

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use basalt_engine::{GenerateRequest, Lane, SamplingParams, TextModel, TextModelConfig};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

const RUNS: usize = 5;
const DECODE_TOKENS: u32 = 128;
const PROMPT: &str = "<|im_start|>user\nWrite a long, detailed story about a dragon who learns to bake bread in a small mountain village, with many characters and events.<|im_end|>\n<|im_start|>assistant\n";

fn model_path() -> PathBuf {
    let dir = std::env::var_os("BASALT_MODELS_DIR").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/basalt/models"),
        PathBuf::from,
    );
    dir.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn threads() -> i32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as i32)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Returns (prefill tok/s, decode tok/s) for one run of the bare llama.cpp loop.
fn peer_run(model: &LlamaModel, backend: &LlamaBackend) -> (f64, f64) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(2048))
        .with_n_batch(512)
        .with_n_threads(threads())
        .with_n_threads_batch(threads());
    let mut ctx = model.new_context(backend, params).expect("context");
    let tokens = model.vocab().tokenize(PROMPT.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, 1);
    for (i, t) in tokens.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i + 1 == tokens.len())
            .expect("batch");
    }
    let t0 = Instant::now();
    ctx.decode(&mut batch).expect("prefill");
    let prefill = t0.elapsed();
    let mut sampler = LlamaSampler::greedy();
    let first = tokens.len() as i32;
    let t1 = Instant::now();
    for pos in first..first + DECODE_TOKENS as i32 {
        let token = sampler.sample(&ctx, batch.n_tokens() - 1);
        sampler.accept(token);
        batch.clear();
        batch.add(token, pos, &[0], true).expect("batch");
        ctx.decode(&mut batch).expect("decode");
    }
    let decode = t1.elapsed();
    (
        tokens.len() as f64 / prefill.as_secs_f64(),
        f64::from(DECODE_TOKENS) / decode.as_secs_f64(),
    )
}

fn basalt_run(model: &TextModel, runtime: &tokio::runtime::Runtime) -> (f64, f64) {
    let request = GenerateRequest {
        prompt: PROMPT.to_string(),
        max_tokens: DECODE_TOKENS,
        stop_sequences: Vec::new(),
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        cache_points: Vec::new(),
        constraint: None,
        lane: Lane::Shared,
    };
    let started = Instant::now();
    let (_, summary) = runtime
        .block_on(model.generate(request).expect("admitted").collect())
        .expect("generation");
    let total = started.elapsed();
    let prefill = Duration::from_millis(summary.first_token_ms.max(1));
    let decode = total.saturating_sub(prefill);
    (
        f64::from(summary.input_tokens) / prefill.as_secs_f64(),
        f64::from(summary.output_tokens) / decode.as_secs_f64(),
    )
}

fn main() {
    let path = model_path();
    assert!(
        path.is_file(),
        "{} is missing: run `basalt models fetch`",
        path.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let basalt = TextModel::load(&TextModelConfig {
        path: path.clone(),
        context_window: 2048,
        threads: threads(),
        max_queue: 1,
        ..TextModelConfig::new(path.clone())
    })
    .expect("load");
    // llama.cpp allows one backend per process; share Basalt's.
    let backend: &LlamaBackend = basalt_engine::text::backend().expect("backend");
    let peer_model = LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())
        .expect("peer load");

    let mut rows = Vec::new();
    let (mut bp, mut bd) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (p, d) = basalt_run(&basalt, &runtime);
        bp.push(p);
        bd.push(d);
    }
    rows.push(("basalt TextModel", median(bp), median(bd)));
    let (mut pp, mut pd) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (p, d) = peer_run(&peer_model, backend);
        pp.push(p);
        pd.push(d);
    }
    rows.push(("llama.cpp bare loop (peer)", median(pp), median(pd)));
    println!(
        "threads {}, prompt {} bytes, {} decode tokens, median of {RUNS}",
        threads(),
        PROMPT.len(),
        DECODE_TOKENS
    );
    println!(
        "{:28} {:>14} {:>14}",
        "engine", "prefill tok/s", "decode tok/s"
    );
    for (name, p, d) in rows {
        println!("{name:28} {p:>14.1} {d:>14.1}");
    }
}
