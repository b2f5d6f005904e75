//! A guardrail attached to a runtime call (InvokeModel headers or Converse's
//! `guardrailConfig`): the prompt is checked before the model runs, the reply after
//! (or chunk by chunk while it streams), and the verdicts become Bedrock's response
//! fields and traces.

use axum::http::HeaderMap;
use basalt_guardrails::assess::{Content, OutputScope, Qualifier};
use basalt_guardrails::config::Source;
use basalt_guardrails::Evaluation;
use basalt_proto::BedrockError;
use basalt_providers::{strip_cache_points, Prompt};
use serde_json::{json, Value};

use crate::guardrails::Resolved;
use crate::AppState;

/// The body field (and, for the seed's sake, header) that reports an intervention.
pub const ACTION_FIELD: &str = "amazon-bedrock-guardrailAction";
pub const TRACE_FIELD: &str = "amazon-bedrock-trace";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceLevel {
    Disabled,
    Enabled,
    Full,
}

/// Streamed output is checked once this much unchecked text has gathered (and at the end).
const STREAM_CHUNK_CHARS: usize = 200;

pub struct Guard {
    pub resolved: Resolved,
    pub trace: TraceLevel,
    /// ConverseStream's `streamProcessingMode: async`: text goes out before it is checked.
    pub asynchronous: bool,
    /// Grounding sources and queries from the request's qualified guardContent.
    pub context: Vec<Content>,
}

fn service(state: &AppState) -> Result<&crate::guardrails::Guardrails, BedrockError> {
    state
        .guardrails
        .as_ref()
        .ok_or_else(|| BedrockError::validation("Guardrails are not available on this server."))
}

