//! The scheduler with the real default model (fetched by `basalt models fetch`):
//! concurrent sequences, kept prefixes, and constrained decoding.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use basalt_engine::{
    GenerateRequest, GenerationSummary, Grammar, Lane, OutputConstraint, Reservations,
    SamplingParams, StopReason, TextModel, TextModelConfig,
};
use basalt_grammar::Schema;
use serde_json::json;

fn model() -> &'static TextModel {
    static MODEL: OnceLock<TextModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        TextModel::load(&model_config())
            .expect("the default model is fetched (basalt models fetch)")
    })
}

fn model_config() -> TextModelConfig {
    let dir = std::env::var_os("BASALT_MODELS_DIR").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/basalt/models"),
        PathBuf::from,
    );
    let path = dir.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    TextModelConfig {
        context_window: 4096,
        threads: 2,
        kv_cache_tokens: 8_192,
        ..TextModelConfig::new(path)
    }
}

fn chat(user: &str) -> String {
    model()
        .render_chat(&[basalt_engine::ChatTurn::new("user", user)])
        .expect("template")
}

fn request(prompt: String, max_tokens: u32, temperature: f32) -> GenerateRequest {
    GenerateRequest {
        prompt,
        max_tokens,
        stop_sequences: Vec::new(),
        sampling: SamplingParams {
            temperature,
            seed: Some(11),
            ..SamplingParams::default()
        },
        cache_points: Vec::new(),
        constraint: None,
        lane: Lane::Shared,
    }
}

fn run(req: GenerateRequest) -> (String, GenerationSummary) {
    run_on(model(), req)
}

fn run_on(model: &TextModel, req: GenerateRequest) -> (String, GenerationSummary) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(model.generate(req).expect("admitted").collect())
        .expect("generation")
}

#[test]
fn concurrent_requests_with_different_settings_all_finish() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let streams: Vec<_> = (0..6)
        .map(|i| {
            let temperature = if i % 2 == 0 { 0.0 } else { 0.9 };
            let req = request(chat(&format!("Name {i} fruits.")), 24 + i * 4, temperature);
            model().generate(req).expect("admitted")
        })
        .collect();
    let results = rt.block_on(futures::future::join_all(
        streams.into_iter().map(|s| s.collect()),
    ));
    for (i, result) in results.into_iter().enumerate() {
        let (text, summary) = result.expect("generation");
        assert!(!text.is_empty(), "request {i} produced nothing");
        assert!(summary.output_tokens <= 24 + i as u32 * 4);
    }
}

#[test]
fn greedy_output_is_the_same_alone_and_batched() {
    // A question with one clear answer: batched matrix products round differently from
    // a lone sequence's, which flips near-ties (the first CI run saw "The ocean is a"
    // alone against "The sea is a" batched), while a mixed-up KV cache or logits row
    // would still change this answer.
    let prompt = chat("What is the capital of France?");
    let (alone, _) = run(request(prompt.clone(), 20, 0.0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let others: Vec<_> = (0..3)
        .map(|i| {
            model()
                .generate(request(chat(&format!("Count to {}.", i + 5)), 30, 0.7))
                .expect("admitted")
        })
        .collect();
    let mine = model()
        .generate(request(prompt, 20, 0.0))
        .expect("admitted");
    let (batched, _) = rt
        .block_on(async {
            let (mine, _) = futures::future::join(
                mine.collect(),
                futures::future::join_all(others.into_iter().map(|s| s.collect())),
            )
            .await;
            mine
        })
        .expect("generation");
    let head = |s: &str| s.split_whitespace().take(5).collect::<Vec<_>>().join(" ");
    assert_eq!(head(&alone), head(&batched));
    assert!(
        alone.contains("Paris") && batched.contains("Paris"),
        "{alone:?} / {batched:?}"
    );
}

#[test]
fn explicit_cache_point_is_written_then_read() {
    let system = "You are a careful assistant. ".repeat(40);
    let full = model()
        .render_chat(&[
            basalt_engine::ChatTurn::new("system", system),
            basalt_engine::ChatTurn::new("user", "What is the capital of France?"),
        ])
        .expect("template");
    // The cache point sits after the system turn (ChatML).
    let point = full.find("<|im_start|>user").expect("ChatML template");
    let mut req = request(full, 12, 0.0);
    req.cache_points = vec![point];
    let (first_text, first) = run(req.clone());
    let (second_text, second) = run(req);
    assert!(first.cache_write_tokens > 200, "{first:?}");
    assert_eq!(first.cache_read_tokens, 0);
    assert_eq!(second.cache_read_tokens, first.cache_write_tokens);
    assert_eq!(second.cache_write_tokens, 0);
    // Prefilling the suffix alone rounds differently from the whole prompt in one batch,
    // and the other tests here share the batch at random, which flips near-ties (a
    // "Say hello." prompt once opened "Hello," then "I'm glad"). A question with one clear
    // answer still tells a sound cached prefix from a broken one.
    assert!(
        first_text.contains("Paris") && second_text.contains("Paris"),
        "{first_text:?} / {second_text:?}"
    );
}

#[test]
fn json_constraint_output_always_validates() {
    let schema_json = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "units": {"enum": ["metric", "imperial"]},
            "alerts": {"type": "array", "items": {"type": "boolean"}}
        },
        "required": ["city", "days", "units"],
        "additionalProperties": false
    });
    let schema = Schema::compile(&schema_json).expect("supported");
    for (max_tokens, temperature) in [(64, 0.0), (64, 1.0), (5, 0.8), (1, 0.0)] {
        let mut req = request(
            chat("Give me a weather forecast request as JSON."),
            max_tokens,
            temperature,
        );
        req.constraint = Some(OutputConstraint {
            grammar: Grammar::json(schema.clone()),
            trigger: None,
        });
        let (text, summary) = run(req);
        let value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("max_tokens {max_tokens}: {text:?} is not JSON: {e}"));
        schema.validate(&value).expect("valid");
        assert_eq!(summary.stop_reason, StopReason::GrammarComplete);
    }
}

