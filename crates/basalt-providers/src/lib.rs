//! Provider adapters: each model family's InvokeModel body (and Converse)
//! translated into one internal request, and the engine's output translated
//! back into that family's response body and stream chunks.
//!
//! Adapters are pure: they parse and shape JSON and never run a model, so the
//! server decides how to run what they describe.

pub mod anthropic;
pub mod cohere;
pub mod converse;
pub mod embeddings;
pub mod image_generation;
pub mod images;
pub mod invoke;
pub mod limits;
pub mod meta;
pub mod mistral;
pub mod nova;
pub mod prompt_markup;
pub mod titan;
pub mod tool_calls;

use basalt_engine::{ChatTurn, SamplingParams, StopReason};
use basalt_grammar::Grammar;
use serde_json::Value;

/// What the model should read.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Turns rendered with the model's chat template. A trailing assistant turn is a
    /// prefill: the model continues it.
    Chat(Vec<ChatTurn>),
    /// Text given to the model exactly as the caller wrote it.
    Raw(String),
}

/// The one internal text request every family is translated into.
#[derive(Debug, Clone)]
pub struct TextInvocation {
    pub prompt: Prompt,
    pub max_tokens: u32,
    pub stop_sequences: Vec<String>,
    pub sampling: SamplingParams,
    pub output: OutputMode,
}

/// What shape the model's output must take.
#[derive(Debug, Clone)]
pub enum OutputMode {
    /// Free text.
    Text,
    /// Exactly one JSON value under this grammar (Converse structured output).
    Json(Grammar),
    /// Tools are on offer.
    Tools(ToolPlan),
}

/// How tools are offered to the model.
#[derive(Debug, Clone)]
pub struct ToolPlan {
    /// The call grammar: `open` + `{"name": ..., "arguments": ...}` + close.
    pub grammar: Grammar,
    /// The text that opens a call (the grammar's `open`), watched for in free text.
    pub open: String,
    pub decision: ToolDecision,
}

/// Who decides whether a tool is called.
#[derive(Debug, Clone)]
pub enum ToolDecision {
    /// A call is forced (toolChoice `any` or `tool`): the output starts under the grammar.
    Forced,
    /// The model decides: it first answers `question` under a Yes/No grammar; Yes forces a
    /// call, No lets it write text (in which it may still open a call itself).
    Auto { question: Prompt },
}

/// A finished generation, as adapters need it to shape responses.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub stop_reason: StopReason,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Prompt tokens read from an explicit cache point (`cacheReadInputTokens`).
    pub cache_read_tokens: u32,
    /// Prompt tokens written under a new explicit cache point (`cacheWriteInputTokens`).
    pub cache_write_tokens: u32,
    pub latency_ms: u64,
    pub first_byte_ms: u64,
}

/// The prompt's token counts as a stream starts (when the first output token is ready).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptUsage {
    /// The whole prompt, cached tokens included (as `Completion::input_tokens`).
    pub input_tokens: u32,
    pub cache_read_tokens: u32,
    pub cache_write_tokens: u32,
}

/// Shapes one family's responses: the whole body, or a stream of chunks.
pub trait TextResponder: Send {
    fn response(&self, done: &Completion) -> Value;
    /// Chunks sent before any text.
    fn stream_start(&mut self, prompt: &PromptUsage) -> Vec<Value>;
    fn stream_delta(&mut self, text: &str) -> Vec<Value>;
    /// Closing chunks; the caller adds `amazon-bedrock-invocationMetrics` to the last.
    fn stream_end(&mut self, done: &Completion) -> Vec<Value>;
}

/// Inserted into turn text where a cachePoint/cache_control marks the end of a cacheable
/// prefix; the server renders the prompt, records the token offset of each marker and
/// removes it. Private-use characters, so ordinary text never contains it by accident.
pub const CACHE_POINT: &str = "\u{E000}basalt-cache-point\u{E000}";

/// `text` without any cache-point marker, so callers cannot place one themselves.
pub fn strip_cache_points(text: &str) -> String {
    text.replace(CACHE_POINT, "")
}

/// Key Bedrock adds to the last chunk of every text stream.
pub const INVOCATION_METRICS: &str = "amazon-bedrock-invocationMetrics";

/// The `amazon-bedrock-invocationMetrics` object.
pub fn invocation_metrics(done: &Completion) -> Value {
    serde_json::json!({
        "inputTokenCount": done.input_tokens,
        "outputTokenCount": done.output_tokens,
        "invocationLatency": done.latency_ms,
        "firstByteLatency": done.first_byte_ms,
    })
}

/// The model an adapter is shaping a request for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The foundation-model ID the request resolved to.
    pub model_id: &'a str,
    /// Whether the local model behind it reads images.
    pub vision: bool,
}

/// Appends `text` to the content of the last turn when it has `role`, else starts a new turn.
/// Consecutive same-role blocks are merged, as chat templates expect alternation.
pub(crate) fn push_turn(turns: &mut Vec<ChatTurn>, role: &str, text: &str) {
    match turns.last_mut() {
        Some(last) if last.role == role => {
            if !last.content.is_empty() && !text.is_empty() {
                last.content.push('\n');
            }
            last.content.push_str(text);
        }
        _ => turns.push(ChatTurn::new(role, text)),
    }
}

/// A parsed request: what to run and how to shape the answer.
pub type ParsedText = (TextInvocation, Box<dyn TextResponder>);