impl Guard {
    /// From InvokeModel's `X-Amzn-Bedrock-Guardrail*` and `X-Amzn-Bedrock-Trace` headers.
    pub fn from_headers(
        state: &AppState,
        headers: &HeaderMap,
    ) -> Result<Option<Self>, BedrockError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(identifier) = header("x-amzn-bedrock-guardrailidentifier") else {
            if header("x-amzn-bedrock-guardrailversion").is_some() {
                return Err(BedrockError::validation(
                    "A guardrail version was given without a guardrail identifier.",
                ));
            }
            return Ok(None);
        };
        let resolved =
            service(state)?.resolve(identifier, header("x-amzn-bedrock-guardrailversion"))?;
        let trace = match header("x-amzn-bedrock-trace") {
            None | Some("DISABLED") => TraceLevel::Disabled,
            Some("ENABLED") => TraceLevel::Enabled,
            Some("ENABLED_FULL") => TraceLevel::Full,
            Some(other) => {
                return Err(BedrockError::constraint(
                    "trace",
                    other,
                    "Member must satisfy enum value set: [ENABLED, DISABLED, ENABLED_FULL]",
                ))
            }
        };
        Ok(Some(Self {
            resolved,
            trace,
            asynchronous: false,
            context: Vec::new(),
        }))
    }

    /// From Converse's `guardrailConfig`.
    pub fn from_converse(state: &AppState, config: &Value) -> Result<Self, BedrockError> {
        let field = |name: &str| config.get(name).and_then(Value::as_str);
        let identifier = field("guardrailIdentifier")
            .ok_or_else(|| BedrockError::missing("guardrailConfig.guardrailIdentifier"))?;
        let resolved = service(state)?.resolve(identifier, field("guardrailVersion"))?;
        let trace = match field("trace") {
            None | Some("disabled") => TraceLevel::Disabled,
            Some("enabled") => TraceLevel::Enabled,
            Some("enabled_full") => TraceLevel::Full,
            Some(other) => {
                return Err(BedrockError::constraint(
                    "guardrailConfig.trace",
                    other,
                    "Member must satisfy enum value set: [enabled, disabled, enabled_full]",
                ))
            }
        };
        let asynchronous = match field("streamProcessingMode") {
            None | Some("sync") => false,
            Some("async") => true,
            Some(other) => {
                return Err(BedrockError::constraint(
                    "guardrailConfig.streamProcessingMode",
                    other,
                    "Member must satisfy enum value set: [sync, async]",
                ))
            }
        };
        Ok(Self {
            resolved,
            trace,
            asynchronous,
            context: Vec::new(),
        })
    }

    fn scope(&self) -> OutputScope {
        if self.trace == TraceLevel::Full {
            OutputScope::Full
        } else {
            OutputScope::Interventions
        }
    }

    /// Checks the prompt. `explicit` holds Converse's guardContent blocks, when the
    /// request has any: then only they are checked. Otherwise every non-system turn
    /// is, and anonymised turns are rewritten in place so the model sees the masks.
    pub async fn check_prompt(
        &mut self,
        state: &AppState,
        prompt: &mut Prompt,
        explicit: Vec<Content>,
    ) -> Result<Evaluation, BedrockError> {
        if !explicit.is_empty() {
            self.context = explicit
                .iter()
                .filter(|c| {
                    c.qualifiers.contains(&Qualifier::GroundingSource)
                        || c.qualifiers.contains(&Qualifier::Query)
                })
                .cloned()
                .collect();
            let guarded: Vec<Content> = explicit
                .into_iter()
                .filter(|c| {
                    c.qualifiers.is_empty() || c.qualifiers.contains(&Qualifier::GuardContent)
                })
                .map(|c| Content::text(c.text))
                .collect();
            let originals: Vec<String> = guarded.iter().map(|c| c.text.clone()).collect();
            let evaluation = self.evaluate(state, Source::Input, &guarded).await?;
            if evaluation.anonymized {
                for (original, masked) in originals.iter().zip(&evaluation.outputs) {
                    replace_in_prompt(prompt, original, masked);
                }
            }
            return Ok(evaluation);
        }
        let evaluation = match prompt {
            Prompt::Raw(text) => {
                let evaluation = self
                    .evaluate(
                        state,
                        Source::Input,
                        &[Content::text(strip_cache_points(text))],
                    )
                    .await?;
                if evaluation.anonymized {
                    if let Some(masked) = evaluation.outputs.first() {
                        *text = masked.clone();
                    }
                }
                evaluation
            }
            Prompt::Chat(turns) => {
                let guarded: Vec<usize> = (0..turns.len())
                    .filter(|&i| turns[i].role != "system")
                    .collect();
                let contents: Vec<Content> = guarded
                    .iter()
                    .map(|&i| Content::text(strip_cache_points(&turns[i].content)))
                    .collect();
                let evaluation = self.evaluate(state, Source::Input, &contents).await?;
                if evaluation.anonymized {
                    for (&i, masked) in guarded.iter().zip(&evaluation.outputs) {
                        turns[i].content = masked.clone();
                    }
                }
                evaluation
            }
        };
        Ok(evaluation)
    }

    /// Checks (part of) the model's reply, with the request's grounding context.
    pub async fn check_output(
        &self,
        state: &AppState,
        text: &str,
    ) -> Result<Evaluation, BedrockError> {
        let mut contents = self.context.clone();
        contents.push(Content {
            text: text.to_string(),
            qualifiers: if self.context.is_empty() {
                Vec::new()
            } else {
                vec![Qualifier::GuardContent]
            },
        });
        self.evaluate(state, Source::Output, &contents).await
    }

    async fn evaluate(
        &self,
        state: &AppState,
        source: Source,
        contents: &[Content],
    ) -> Result<Evaluation, BedrockError> {
        self.resolved
            .evaluate(state, source, contents, self.scope())
            .await
    }

    /// InvokeModel's `amazon-bedrock-trace`, or None when tracing is off.
    pub fn invoke_trace(&self, input: &Evaluation, outputs: &[Evaluation]) -> Option<Value> {
        if self.trace == TraceLevel::Disabled {
            return None;
        }
        let id = &self.resolved.id;
        let mut guardrail = json!({ "input": { id.as_str(): input.assessment } });
        if !outputs.is_empty() {
            guardrail["outputs"] = outputs
                .iter()
                .map(|o| json!({ id.as_str(): o.assessment }))
                .collect();
        }
        Some(json!({ "guardrail": guardrail }))
    }

    /// Converse's `trace` member, or None when tracing is off.
    pub fn converse_trace(
        &self,
        input: &Evaluation,
        outputs: &[Evaluation],
        model_output: Option<&str>,
    ) -> Option<Value> {
        if self.trace == TraceLevel::Disabled {
            return None;
        }
        let id = &self.resolved.id;
        let mut guardrail = json!({ "inputAssessment": { id.as_str(): input.assessment } });
        if !outputs.is_empty() {
            let list: Vec<&Value> = outputs.iter().map(|o| &o.assessment).collect();
            guardrail["outputAssessments"] = json!({ id.as_str(): list });
        }
        if let (Some(text), TraceLevel::Full) = (model_output, self.trace) {
            guardrail["modelOutput"] = json!([text]);
        }
        let reason = input.intervened() || outputs.iter().any(Evaluation::intervened);
        if reason {
            guardrail["actionReason"] =
                json!(if input.blocked || outputs.iter().any(|o| o.blocked) {
                    "Guardrail blocked."
                } else {
                    "Guardrail masked."
                });
        }
        Some(json!({ "guardrail": guardrail }))
    }
}

