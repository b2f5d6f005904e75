//! Text generation over llama.cpp. One worker thread owns the llama context;
//! requests reach it through a bounded queue and stream their tokens back on a
//! channel of their own. A request whose receiver is dropped (the client went
//! away) is abandoned at the next token.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::{Scan, StopMatcher};
use crate::template::{ChatTemplate, ChatTurn};

/// How to load and run a GGUF model.
#[derive(Debug, Clone)]
pub struct TextModelConfig {
    pub path: PathBuf,
    /// Context window in tokens; 0 means the model's training context.
    pub context_window: u32,
    pub threads: i32,
    /// Requests that may wait for the worker; one more is refused with [`EngineError::Busy`].
    pub max_queue: usize,
}

/// One generation, already validated.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The exact text the model sees (chat turns already rendered).
    pub prompt: String,
    pub max_tokens: u32,
    pub stop_sequences: Vec<String>,
    pub sampling: SamplingParams,
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced its end-of-turn token.
    EndOfTurn,
    MaxTokens,
    StopSequence(String),
    /// The context window filled up before anything else stopped generation.
    ContextWindow,
    /// The output constraint's grammar reached an end nothing may follow.
    GrammarComplete,
}

#[derive(Debug, Clone)]
pub struct GenerationSummary {
    pub stop_reason: StopReason,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Prompt tokens whose KV state came from an explicit cache point.
    pub cache_read_tokens: u32,
    /// Prompt tokens stored under a new explicit cache point.
    pub cache_write_tokens: u32,
    /// From admission to the first output token.
    pub first_token_ms: u64,
    /// From admission to the end.
    pub total_ms: u64,
}

#[derive(Debug)]
pub enum GenerationEvent {
    Text(String),
    Finished(GenerationSummary),
    Failed(EngineError),
}

/// The receiving end of one generation.
pub struct GenerationStream {
    pub input_tokens: u32,
    events: mpsc::UnboundedReceiver<GenerationEvent>,
}

impl GenerationStream {
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        self.events.recv().await
    }

    /// Waits for the whole generation.
    pub async fn collect(mut self) -> Result<(String, GenerationSummary), EngineError> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event {
                GenerationEvent::Text(t) => text.push_str(&t),
                GenerationEvent::Finished(summary) => return Ok((text, summary)),
                GenerationEvent::Failed(e) => return Err(e),
            }
        }
        Err(EngineError::WorkerGone)
    }
}

struct Job {
    tokens: Vec<LlamaToken>,
    request: GenerateRequest,
    admitted: Instant,
    events: mpsc::UnboundedSender<GenerationEvent>,
}

/// A loaded text model. Cheap to clone.
#[derive(Clone)]
pub struct TextModel {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<LlamaModel>,
    template: ChatTemplate,
    context_window: u32,
    queue: mpsc::Sender<Job>,
    max_queue: usize,
    description: String,
}

/// The process-wide llama.cpp backend (llama.cpp allows one initialisation per process).
pub fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|reason| EngineError::Load {
            path: "the llama.cpp backend".into(),
            reason: reason.clone(),
        })
}

impl TextModel {
    /// Loads the model and starts its worker. Blocking: call it off the async runtime.
    pub fn load(config: &TextModelConfig) -> Result<Self, EngineError> {
        let load_err = |reason: String| EngineError::Load {
            path: config.path.display().to_string(),
            reason,
        };
        if !config.path.is_file() {
            return Err(load_err("file not found".into()));
        }
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, &config.path, &LlamaModelParams::default())
            .map_err(|e| load_err(e.to_string()))?;
        let model = Arc::new(model);
        let template_source = model
            .meta_val_str("tokenizer.chat_template")
            .map_err(|e| load_err(format!("no chat template in the GGUF metadata: {e}")))?;
        let token_text = |t: LlamaToken| {
            String::from_utf8_lossy(&model.vocab().token_to_piece(t, true, None)).into_owned()
        };
        let template = ChatTemplate::new(
            &template_source,
            &token_text(model.vocab().bos()),
            &token_text(model.vocab().eos()),
        )?;
        let context_window = if config.context_window == 0 {
            model.n_ctx_train()
        } else {
            config.context_window.min(model.n_ctx_train())
        };
        let description = model
            .meta_val_str("general.name")
            .unwrap_or_else(|_| file_stem(&config.path));

