//! Text generation over llama.cpp: the public face of a loaded GGUF model.
//! One worker thread per model owns the llama context and runs the
//! [`crate::scheduler`]; requests reach it through a bounded queue and stream
//! their tokens back on a channel of their own. A request whose receiver is
//! dropped (the client went away) is abandoned at the next step.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use basalt_grammar::{Grammar, TokenTrie};

use crate::error::EngineError;
use crate::reservation::{Lane, Reservations};
use crate::sampling::SamplingParams;
use crate::scheduler::{self, Job, Limits, LoadGauges, QueueTicket};
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
    /// Sequences decoded together in one batch (continuous batching).
    pub batch_slots: usize,
    /// KV-cache cells shared by running sequences and kept prefixes.
    pub kv_cache_tokens: u32,
    /// Memory for kept prompt prefixes (explicit cache points and automatic reuse).
    pub prompt_cache_bytes: u64,
    /// Decode slots held back for named holders; `None`: nothing is reserved. The
    /// table may outlive the model (a reservation made before a lazy load applies).
    pub reservations: Option<Arc<Reservations>>,
}

impl TextModelConfig {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            context_window: 0,
            threads: 2,
            max_queue: 16,
            batch_slots: 8,
            kv_cache_tokens: 8_192,
            prompt_cache_bytes: 64 << 20,
            reservations: None,
        }
    }
}

/// One generation, already validated.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The exact text the model sees (chat turns already rendered).
    pub prompt: String,
    pub max_tokens: u32,
    pub stop_sequences: Vec<String>,
    pub sampling: SamplingParams,
    /// Byte offsets into `prompt` that end explicitly cacheable prefixes (cache points).
    pub cache_points: Vec<usize>,
    pub constraint: Option<OutputConstraint>,
    /// The share of the engine it runs in.
    pub lane: Lane,
}

/// Constrained decoding for one request.
#[derive(Debug, Clone)]
pub struct OutputConstraint {
    pub grammar: Grammar,
    /// `None`: the grammar applies from the first token. `Some(open)`: free text until the
    /// model writes `open` (where the grammar begins), then the grammar applies.
    pub trigger: Option<String>,
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
    /// The prompt is in place and the first output token is ready; sent once, before
    /// any text. Explicit cache reads and writes are known from here on.
    Prefilled {
        cache_read_tokens: u32,
        cache_write_tokens: u32,
    },
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
    pub(crate) fn new(input_tokens: u32, events: mpsc::UnboundedReceiver<GenerationEvent>) -> Self {
        Self {
            input_tokens,
            events,
        }
    }

    pub async fn next(&mut self) -> Option<GenerationEvent> {
        self.events.recv().await
    }

    /// Waits for the whole generation.
    pub async fn collect(mut self) -> Result<(String, GenerationSummary), EngineError> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event {
                GenerationEvent::Prefilled { .. } => {}
                GenerationEvent::Text(t) => text.push_str(&t),
                GenerationEvent::Finished(summary) => return Ok((text, summary)),
                GenerationEvent::Failed(e) => return Err(e),
            }
        }
        Err(EngineError::WorkerGone)
    }
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
    queue: mpsc::UnboundedSender<Job>,
    max_queue: usize,
    /// Requests accepted but not yet decoding, per lane kind (each bounded by `max_queue`,
    /// so a flood of shared requests never refuses a reserved one).
    waiting_shared: Arc<AtomicUsize>,
    waiting_reserved: Arc<AtomicUsize>,
    reservations: Arc<Reservations>,
    description: String,
    gauges: Arc<LoadGauges>,
}

/// A text model's load at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelLoad {
    /// Requests accepted but not yet decoding.
    pub queued: usize,
    /// Sequences in the decode batch, and how many it can hold.
    pub running: usize,
    pub slots: usize,
    /// KV-cache cells holding running sequences and kept prefixes, of the total.
    pub kv_cells_used: usize,
    pub kv_cells_total: usize,
    /// Of the used cells, those holding kept prompt prefixes.
    pub kept_prefix_tokens: usize,
}