/// What replaces a reply the guardrail intervened on.
pub fn replacement(evaluation: &Evaluation) -> String {
    evaluation.outputs.join("\n")
}

fn replace_in_prompt(prompt: &mut Prompt, original: &str, masked: &str) {
    if original.is_empty() {
        return;
    }
    match prompt {
        Prompt::Raw(text) => *text = text.replace(original, masked),
        Prompt::Chat(turns) => {
            for t in turns {
                t.content = t.content.replace(original, masked);
            }
        }
    }
}

/// Streams reply text through the guardrail: text is released in checked chunks
/// (or, in async mode, checked after release), and the first blocking verdict ends it.
pub struct StreamScreen {
    pending: String,
    pub outputs: Vec<Evaluation>,
}

/// What to send after feeding text to the screen.
pub enum Release {
    /// Text that may go to the client now (possibly masked).
    Text(String),
    /// The guardrail blocked the reply: send this message instead and stop.
    Blocked(String),
}

impl StreamScreen {
    pub fn new() -> Self {
        Self {
            pending: String::new(),
            outputs: Vec::new(),
        }
    }

    /// Adds a delta; returns what to release (checked chunks once enough text has
    /// gathered at a sentence or line end, or everything at `finished`).
    pub async fn feed(
        &mut self,
        guard: &Guard,
        state: &AppState,
        delta: &str,
        finished: bool,
    ) -> Result<Option<Release>, BedrockError> {
        self.pending.push_str(delta);
        let boundary =
            self.pending.trim_end().ends_with(['.', '!', '?', '\n']) || delta.contains('\n');
        if !finished && (self.pending.chars().count() < STREAM_CHUNK_CHARS || !boundary) {
            return Ok(None);
        }
        if self.pending.is_empty() {
            return Ok(None);
        }
        let chunk = std::mem::take(&mut self.pending);
        let evaluation = guard.check_output(state, &chunk).await?;
        let release = if evaluation.blocked {
            Release::Blocked(replacement(&evaluation))
        } else if evaluation.anonymized {
            Release::Text(replacement(&evaluation))
        } else {
            Release::Text(chunk)
        };
        self.outputs.push(evaluation);
        Ok(Some(release))
    }

    pub fn intervened(&self) -> bool {
        self.outputs.iter().any(Evaluation::intervened)
    }
}

impl Default for StreamScreen {
    fn default() -> Self {
        Self::new()
    }
}
