//! Converse and ConverseStream shapes (bedrock-runtime 2023-09-30). Unions are
//! externally tagged enums, so `{"text": "hi"}` is `ContentBlock::Text` and an
//! object with two members is refused, as botocore would refuse it.
//! Members Basalt does not act on yet are kept as raw JSON documents.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseRequest {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub system: Vec<SystemContentBlock>,
    pub inference_config: Option<InferenceConfiguration>,
    pub tool_config: Option<Value>,
    pub guardrail_config: Option<Value>,
    pub additional_model_request_fields: Option<Value>,
    pub additional_model_response_field_paths: Option<Vec<String>>,
    pub prompt_variables: Option<Value>,
    pub request_metadata: Option<Value>,
    pub performance_config: Option<Value>,
    pub service_tier: Option<Value>,
    pub output_config: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentBlock {
    Text(String),
    Image(ImageBlock),
    Document(Value),
    Video(Value),
    Audio(Value),
    ToolUse(Value),
    ToolResult(Value),
    GuardContent(Value),
    CachePoint(Value),
    ReasoningContent(Value),
    CitationsContent(Value),
    SearchResult(Value),
    ToolAddition(Value),
    ToolRemoval(Value),
}

impl ContentBlock {
    /// The member name, for messages about blocks Basalt cannot use.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::Image(_) => "image",
            Self::Document(_) => "document",
            Self::Video(_) => "video",
            Self::Audio(_) => "audio",
            Self::ToolUse(_) => "toolUse",
            Self::ToolResult(_) => "toolResult",
            Self::GuardContent(_) => "guardContent",
            Self::CachePoint(_) => "cachePoint",
            Self::ReasoningContent(_) => "reasoningContent",
            Self::CitationsContent(_) => "citationsContent",
            Self::SearchResult(_) => "searchResult",
            Self::ToolAddition(_) => "toolAddition",
            Self::ToolRemoval(_) => "toolRemoval",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageBlock {
    pub format: String,
    pub source: ImageSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ImageSource {
    /// Base64 in JSON.
    Bytes(String),
    S3Location(Value),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SystemContentBlock {
    Text(String),
    GuardContent(Value),
    CachePoint(Value),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceConfiguration {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop_sequences: Option<Vec<String>>,
}

// ---- responses ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    StopSequence,
    GuardrailIntervened,
    ContentFiltered,
    MalformedModelOutput,
    MalformedToolUse,
    ModelContextWindowExceeded,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub total_tokens: u32,
}

impl TokenUsage {
    pub fn new(input_tokens: u32, output_tokens: u32) -> Self {
        Self {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens + output_tokens,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub latency_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConverseOutput {
    pub message: Message,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseResponse {
    pub output: ConverseOutput,
    pub stop_reason: StopReason,
    pub usage: TokenUsage,
    pub metrics: Metrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_model_response_fields: Option<Value>,
}

/// One ConverseStream event: the variant name is the `:event-type`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ConverseStreamEvent {
    MessageStart {
        role: Role,
    },
    #[serde(rename_all = "camelCase")]
    ContentBlockDelta {
        content_block_index: u32,
        delta: ContentBlockDelta,
    },
    #[serde(rename_all = "camelCase")]
    ContentBlockStop {
        content_block_index: u32,
    },
    #[serde(rename_all = "camelCase")]
    MessageStop {
        stop_reason: StopReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        additional_model_response_fields: Option<Value>,
    },
    Metadata {
        usage: TokenUsage,
        metrics: Metrics,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentBlockDelta {
    Text(String),
}

impl ConverseStreamEvent {
    /// The `:event-type` header value.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "messageStart",
            Self::ContentBlockDelta { .. } => "contentBlockDelta",
            Self::ContentBlockStop { .. } => "contentBlockStop",
            Self::MessageStop { .. } => "messageStop",
            Self::Metadata { .. } => "metadata",
        }
    }

    /// The event's members, without the union wrapper.
    pub fn payload(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut map)) => map.remove(self.event_type()).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}

/// CountTokens input: one of an InvokeModel body or a Converse request.
#[derive(Debug, Clone, Deserialize)]
pub struct CountTokensRequest {
    pub input: CountTokensInput,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CountTokensInput {
    InvokeModel(InvokeModelTokensRequest),
    Converse(Box<ConverseRequest>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvokeModelTokensRequest {
    /// Base64 of the InvokeModel body.
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::from_json;

    #[test]
    fn parses_the_seed_converse_request() {
        let req: ConverseRequest = from_json(
            br#"{"messages":[{"role":"user","content":[{"text":"What is Lambda?"}]}],
                "inferenceConfig":{"maxTokens":1024,"temperature":0.7},"system":[{"text":"Be concise."}]}"#,
        )
        .expect("parse");
        assert_eq!(req.messages.len(), 1);
        assert!(
            matches!(&req.messages[0].content[0], ContentBlock::Text(t) if t == "What is Lambda?")
        );
        assert_eq!(req.inference_config.and_then(|c| c.max_tokens), Some(1024));
    }

    #[test]
    fn a_union_with_two_members_is_refused() {
        let err = from_json::<ConverseRequest>(
            br#"{"messages":[{"role":"user","content":[{"text":"a","image":{}}]}]}"#,
        )
        .expect_err("two members");
        assert!(
            err.message.contains("messages[0].content[0]"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_role_is_refused_with_its_path() {
        let err = from_json::<ConverseRequest>(br#"{"messages":[{"role":"robot","content":[]}]}"#)
            .expect_err("role");
        assert!(err.message.contains("messages[0].role"), "{}", err.message);
    }

    #[test]
    fn stream_event_payload_drops_the_union_wrapper() {
        let e = ConverseStreamEvent::ContentBlockDelta {
            content_block_index: 0,
            delta: ContentBlockDelta::Text("Hi".into()),
        };
        assert_eq!(e.event_type(), "contentBlockDelta");
        assert_eq!(
            e.payload().to_string(),
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#
        );
    }

    #[test]
    fn response_serialises_like_the_minimal_valid_example() {
        let r = ConverseResponse {
            output: ConverseOutput {
                message: Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::Text("hi".into())],
                },
            },
            stop_reason: StopReason::EndTurn,
            usage: TokenUsage::new(1, 2),
            metrics: Metrics { latency_ms: 5 },
            additional_model_response_fields: None,
        };
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3},"metrics":{"latencyMs":5}}"#
        );
    }
}
