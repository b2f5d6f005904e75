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

use crate::guardrails::{service, Resolved};
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
    /// InvokeModel's input-tag suffix: only text inside
    /// `<amazon-bedrock-guardrails-guardContent_SUFFIX>` tags is checked.
    pub tag_suffix: Option<String>,
}

/// The body member InvokeModel callers use to tune a guardrail.
const BODY_CONFIG: &str = "amazon-bedrock-guardrailConfig";
const TAG_PREFIX: &str = "amazon-bedrock-guardrails-guardContent_";

impl Guard {
    /// From InvokeModel's `X-Amzn-Bedrock-Guardrail*` and `X-Amzn-Bedrock-Trace` headers.
    /// Only a guardrail of the caller's `account`.
    pub fn from_headers(
        state: &AppState,
        account: &str,
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
        let resolved = service(state)?.resolve(
            account,
            identifier,
            header("x-amzn-bedrock-guardrailversion"),
        )?;
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
            tag_suffix: None,
        }))
    }

    /// From Converse's `guardrailConfig`. Only a guardrail of the caller's `account`.
    pub fn from_converse(
        state: &AppState,
        account: &str,
        config: &Value,
    ) -> Result<Self, BedrockError> {
        let field = |name: &str| config.get(name).and_then(Value::as_str);
        let identifier = field("guardrailIdentifier")
            .ok_or_else(|| BedrockError::missing("guardrailConfig.guardrailIdentifier"))?;
        let resolved = service(state)?.resolve(account, identifier, field("guardrailVersion"))?;
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
            tag_suffix: None,
        })
    }

    fn scope(&self) -> OutputScope {
        if self.trace == TraceLevel::Full {
            OutputScope::Full
        } else {
            OutputScope::Interventions
        }
    }

    /// Reads `amazon-bedrock-guardrailConfig` from an InvokeModel body: `tagSuffix`
    /// (input tags) and `streamProcessingMode`. The provider parsers ignore the member,
    /// so it stays in the body; and the body is parsed here only if it names it.
    pub fn read_body_config(&mut self, body: &[u8]) -> Result<(), BedrockError> {
        if !body
            .windows(BODY_CONFIG.len())
            .any(|w| w == BODY_CONFIG.as_bytes())
        {
            return Ok(());
        }
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return Ok(());
        };
        let Some(config) = map.get(BODY_CONFIG) else {
            return Ok(());
        };
        if let Some(suffix) = config.get("tagSuffix") {
            let suffix = suffix.as_str().unwrap_or_default();
            if suffix.is_empty()
                || suffix.len() > 20
                || !suffix.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(BedrockError::validation(format!(
                    "{BODY_CONFIG}.tagSuffix must be 1 to 20 letters or digits."
                )));
            }
            self.tag_suffix = Some(suffix.to_string());
        }
        match config.get("streamProcessingMode").and_then(Value::as_str) {
            None | Some("SYNCHRONOUS") => Ok(()),
            Some("ASYNCHRONOUS") => {
                self.asynchronous = true;
                Ok(())
            }
            Some(other) => Err(BedrockError::validation(format!(
                "{BODY_CONFIG}.streamProcessingMode '{other}' is not SYNCHRONOUS or ASYNCHRONOUS."
            ))),
        }
    }

    /// Checks the prompt. `explicit` holds Converse's guardContent blocks, when the
    /// request has any: then only they are checked. With an InvokeModel tag suffix,
    /// only tagged text is checked, and the tags are removed from the prompt.
    /// Otherwise every non-system turn is, and anonymised turns are rewritten in
    /// place so the model sees the masks.
    pub async fn check_prompt(
        &mut self,
        state: &AppState,
        prompt: &mut Prompt,
        mut explicit: Vec<Content>,
    ) -> Result<Evaluation, BedrockError> {
        if let Some(suffix) = self.tag_suffix.clone() {
            explicit = take_tagged(prompt, &suffix);
        }
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

/// The InvokeModel response for a guarded call: the body gets
/// `amazon-bedrock-guardrailAction` (and the trace when tracing is on), and an
/// intervention also gets the response header of that name, where the seed looks.
pub fn invoke_response(
    guard: Option<&Guard>,
    input: Option<&Evaluation>,
    outputs: &[Evaluation],
    mut body: Value,
) -> axum::response::Response {
    let mut intervened = false;
    if let (Some(g), Some(input), Value::Object(map)) = (guard, input, &mut body) {
        intervened = input.intervened() || outputs.iter().any(Evaluation::intervened);
        map.insert(
            ACTION_FIELD.into(),
            json!(if intervened { "INTERVENED" } else { "NONE" }),
        );
        if let Some(trace) = g.invoke_trace(input, outputs) {
            map.insert(TRACE_FIELD.into(), trace);
        }
    }
    let mut resp = crate::runtime::json_body(&body);
    if intervened {
        resp.headers_mut().insert(
            ACTION_FIELD,
            axum::http::HeaderValue::from_static("INTERVENED"),
        );
    }
    resp
}

/// What replaces a reply the guardrail intervened on.
pub fn replacement(evaluation: &Evaluation) -> String {
    evaluation.outputs.join("\n")
}

/// The text inside `<amazon-bedrock-guardrails-guardContent_SUFFIX>` tags in any
/// turn, with the tags removed from the prompt (their content stays).
fn take_tagged(prompt: &mut Prompt, suffix: &str) -> Vec<Content> {
    let open = format!("<{TAG_PREFIX}{suffix}>");
    let close = format!("</{TAG_PREFIX}{suffix}>");
    let mut tagged = Vec::new();
    let mut strip = |text: &mut String| {
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(start) = rest.find(&open) {
            out.push_str(&rest[..start]);
            let inner = &rest[start + open.len()..];
            let Some(end) = inner.find(&close) else {
                // An unclosed tag guards the rest of the text.
                tagged.push(Content::text(inner.trim()));
                out.push_str(inner);
                rest = "";
                break;
            };
            tagged.push(Content::text(inner[..end].trim()));
            out.push_str(&inner[..end]);
            rest = &inner[end + close.len()..];
        }
        out.push_str(rest);
        *text = out;
    };
    match prompt {
        Prompt::Raw(text) => strip(text),
        Prompt::Chat(turns) => turns.iter_mut().for_each(|t| strip(&mut t.content)),
    }
    tagged
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
}

impl Default for StreamScreen {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_engine::ChatTurn;

    #[test]
    fn tagged_text_is_taken_and_the_tags_removed() {
        let mut prompt = Prompt::Chat(vec![
            ChatTurn {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            ChatTurn {
                role: "user".into(),
                content: "Context: secret. <amazon-bedrock-guardrails-guardContent_ab1> Is it safe? </amazon-bedrock-guardrails-guardContent_ab1> <amazon-bedrock-guardrails-guardContent_zz>other</amazon-bedrock-guardrails-guardContent_zz>".into(),
            },
        ]);
        let tagged = take_tagged(&mut prompt, "ab1");
        let texts: Vec<&str> = tagged.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["Is it safe?"]);
        let Prompt::Chat(turns) = &prompt else {
            panic!("still a chat")
        };
        assert_eq!(
            turns[1].content,
            "Context: secret.  Is it safe?  <amazon-bedrock-guardrails-guardContent_zz>other</amazon-bedrock-guardrails-guardContent_zz>"
        );
    }

    #[test]
    fn an_unclosed_tag_guards_the_rest() {
        let mut prompt = Prompt::Raw("a <amazon-bedrock-guardrails-guardContent_x>b c".into());
        let tagged = take_tagged(&mut prompt, "x");
        assert_eq!(tagged[0].text, "b c");
        assert!(matches!(prompt, Prompt::Raw(ref t) if t == "a b c"));
    }
}
