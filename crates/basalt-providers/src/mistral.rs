//! Mistral AI: text completion (`prompt`, raw) and chat completion (`messages`).

use basalt_engine::{ChatTurn, SamplingParams, StopReason};
use basalt_proto::{from_json, BedrockError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    limits, push_turn, Completion, ParsedText, Prompt, PromptUsage, TextInvocation, TextResponder,
};

#[derive(Debug, Deserialize)]
struct Body {
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    max_tokens: Option<i64>,
    stop: Option<Vec<String>>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Value>,
}

pub fn parse(body: &[u8], model_id: &str) -> Result<ParsedText, BedrockError> {
    let b: Body = from_json(body)?;
    let sampling = SamplingParams {
        temperature: limits::unit_interval("temperature", b.temperature)?.unwrap_or(0.7),
        top_p: limits::unit_interval("top_p", b.top_p)?.unwrap_or(1.0),
        top_k: limits::top_k("top_k", b.top_k, 200)?,
        ..SamplingParams::default()
    };
    let max_tokens = limits::max_tokens("max_tokens", b.max_tokens, 512)?;
    let stop_sequences = limits::stop_sequences("stop", b.stop)?;
    if let Some(messages) = b.messages {
        if b.tools.is_some() || b.tool_choice.is_some() {
            return Err(BedrockError::validation(
                "tools: tool use is not available in this Basalt release; remove `tools` and `tool_choice`.",
            ));
        }
        let turns = chat_turns(&messages, model_id)?;
        return Ok((
            TextInvocation {
                prompt: Prompt::Chat(turns),
                max_tokens,
                stop_sequences,
                sampling,
                output: crate::OutputMode::Text,
            },
            Box::new(ChatResponder {
                id: uuid::Uuid::new_v4().simple().to_string(),
                model: model_id.to_string(),
                created: now(),
            }),
        ));
    }
    let prompt = b.prompt.ok_or_else(|| BedrockError::missing("prompt"))?;
    Ok((
        TextInvocation {
            prompt: crate::prompt_markup::read(&prompt),
            max_tokens,
            stop_sequences,
            sampling,
            output: crate::OutputMode::Text,
        },
        Box::new(RawResponder),
    ))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn chat_turns(messages: &[ChatMessage], model_id: &str) -> Result<Vec<ChatTurn>, BedrockError> {
    if messages.is_empty() {
        return Err(BedrockError::validation(
            "messages: at least one message is required.",
        ));
    }
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "user" | "assistant" => m.role.as_str(),
            "tool" => {
                return Err(BedrockError::validation(format!(
                    "messages[{i}].role: tool messages need tool use, which is not available in this Basalt release."
                )))
            }
            other => return Err(BedrockError::validation(format!("messages[{i}].role: unexpected role \"{other}\"."))),
        };
        let text = match &m.content {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::new();
                for (j, part) in parts.iter().enumerate() {
                    match part.get("type").and_then(Value::as_str) {
                        Some("text") => texts.push(
                            part.get("text")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                        ),
                        Some("image_url") => return Err(crate::images::no_vision(model_id)),
                        _ => {
                            return Err(BedrockError::validation(format!(
                                "messages[{i}].content[{j}]: expected a text part."
                            )))
                        }
                    }
                }
                texts.join("\n")
            }
            Some(_) => {
                return Err(BedrockError::validation(format!(
                    "messages[{i}].content: expected a string or a list of parts."
                )))
            }
        };
        push_turn(&mut turns, role, &text);
    }
    Ok(turns)
}

fn stop_reason(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::EndOfTurn | StopReason::StopSequence(_) | StopReason::GrammarComplete => "stop",
        StopReason::MaxTokens | StopReason::ContextWindow => "length",
    }
}

struct RawResponder;

impl TextResponder for RawResponder {
    fn response(&self, done: &Completion) -> Value {
        json!({"outputs": [{"text": done.text, "stop_reason": stop_reason(&done.stop_reason)}]})
    }
    fn stream_start(&mut self, _prompt: &PromptUsage) -> Vec<Value> {
        Vec::new()
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        vec![json!({"outputs": [{"text": text, "stop_reason": null}]})]
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        vec![json!({"outputs": [{"text": "", "stop_reason": stop_reason(&done.stop_reason)}]})]
    }
}

struct ChatResponder {
    id: String,
    model: String,
    created: u64,
}

impl ChatResponder {
    fn chunk(&self, content: Value, stop: Value, usage: Value) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "logprobs": null,
                "message": {"role": "assistant", "content": content, "tool_calls": null, "index": null, "tool_call_id": null},
                "stop_reason": stop}],
            "usage": usage,
        })
    }
}

impl TextResponder for ChatResponder {
    fn response(&self, done: &Completion) -> Value {
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text}, "stop_reason": stop_reason(&done.stop_reason)}],
            "usage": {"prompt_tokens": done.input_tokens, "completion_tokens": done.output_tokens, "total_tokens": done.input_tokens + done.output_tokens},
        })
    }
    fn stream_start(&mut self, _prompt: &PromptUsage) -> Vec<Value> {
        Vec::new()
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        vec![self.chunk(Value::String(text.to_string()), Value::Null, Value::Null)]
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        let usage = json!({"prompt_tokens": done.input_tokens, "completion_tokens": done.output_tokens, "total_tokens": done.input_tokens + done.output_tokens});
        vec![self.chunk(
            Value::String(String::new()),
            Value::String(stop_reason(&done.stop_reason).into()),
            usage,
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> Completion {
        Completion {
            text: "Hi".into(),
            stop_reason: StopReason::EndOfTurn,
            input_tokens: 4,
            output_tokens: 2,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 1,
            first_byte_ms: 1,
        }
    }

    #[test]
    fn text_completion_reads_inst_markup_into_turns() {
        let (inv, r) = parse(
            br#"{"prompt":"<s>[INST] Hi [/INST]","max_tokens":512,"temperature":0.7,"top_p":0.9}"#,
            "mistral.mistral-large-2402-v1:0",
        )
        .expect("parse");
        assert_eq!(inv.prompt, Prompt::Chat(vec![ChatTurn::new("user", "Hi")]));
        assert_eq!(r.response(&done())["outputs"][0]["stop_reason"], "stop");
    }

    #[test]
    fn chat_completion_uses_turns_and_choices() {
        let (inv, r) = parse(br#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":20}"#, "mistral.mistral-large-2407-v1:0").expect("parse");
        assert_eq!(
            inv.prompt,
            Prompt::Chat(vec![
                ChatTurn::new("system", "Be brief."),
                ChatTurn::new("user", "Hi")
            ])
        );
        let v = r.response(&done());
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["usage"]["total_tokens"], 6);
    }

    #[test]
    fn prompt_or_messages_is_required() {
        assert!(parse(b"{}", "mistral.x")
            .err()
            .expect("missing")
            .message
            .contains("prompt"));
    }
}
