//! The Converse API: one request shape for every text model, translated into
//! the internal request, and the engine's output shaped into Converse responses
//! and ConverseStream events.

use basalt_engine::{ChatTurn, SamplingParams, StopReason};
use basalt_proto::converse::{
    ContentBlock, ContentBlockDelta, ConverseOutput, ConverseRequest, ConverseResponse,
    ConverseStreamEvent, Message, Metrics, Role, SystemContentBlock, TokenUsage,
};
use basalt_proto::BedrockError;
use serde_json::Value;

use crate::images::{self, ImageFormat};
use crate::{limits, push_turn, Completion, Prompt, Target, TextInvocation};

/// Messages per Converse request.
pub const MAX_MESSAGES: usize = 1000;
/// Default `maxTokens` when the caller leaves it out.
pub const DEFAULT_MAX_TOKENS: u32 = 512;

/// Sampling settings, with the member paths used in error messages.
pub struct Inference<'a> {
    pub max_tokens: (&'a str, Option<i64>),
    pub temperature: (&'a str, Option<f64>),
    pub top_p: (&'a str, Option<f64>),
    pub top_k: (&'a str, Option<i64>),
    pub stop_sequences: (&'a str, Option<Vec<String>>),
}

/// Builds the internal request from Converse members (also used for Nova bodies).
pub fn invocation(
    system: &[SystemContentBlock],
    messages: &[Message],
    inference: Inference<'_>,
    target: Target<'_>,
) -> Result<TextInvocation, BedrockError> {
    let turns = chat_turns(system, messages, target)?;
    let sampling = SamplingParams {
        temperature: limits::unit_interval(inference.temperature.0, inference.temperature.1)?
            .unwrap_or(0.7),
        top_p: limits::unit_interval(inference.top_p.0, inference.top_p.1)?.unwrap_or(0.9),
        top_k: limits::top_k(inference.top_k.0, inference.top_k.1, 500)?,
        ..SamplingParams::default()
    };
    Ok(TextInvocation {
        prompt: Prompt::Chat(turns),
        max_tokens: limits::max_tokens(
            inference.max_tokens.0,
            inference.max_tokens.1,
            DEFAULT_MAX_TOKENS,
        )?,
        stop_sequences: limits::stop_sequences(
            inference.stop_sequences.0,
            inference.stop_sequences.1,
        )?,
        sampling,
        output: crate::OutputMode::Text,
    })
}

/// Converse and ConverseStream requests.
pub fn parse(req: &ConverseRequest, target: Target<'_>) -> Result<TextInvocation, BedrockError> {
    if req.tool_config.is_some() {
        return Err(BedrockError::validation(
            "toolConfig: tool use is not available in this Basalt release; remove toolConfig.",
        ));
    }
    if req.messages.is_empty() {
        return Err(BedrockError::validation(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    if let Some(paths) = &req.additional_model_response_field_paths {
        if paths.len() > 10
            || paths
                .iter()
                .any(|p| p.is_empty() || p.len() > 256 || !p.starts_with('/'))
        {
            return Err(BedrockError::validation(
                "additionalModelResponseFieldPaths: give at most 10 JSON Pointers, each starting with '/' and at most 256 characters.",
            ));
        }
    }
    let config = req.inference_config.clone().unwrap_or_default();
    // Models' own sampling members may come through additionalModelRequestFields.
    let extra = req.additional_model_request_fields.as_ref();
    let top_k = extra
        .and_then(|e| e.get("top_k").or_else(|| e.get("topK")))
        .and_then(Value::as_i64);
    invocation(
        &req.system,
        &req.messages,
        Inference {
            max_tokens: ("inferenceConfig.maxTokens", config.max_tokens),
            temperature: ("inferenceConfig.temperature", config.temperature),
            top_p: ("inferenceConfig.topP", config.top_p),
            top_k: ("additionalModelRequestFields.top_k", top_k),
            stop_sequences: ("inferenceConfig.stopSequences", config.stop_sequences),
        },
        target,
    )
}

fn chat_turns(
    system: &[SystemContentBlock],
    messages: &[Message],
    target: Target<'_>,
) -> Result<Vec<ChatTurn>, BedrockError> {
    if messages.len() > MAX_MESSAGES {
        return Err(BedrockError::validation(format!(
            "messages: at most {MAX_MESSAGES} messages are allowed."
        )));
    }
    let mut turns = Vec::new();
    let system_text: Vec<String> = system
        .iter()
        .filter_map(|b| match b {
            SystemContentBlock::Text(t) => Some(t.clone()),
            SystemContentBlock::GuardContent(g) => guard_text(g),
            SystemContentBlock::CachePoint(_) => None,
        })
        .collect();
    if !system_text.is_empty() {
        turns.push(ChatTurn::new("system", system_text.join("\n")));
    }
    let mut previous: Option<Role> = None;
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => {
                return Err(BedrockError::validation(format!(
                    "messages.{i}.role: use the system member for system prompts; messages take user and assistant roles."
                )))
            }
        };
        if i == 0 && m.role != Role::User {
            return Err(BedrockError::validation(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
        if previous == Some(m.role) {
            return Err(BedrockError::validation(
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.",
            ));
        }
        previous = Some(m.role);
        if m.content.is_empty() {
            return Err(BedrockError::validation(format!(
                "messages.{i}.content: at least one content block is required."
            )));
        }
        let mut texts = Vec::new();
        let mut has_image = false;
        for (j, block) in m.content.iter().enumerate() {
            match block {
                ContentBlock::Text(t) => texts.push(t.clone()),
                ContentBlock::GuardContent(g) => texts.extend(guard_text(g)),
                ContentBlock::CachePoint(_) => {}
                ContentBlock::Image(image) => {
                    let at = format!("messages.{i}.content.{j}.image");
                    let format = ImageFormat::from_converse(&image.format).ok_or_else(|| {
                        BedrockError::validation(format!("{at}.format: '{}' is not one of png, jpeg, gif, webp.", image.format))
                    })?;
                    match &image.source {
                        basalt_proto::converse::ImageSource::Bytes(data) => {
                            images::validate_base64(&at, format, data)?;
                        }
                        basalt_proto::converse::ImageSource::S3Location(_) => {
                            return Err(BedrockError::validation(format!(
                                "{at}.source.s3Location: images from S3 are not supported; send the bytes."
                            )))
                        }
                    }
                    has_image = true;
                }
                other => {
                    return Err(BedrockError::validation(format!(
                        "messages.{i}.content.{j}: This model doesn't support the {} content block that you provided. Try again with a text or image block.",
                        other.kind()
                    )))
                }
            }
        }
        if has_image && !target.vision {
            return Err(images::no_vision(target.model_id));
        }
        push_turn(&mut turns, role, &texts.join("\n"));
    }
    Ok(turns)
}

fn guard_text(block: &Value) -> Option<String> {
    block.get("text")?.get("text")?.as_str().map(str::to_string)
}

pub fn stop_reason(reason: &StopReason) -> basalt_proto::converse::StopReason {
    use basalt_proto::converse::StopReason as S;
    match reason {
        StopReason::EndOfTurn | StopReason::GrammarComplete => S::EndTurn,
        StopReason::MaxTokens => S::MaxTokens,
        StopReason::StopSequence(_) => S::StopSequence,
        StopReason::ContextWindow => S::ModelContextWindowExceeded,
    }
}

/// The `additionalModelResponseFields` asked for with JSON Pointers, from what Basalt knows.
fn additional_fields(paths: Option<&[String]>, done: &Completion) -> Option<Value> {
    let paths = paths?;
    let native = serde_json::json!({
        "stop_sequence": match &done.stop_reason { StopReason::StopSequence(s) => Value::String(s.clone()), _ => Value::Null },
    });
    let mut out = serde_json::Map::new();
    for p in paths {
        if let Some(v) = native.pointer(p) {
            out.insert(p.trim_start_matches('/').to_string(), v.clone());
        }
    }
    Some(Value::Object(out))
}

pub fn response(done: &Completion, paths: Option<&[String]>) -> ConverseResponse {
    ConverseResponse {
        output: ConverseOutput {
            message: Message {
                role: Role::Assistant,
                content: vec![ContentBlock::Text(done.text.clone())],
            },
        },
        stop_reason: stop_reason(&done.stop_reason),
        usage: TokenUsage::new(done.input_tokens, done.output_tokens),
        metrics: Metrics {
            latency_ms: done.latency_ms,
        },
        additional_model_response_fields: additional_fields(paths, done),
    }
}

pub fn stream_start() -> ConverseStreamEvent {
    ConverseStreamEvent::MessageStart {
        role: Role::Assistant,
    }
}

pub fn stream_delta(text: &str) -> ConverseStreamEvent {
    ConverseStreamEvent::ContentBlockDelta {
        content_block_index: 0,
        delta: ContentBlockDelta::Text(text.to_string()),
    }
}

/// contentBlockStop, messageStop, metadata.
pub fn stream_end(done: &Completion, paths: Option<&[String]>) -> Vec<ConverseStreamEvent> {
    vec![
        ConverseStreamEvent::ContentBlockStop {
            content_block_index: 0,
        },
        ConverseStreamEvent::MessageStop {
            stop_reason: stop_reason(&done.stop_reason),
            additional_model_response_fields: additional_fields(paths, done),
        },
        ConverseStreamEvent::Metadata {
            usage: TokenUsage::new(done.input_tokens, done.output_tokens),
            metrics: Metrics {
                latency_ms: done.latency_ms,
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_proto::from_json;

    const TARGET: Target<'static> = Target {
        model_id: "anthropic.claude-3-sonnet-20240229-v1:0",
        vision: false,
    };

    fn req(json: &str) -> ConverseRequest {
        from_json(json.as_bytes()).expect("request")
    }

    #[test]
    fn seed_converse_becomes_turns_and_settings() {
        let inv = parse(&req(r#"{"messages":[{"role":"user","content":[{"text":"What is Lambda?"}]}],"system":[{"text":"Be concise."}],"inferenceConfig":{"maxTokens":1024,"temperature":0.7}}"#), TARGET).expect("parse");
        assert_eq!(
            inv.prompt,
            Prompt::Chat(vec![
                ChatTurn::new("system", "Be concise."),
                ChatTurn::new("user", "What is Lambda?")
            ])
        );
        assert_eq!(inv.max_tokens, 1024);
    }

    #[test]
    fn conversation_rules_are_enforced() {
        let e = parse(&req(r#"{"messages":[]}"#), TARGET).expect_err("empty");
        assert!(e.message.contains("start with a user message"));
        let e = parse(
            &req(r#"{"messages":[{"role":"assistant","content":[{"text":"x"}]}]}"#),
            TARGET,
        )
        .expect_err("assistant first");
        assert!(e.message.contains("start with a user message"));
        let e = parse(&req(r#"{"messages":[{"role":"user","content":[{"text":"x"}]},{"role":"user","content":[{"text":"y"}]}]}"#), TARGET).expect_err("alternate");
        assert!(e.message.contains("alternate"));
        let e = parse(&req(r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"inferenceConfig":{"temperature":5}}"#), TARGET).expect_err("temperature");
        assert!(e.message.contains("inferenceConfig.temperature"));
        let e = parse(
            &req(r#"{"messages":[{"role":"user","content":[{"video":{}}]}]}"#),
            TARGET,
        )
        .expect_err("video");
        assert!(e.message.contains("video"));
    }

    #[test]
    fn stream_end_events_follow_the_conventional_order() {
        let done = Completion {
            text: "x".into(),
            stop_reason: StopReason::MaxTokens,
            input_tokens: 3,
            output_tokens: 4,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 9,
            first_byte_ms: 1,
        };
        let names: Vec<_> = stream_end(&done, None)
            .iter()
            .map(|e| e.event_type())
            .collect();
        assert_eq!(names, ["contentBlockStop", "messageStop", "metadata"]);
        let r = response(&done, Some(&["/stop_sequence".to_string()]));
        assert_eq!(r.usage.total_tokens, 7);
        assert_eq!(
            r.additional_model_response_fields,
            Some(serde_json::json!({"stop_sequence": null}))
        );
    }
}