#[test]
fn choice_constraint_answers_one_option() {
    let mut req = request(chat("Is the sky blue? Answer Yes or No."), 4, 0.0);
    req.constraint = Some(OutputConstraint {
        grammar: Grammar::choice(&["Yes", "No"]),
        trigger: None,
    });
    let (text, _) = run(req);
    assert!(text == "Yes" || text == "No", "{text:?}");
}

#[test]
fn greedy_repeats_are_identical_without_a_prompt_cache() {
    // With no kept prefixes every request starts on an empty KV cache, so a lone request
    // lands on the same cells and rounds the same way every time.
    static MODEL: OnceLock<TextModel> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        let mut config = model_config();
        config.prompt_cache_bytes = 0;
        TextModel::load(&config).expect("the default model is fetched (basalt models fetch)")
    });
    let questions = [
        "Describe the sea.",
        "What is the capital of France?",
        "Tell me about the moon and the stars in the night sky, and why they shine.",
        "Write two sentences about bread.",
    ];
    for question in questions {
        let prompt = model
            .render_chat(&[basalt_engine::ChatTurn::new("user", question)])
            .expect("template");
        let runs: Vec<String> = (0..3)
            .map(|_| run_on(model, request(prompt.clone(), 32, 0.0)).0)
            .collect();
        assert!(!runs[0].is_empty());
        assert_eq!(runs[0], runs[1], "{question}");
        assert_eq!(runs[0], runs[2], "{question}");
    }
}

/// Polls `done` for up to 30 s.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn reserved_slots_stay_free_for_their_holder() {
    let reservations = Reservations::new(3);
    reservations
        .replace([(Arc::from("pt"), 1)].into_iter().collect())
        .expect("one of three slots can be reserved");
    let model = TextModel::load(&TextModelConfig {
        batch_slots: 3,
        reservations: Some(reservations),
        ..model_config()
    })
    .expect("load");
    let long = |lane: Lane| GenerateRequest {
        lane,
        ..request(
            chat("Write a very long story about a lighthouse keeper and the sea."),
            400,
            0.0,
        )
    };
    let shared: Vec<_> = (0..4)
        .map(|_| model.generate(long(Lane::Shared)).expect("admitted"))
        .collect();
    // Two shared slots: two run and two wait, though a third slot is idle.
    wait_until("two shared running", || {
        let load = model.load_now();
        load.running == 2 && load.queued == 2
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let load = model.load_now();
    assert_eq!((load.running, load.queued), (2, 2), "{load:?}");
    // The holder's request starts at once, ahead of the waiting shared ones.
    let mine = model
        .generate(long(Lane::Reserved(Arc::from("pt"))))
        .expect("admitted");
    wait_until("the reserved request running", || {
        model.load_now().running == 3
    });
    assert_eq!(model.load_now().queued, 2);
    drop((shared, mine));
}

#[test]
fn a_full_shared_line_does_not_refuse_reserved_requests() {
    let reservations = Reservations::new(2);
    reservations
        .replace([(Arc::from("pt"), 1)].into_iter().collect())
        .expect("reserve");
    let model = TextModel::load(&TextModelConfig {
        batch_slots: 2,
        max_queue: 1,
        reservations: Some(reservations),
        ..model_config()
    })
    .expect("load");
    let long = |lane: Lane| GenerateRequest {
        lane,
        ..request(chat("Write a very long story about a harbour."), 400, 0.0)
    };
    let running = model.generate(long(Lane::Shared)).expect("admitted");
    wait_until("one shared running", || model.load_now().running == 1);
    let waiting = model.generate(long(Lane::Shared)).expect("queued");
    assert!(matches!(
        model.generate(long(Lane::Shared)),
        Err(basalt_engine::EngineError::Busy { .. })
    ));
    let mine = model
        .generate(long(Lane::Reserved(Arc::from("pt"))))
        .expect("a reserved request has a line of its own");
    wait_until("the reserved request running", || {
        model.load_now().running == 2
    });
    drop((running, waiting, mine));
}