        let (queue, jobs) = mpsc::channel(config.max_queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker_model = Arc::clone(&model);
        let threads = config.threads.max(1);
        std::thread::Builder::new()
            .name("basalt-text".into())
            .spawn(move || worker(worker_model, context_window, threads, jobs, ready_tx))
            .map_err(|e| load_err(e.to_string()))?;
        ready_rx
            .recv()
            .map_err(|_| EngineError::WorkerGone)?
            .map_err(load_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                template,
                context_window,
                queue,
                max_queue: config.max_queue.max(1),
                description,
            }),
        })
    }

    /// The model's own name from its metadata.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    pub fn context_window(&self) -> u32 {
        self.inner.context_window
    }

    /// Renders chat turns with the model's own template.
    pub fn render_chat(&self, turns: &[ChatTurn]) -> Result<String, EngineError> {
        Ok(self.inner.template.render(turns, true)?)
    }

    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        let vocab = self.inner.model.vocab();
        // Raw prompts may carry the model's control tokens as text; parse them.
        vocab.tokenize(text.as_bytes(), vocab.should_add_bos(), true)
    }

    /// The number of tokens `text` becomes, exactly as generation would see it.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenize(text).len()
    }

    /// Queues a generation. Fails at once when the queue is full or the prompt is too long.
    pub fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, EngineError> {
        let tokens = self.tokenize(&request.prompt);
        let window = self.inner.context_window;
        if tokens.is_empty() || tokens.len() >= window as usize {
            return Err(EngineError::InputTooLong {
                tokens: tokens.len(),
                window,
            });
        }
        let input_tokens = tokens.len() as u32;
        let (tx, rx) = mpsc::unbounded_channel();
        let job = Job {
            tokens,
            request,
            admitted: Instant::now(),
            events: tx,
        };
        self.inner.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EngineError::Busy {
                queued: self.inner.max_queue,
            },
            mpsc::error::TrySendError::Closed(_) => EngineError::WorkerGone,
        })?;
        Ok(GenerationStream {
            input_tokens,
            events: rx,
        })
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Tokens per prefill batch.
const PREFILL_BATCH: usize = 512;

fn worker(
    model: Arc<LlamaModel>,
    context_window: u32,
    threads: i32,
    mut jobs: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context_window))
        .with_n_batch(PREFILL_BATCH as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(PREFILL_BATCH, 1);
    while let Some(job) = jobs.blocking_recv() {
        if job.events.is_closed() {
            continue;
        }
        let events = job.events.clone();
        let outcome = run_job(&model, &mut ctx, &mut batch, context_window, job);
        let event = match outcome {
            Ok(Some(summary)) => GenerationEvent::Finished(summary),
            Ok(None) => continue,
            Err(e) => GenerationEvent::Failed(e),
        };
        let _ = events.send(event);
    }
}

/// Runs one job to its end. `Ok(None)` means the client went away.
fn run_job(
    model: &LlamaModel,
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    batch: &mut LlamaBatch,
    context_window: u32,
    job: Job,
) -> Result<Option<GenerationSummary>, EngineError> {
    let fail = |e: &dyn std::fmt::Display| EngineError::Inference(e.to_string());
    let vocab = model.vocab();
    ctx.clear_kv_cache();
    let mut sampler = Sampler::new(job.request.sampling.clone());
    let n_prompt = job.tokens.len();
    for (chunk_index, chunk) in job.tokens.chunks(PREFILL_BATCH).enumerate() {
        batch.clear();
        let base = chunk_index * PREFILL_BATCH;
        for (i, token) in chunk.iter().enumerate() {
            let pos = base + i;
            batch
                .add(*token, pos as i32, &[0], pos + 1 == n_prompt)
                .map_err(|e| fail(&e))?;
            sampler.observe(token.0 as u32);
        }
        ctx.decode(batch).map_err(|e| fail(&e))?;
        if job.events.is_closed() {
            return Ok(None);
        }
    }

    let mut stop = StopMatcher::new(job.request.stop_sequences.clone());
    let mut output_tokens = 0u32;
    let mut first_token_ms = None;
    let mut position = n_prompt;
    let stop_reason = loop {
        if job.events.is_closed() {
            return Ok(None);
        }
        let logits = ctx.get_logits_ith(batch.n_tokens() - 1);
        let token = LlamaToken(sampler.sample(logits) as i32);
        first_token_ms.get_or_insert_with(|| job.admitted.elapsed().as_millis() as u64);
        if vocab.is_eog(token) {
            break StopReason::EndOfTurn;
        }
        output_tokens += 1;
        sampler.observe(token.0 as u32);
        let piece = vocab.token_to_piece(token, false, None);
        match stop.push(&piece) {
            Scan::Continue(text) => {
                if !text.is_empty() && job.events.send(GenerationEvent::Text(text)).is_err() {
                    return Ok(None);
                }
            }
            Scan::Stopped { text, sequence } => {
                if !text.is_empty() {
                    let _ = job.events.send(GenerationEvent::Text(text));
                }
                break StopReason::StopSequence(sequence);
            }
        }
        if output_tokens >= job.request.max_tokens {
            break StopReason::MaxTokens;
        }
        if position + 1 >= context_window as usize {
            break StopReason::ContextWindow;
        }
        batch.clear();
        batch
            .add(token, position as i32, &[0], true)
            .map_err(|e| fail(&e))?;
        position += 1;
        ctx.decode(batch).map_err(|e| fail(&e))?;
    };
    if !matches!(stop_reason, StopReason::StopSequence(_)) {
        let rest = stop.finish();
        if !rest.is_empty() {
            let _ = job.events.send(GenerationEvent::Text(rest));
        }
    }
    Ok(Some(GenerationSummary {
        stop_reason,
        input_tokens: n_prompt as u32,
        output_tokens,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        first_token_ms: first_token_ms.unwrap_or(0),
        total_ms: job.admitted.elapsed().as_millis() as u64,
    }))
}
