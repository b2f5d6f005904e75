//! Amazon Nova understanding models: the InvokeModel body is the Converse
//! schema (`messages-v1`), and stream chunks are Converse events wrapped under
//! their event names.

use basalt_proto::converse::{ConverseStreamEvent, Message, SystemContentBlock};
use basalt_proto::{from_json, BedrockError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::converse::{self, Inference};
use crate::{Completion, ParsedText, PromptUsage, Target, TextResponder};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    schema_version: Option<String>,
    #[serde(default)]
    system: Vec<SystemContentBlock>,
    messages: Option<Vec<Message>>,
    #[serde(default)]
    inference_config: Config,
    tool_config: Option<Value>,
}

/// Both spellings appear in Nova samples, so both are accepted.
#[derive(Debug, Default, Deserialize)]
struct Config {
    #[serde(rename = "maxTokens", alias = "max_new_tokens")]
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    #[serde(rename = "topP", alias = "top_p")]
    top_p: Option<f64>,
    #[serde(rename = "topK", alias = "top_k")]
    top_k: Option<i64>,
    #[serde(rename = "stopSequences")]
    stop_sequences: Option<Vec<String>>,
}

pub fn parse(body: &[u8], target: Target<'_>) -> Result<ParsedText, BedrockError> {
    let b: Body = from_json(body)?;
    if let Some(v) = b.schema_version.as_deref().filter(|v| *v != "messages-v1") {
        return Err(BedrockError::validation(format!(
            "schemaVersion: '{v}' is not supported; use \"messages-v1\"."
        )));
    }
    if b.tool_config.is_some() {
        return Err(BedrockError::validation(
            "toolConfig: tool use is not available in this Basalt release; remove toolConfig.",
        ));
    }
    let messages = b
        .messages
        .ok_or_else(|| BedrockError::missing("messages"))?;
    if messages.is_empty() {
        return Err(BedrockError::validation(
            "messages: at least one message is required.",
        ));
    }
    let c = b.inference_config;
    let inv = converse::invocation(
        &b.system,
        &messages,
        Inference {
            max_tokens: ("inferenceConfig.maxTokens", c.max_tokens),
            temperature: ("inferenceConfig.temperature", c.temperature),
            top_p: ("inferenceConfig.topP", c.top_p),
            top_k: ("inferenceConfig.topK", c.top_k),
            stop_sequences: ("inferenceConfig.stopSequences", c.stop_sequences),
        },
        target,
    )?;
    Ok((inv, Box::new(Responder)))
}

struct Responder;

fn wrap(event: &ConverseStreamEvent) -> Value {
    json!({ event.event_type(): event.payload() })
}

impl TextResponder for Responder {
    fn response(&self, done: &Completion) -> Value {
        let r = converse::response(done, None);
        json!({
            "output": r.output,
            "stopReason": r.stop_reason,
            "usage": {
                "inputTokens": r.usage.input_tokens, "outputTokens": r.usage.output_tokens,
                "totalTokens": r.usage.total_tokens,
                "cacheReadInputTokenCount": 0, "cacheWriteInputTokenCount": 0,
            },
        })
    }
    fn stream_start(&mut self, _prompt: &PromptUsage) -> Vec<Value> {
        vec![wrap(&converse::stream_start())]
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        vec![wrap(&converse::stream_delta(text))]
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        converse::stream_end(done, None)
            .iter()
            .map(|e| match e {
                ConverseStreamEvent::Metadata { usage, .. } => json!({"metadata": {
                    "usage": {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens},
                    "metrics": {}, "trace": {}}}),
                other => wrap(other),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_engine::StopReason;

    #[test]
    fn nova_body_and_response() {
        let target = Target {
            model_id: "amazon.nova-micro-v1:0",
            vision: false,
        };
        let (inv, mut r) = parse(br#"{"schemaVersion":"messages-v1","system":[{"text":"Act as a writer."}],"messages":[{"role":"user","content":[{"text":"A camping trip"}]}],"inferenceConfig":{"max_new_tokens":50,"top_p":0.9,"topK":20,"temperature":0.7}}"#, target).expect("parse");
        assert_eq!(inv.max_tokens, 50);
        assert_eq!(inv.sampling.top_k, 20);
        let done = Completion {
            text: "Under".into(),
            stop_reason: StopReason::EndOfTurn,
            input_tokens: 5,
            output_tokens: 1,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 3,
            first_byte_ms: 1,
        };
        let v = r.response(&done);
        assert_eq!(v["output"]["message"]["content"][0]["text"], "Under");
        assert_eq!(v["stopReason"], "end_turn");
        assert_eq!(
            r.stream_delta("Un")[0]["contentBlockDelta"]["delta"]["text"],
            "Un"
        );
        let end = r.stream_end(&done);
        assert_eq!(end[1]["messageStop"]["stopReason"], "end_turn");
        assert_eq!(end[2]["metadata"]["usage"]["outputTokens"], 1);
    }
}
