//! Cohere Command R (chat with `message` and `chat_history`) and the legacy
//! Command text model (`prompt`).

use basalt_engine::{ChatTurn, SamplingParams, StopReason};
use basalt_proto::{from_json, BedrockError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    limits, push_turn, Completion, ParsedText, Prompt, PromptUsage, TextInvocation, TextResponder,
};

#[derive(Debug, Deserialize)]
struct CommandRBody {
    message: Option<String>,
    chat_history: Option<Vec<HistoryEntry>>,
    documents: Option<Vec<Value>>,
    preamble: Option<String>,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    p: Option<f64>,
    k: Option<i64>,
    seed: Option<u64>,
    stop_sequences: Option<Vec<String>>,
    tools: Option<Value>,
    tool_results: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct HistoryEntry {
    role: String,
    message: String,
}

pub fn parse_command_r(body: &[u8]) -> Result<ParsedText, BedrockError> {
    let b: CommandRBody = from_json(body)?;
    let message = b.message.ok_or_else(|| BedrockError::missing("message"))?;
    if b.tools.is_some() || b.tool_results.is_some() {
        return Err(BedrockError::validation("tools: tool use is not available in this Basalt release; remove `tools` and `tool_results`."));
    }
    let mut turns = Vec::new();
    let mut system = b.preamble.unwrap_or_default();
    if let Some(docs) = &b.documents {
        // Grounding documents are given to the model in its system turn.
        for (i, d) in docs.iter().enumerate() {
            let text = d.as_object().map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}: {}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_string)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            let text = text.ok_or_else(|| {
                BedrockError::validation(format!(
                    "documents[{i}]: expected an object of string fields."
                ))
            })?;
            system.push_str(&format!("\n\nDocument {i}:\n{text}"));
        }
    }
    if !system.trim().is_empty() {
        turns.push(ChatTurn::new("system", system.trim()));
    }
    for (i, h) in b.chat_history.iter().flatten().enumerate() {
        let role = match h.role.as_str() {
            "USER" => "user",
            "CHATBOT" => "assistant",
            "SYSTEM" => "system",
            other => {
                return Err(BedrockError::validation(format!(
                    "chat_history[{i}].role: unexpected role \"{other}\"; use USER or CHATBOT."
                )))
            }
        };
        push_turn(&mut turns, role, &h.message);
    }
    push_turn(&mut turns, "user", &message);
    let sampling = SamplingParams {
        temperature: limits::unit_interval("temperature", b.temperature)?.unwrap_or(0.3),
        top_p: limits::unit_interval("p", b.p)?.unwrap_or(0.75),
        top_k: limits::top_k("k", b.k, 500)?,
        seed: b.seed,
        ..SamplingParams::default()
    };
    Ok((
        TextInvocation {
            prompt: Prompt::Chat(turns),
            max_tokens: limits::max_tokens("max_tokens", b.max_tokens, 512)?,
            stop_sequences: limits::stop_sequences("stop_sequences", b.stop_sequences)?,
            sampling,
            output: crate::OutputMode::Text,
        },
        Box::new(CommandRResponder {
            history: b
                .chat_history
                .unwrap_or_default()
                .into_iter()
                .map(|h| (h.role, h.message))
                .collect(),
            message,
            generation_id: uuid::Uuid::new_v4().to_string(),
        }),
    ))
}

fn finish_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndOfTurn | StopReason::StopSequence(_) | StopReason::GrammarComplete => {
            "COMPLETE"
        }
        StopReason::MaxTokens | StopReason::ContextWindow => "MAX_TOKENS",
    }
}

struct CommandRResponder {
    history: Vec<(String, String)>,
    message: String,
    generation_id: String,
}