/// Token bytes (empty for control tokens) and, on first constrained request, the trie
/// over them.
pub(crate) struct Vocabulary {
    pub bytes: Vec<Vec<u8>>,
    trie: OnceLock<TokenTrie>,
}

impl Vocabulary {
    pub fn trie(&self) -> &TokenTrie {
        self.trie.get_or_init(|| {
            TokenTrie::new(
                self.bytes
                    .iter()
                    .enumerate()
                    .map(|(id, b)| (id as u32, b.clone())),
            )
        })
    }
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

        let vocabulary = Arc::new(Vocabulary {
            bytes: model.tokens(false).map(|(_, b)| b).collect(),
            trie: OnceLock::new(),
        });

        let (queue, jobs) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker_model = Arc::clone(&model);
        let limits = Limits::new(config, context_window, &model);
        let reservations = config
            .reservations
            .clone()
            .unwrap_or_else(|| Reservations::new(limits.slots()));
        let worker_reservations = Arc::clone(&reservations);
        let gauges = Arc::new(LoadGauges::default());
        let worker_gauges = Arc::clone(&gauges);
        std::thread::Builder::new()
            .name("basalt-text".into())
            .spawn(move || {
                scheduler::run(
                    worker_model,
                    vocabulary,
                    limits,
                    worker_reservations,
                    jobs,
                    ready_tx,
                    worker_gauges,
                )
            })
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
                waiting_shared: Arc::default(),
                waiting_reserved: Arc::default(),
                reservations,
                description,
                gauges,
            }),
        })
    }

    /// The model's current load (as of the worker's last step).
    pub fn load_now(&self) -> ModelLoad {
        let g = &self.inner.gauges;
        ModelLoad {
            queued: self.inner.waiting_shared.load(Ordering::Relaxed)
                + self.inner.waiting_reserved.load(Ordering::Relaxed),
            running: g.running.load(Ordering::Relaxed),
            slots: g.slots.load(Ordering::Relaxed),
            kv_cells_used: g.kv_cells_used.load(Ordering::Relaxed),
            kv_cells_total: g.kv_cells_total.load(Ordering::Relaxed),
            kept_prefix_tokens: g.kept_prefix_tokens.load(Ordering::Relaxed),
        }
    }

    /// The decode slots reserved on this model, and by whom.
    pub fn reservations(&self) -> &Arc<Reservations> {
        &self.inner.reservations
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
        let cache_points = self.cache_point_tokens(&request.prompt, &tokens, &request.cache_points);
        let waiting = match request.lane {
            Lane::Shared => &self.inner.waiting_shared,
            Lane::Reserved(_) => &self.inner.waiting_reserved,
        };
        let ticket = QueueTicket::take(waiting, self.inner.max_queue).ok_or(EngineError::Busy {
            queued: self.inner.max_queue,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let job = Job {
            tokens,
            cache_points,
            request,
            admitted: Instant::now(),
            events: tx,
            ticket: Some(ticket),
        };
        // A send fails only when the worker has stopped; the job (and its ticket) drops.
        self.inner
            .queue
            .send(job)
            .map_err(|_| EngineError::WorkerGone)?;
        Ok(GenerationStream::new(input_tokens, rx))
    }

    /// Token counts of the prefixes that end at each byte offset. A prefix whose
    /// tokenisation differs from the whole prompt's at the boundary (a token spanning
    /// it) ends at the last token the two share.
    fn cache_point_tokens(
        &self,
        prompt: &str,
        tokens: &[LlamaToken],
        offsets: &[usize],
    ) -> Vec<usize> {
        let mut points: Vec<usize> = offsets
            .iter()
            .filter_map(|&at| prompt.get(..at))
            .map(|prefix| {
                let head = self.tokenize(prefix);
                head.iter().zip(tokens).take_while(|(a, b)| a == b).count()
            })
            .filter(|&n| n > 0)
            .collect();
        points.sort_unstable();
        points.dedup();
        points
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