impl TextResponder for CommandRResponder {
    fn response(&self, done: &Completion) -> Value {
        let mut history: Vec<Value> = self
            .history
            .iter()
            .map(|(r, m)| json!({"role": r, "message": m}))
            .collect();
        history.push(json!({"role": "USER", "message": self.message}));
        history.push(json!({"role": "CHATBOT", "message": done.text}));
        json!({
            "response_id": uuid::Uuid::new_v4().to_string(),
            "text": done.text,
            "generation_id": self.generation_id,
            "chat_history": history,
            "finish_reason": finish_reason(&done.stop_reason),
            "meta": {"api_version": {"version": "1"}, "billed_units": {"input_tokens": done.input_tokens, "output_tokens": done.output_tokens}},
        })
    }
    fn stream_start(&mut self, _prompt: &PromptUsage) -> Vec<Value> {
        vec![
            json!({"is_finished": false, "event_type": "stream-start", "generation_id": self.generation_id}),
        ]
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        vec![json!({"is_finished": false, "event_type": "text-generation", "text": text})]
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        vec![
            json!({"is_finished": true, "event_type": "stream-end", "finish_reason": finish_reason(&done.stop_reason), "response": self.response(done)}),
        ]
    }
}

#[derive(Debug, Deserialize)]
struct CommandBody {
    prompt: Option<String>,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    p: Option<f64>,
    k: Option<i64>,
    stop_sequences: Option<Vec<String>>,
    num_generations: Option<i64>,
}

pub fn parse_command(body: &[u8]) -> Result<ParsedText, BedrockError> {
    let b: CommandBody = from_json(body)?;
    let prompt = b.prompt.ok_or_else(|| BedrockError::missing("prompt"))?;
    if b.num_generations.is_some_and(|n| n != 1) {
        return Err(BedrockError::validation(
            "num_generations: only 1 generation per request is supported.",
        ));
    }
    let sampling = SamplingParams {
        temperature: limits::unit_interval("temperature", b.temperature)?.unwrap_or(0.9),
        top_p: limits::unit_interval("p", b.p)?.unwrap_or(0.75),
        top_k: limits::top_k("k", b.k, 500)?,
        ..SamplingParams::default()
    };
    Ok((
        TextInvocation {
            prompt: Prompt::Chat(vec![ChatTurn::new("user", prompt.clone())]),
            max_tokens: limits::max_tokens("max_tokens", b.max_tokens, 20)?,
            stop_sequences: limits::stop_sequences("stop_sequences", b.stop_sequences)?,
            sampling,
            output: crate::OutputMode::Text,
        },
        Box::new(CommandResponder { prompt }),
    ))
}

struct CommandResponder {
    prompt: String,
}

impl TextResponder for CommandResponder {
    fn response(&self, done: &Completion) -> Value {
        json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "prompt": self.prompt,
            "generations": [{"id": uuid::Uuid::new_v4().to_string(), "text": done.text, "finish_reason": finish_reason(&done.stop_reason), "is_finished": true, "index": 0}],
        })
    }
    fn stream_start(&mut self, _prompt: &PromptUsage) -> Vec<Value> {
        Vec::new()
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        vec![json!({"text": text, "is_finished": false})]
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        vec![
            json!({"is_finished": true, "finish_reason": finish_reason(&done.stop_reason), "text": ""}),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_r_history_and_response() {
        let (inv, mut r) = parse_command_r(br#"{"message":"Skills?","chat_history":[{"role":"USER","message":"New AI role?"},{"role":"CHATBOT","message":"Prompt engineer!"}],"max_tokens":20,"temperature":0.6,"p":0.5,"k":250}"#).expect("parse");
        assert_eq!(
            inv.prompt,
            Prompt::Chat(vec![
                ChatTurn::new("user", "New AI role?"),
                ChatTurn::new("assistant", "Prompt engineer!"),
                ChatTurn::new("user", "Skills?")
            ])
        );
        let done = Completion {
            text: "Python".into(),
            stop_reason: StopReason::EndOfTurn,
            input_tokens: 9,
            output_tokens: 1,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 1,
            first_byte_ms: 1,
        };
        let v = r.response(&done);
        assert_eq!(v["text"], "Python");
        assert_eq!(v["finish_reason"], "COMPLETE");
        assert_eq!(v["chat_history"].as_array().map(Vec::len), Some(4));
        assert_eq!(r.stream_end(&done)[0]["event_type"], "stream-end");
    }

    #[test]
    fn command_needs_a_prompt() {
        assert!(parse_command(b"{}")
            .err()
            .expect("missing")
            .message
            .contains("prompt"));
    }
}
