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
    pub tool_config: Option<ToolConfiguration>,
    pub guardrail_config: Option<Value>,
    pub additional_model_request_fields: Option<Value>,
    pub additional_model_response_field_paths: Option<Vec<String>>,
    pub prompt_variables: Option<Value>,
    pub request_metadata: Option<Value>,
    pub performance_config: Option<Value>,
    pub service_tier: Option<Value>,
    pub output_config: Option<OutputConfig>,
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
    ToolUse(ToolUseBlock),
    ToolResult(ToolResultBlock),
    GuardContent(Value),
    CachePoint(CachePointBlock),
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
    CachePoint(CachePointBlock),
}

/// Marks the end of a cacheable prompt prefix (messages, system blocks, tools).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachePointBlock {
    #[serde(rename = "type")]
    pub kind: CachePointType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<CacheTtl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CachePointType {
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheTtl {
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    OneHour,
}

// ---- tools ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfiguration {
    pub tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Tool {
    ToolSpec(ToolSpecification),
    SystemTool(SystemTool),
    CachePoint(CachePointBlock),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpecification {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: ToolInputSchema,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolInputSchema {
    Json(Value),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemTool {
    pub name: String,
}

/// An empty structure member such as `{"auto": {}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolChoice {
    Auto(Empty),
    Any(Empty),
    Tool(SpecificToolChoice),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecificToolChoice {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseBlock {
    pub tool_use_id: String,
    pub name: String,
    pub input: Value,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultBlock {
    pub tool_use_id: String,
    pub content: Vec<ToolResultContentBlock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ToolResultStatus>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolResultContentBlock {
    Json(Value),
    Text(String),
    Image(ImageBlock),
    Document(Value),
    Video(Value),
    SearchResult(Value),
}

impl ToolResultContentBlock {
    /// The member name, for messages about blocks Basalt cannot use.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Json(_) => "json",
            Self::Text(_) => "text",
            Self::Image(_) => "image",
            Self::Document(_) => "document",
            Self::Video(_) => "video",
            Self::SearchResult(_) => "searchResult",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolResultStatus {
    Success,
    Error,
}

// ---- structured output ----

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_format: Option<OutputFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputFormat {
    #[serde(rename = "type")]
    pub kind: OutputFormatType,
    pub structure: OutputFormatStructure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormatType {
    JsonSchema,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutputFormatStructure {
    JsonSchema(JsonSchemaDefinition),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonSchemaDefinition {
    /// The schema as JSON text, not a document.
    pub schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_input_tokens: Option<u32>,
}

impl TokenUsage {
    pub fn new(input_tokens: u32, output_tokens: u32) -> Self {
        Self::cached(input_tokens, output_tokens, 0, 0)
    }

    /// `input_tokens` excludes the cached ones, as Bedrock reports them; the cache
    /// members appear only when caching was used.
    pub fn cached(input_tokens: u32, output_tokens: u32, read: u32, write: u32) -> Self {
        let used = read > 0 || write > 0;
        Self {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens
                .saturating_add(output_tokens)
                .saturating_add(read)
                .saturating_add(write),
            cache_read_input_tokens: used.then_some(read),
            cache_write_input_tokens: used.then_some(write),
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
    ContentBlockStart {
        content_block_index: u32,
        start: ContentBlockStart,
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
    ToolUse(ToolUseBlockDelta),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentBlockStart {
    ToolUse(ToolUseBlockStart),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseBlockStart {
    pub tool_use_id: String,
    pub name: String,
}

/// A fragment of the tool input's JSON text; the fragments concatenate to the input.
#[derive(Debug, Clone, Serialize)]
pub struct ToolUseBlockDelta {
    pub input: String,
}

impl ConverseStreamEvent {
    /// The `:event-type` header value.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "messageStart",
            Self::ContentBlockStart { .. } => "contentBlockStart",
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

    #[test]
    fn tool_config_tool_blocks_and_output_config_parse() {
        let req: ConverseRequest = from_json(
            br#"{"messages":[
                {"role":"user","content":[{"text":"Weather?"},{"cachePoint":{"type":"default"}}]},
                {"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"w","input":{"city":"Paris"}}}]},
                {"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"json":{"c":20}}],"status":"error"}}]}],
              "system":[{"text":"S"},{"cachePoint":{"type":"default","ttl":"1h"}}],
              "toolConfig":{"tools":[{"toolSpec":{"name":"w","inputSchema":{"json":{"type":"object"}}}},{"cachePoint":{"type":"default"}}],
                            "toolChoice":{"tool":{"name":"w"}}},
              "outputConfig":{"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{}"}}}}}"#,
        )
        .expect("parse");
        let config = req.tool_config.expect("toolConfig");
        assert!(matches!(&config.tools[0], Tool::ToolSpec(s) if s.name == "w"));
        assert!(matches!(config.tool_choice, Some(ToolChoice::Tool(ref t)) if t.name == "w"));
        assert!(
            matches!(&req.messages[1].content[0], ContentBlock::ToolUse(u) if u.input["city"] == "Paris")
        );
        assert!(matches!(&req.messages[2].content[0],
            ContentBlock::ToolResult(r) if r.status == Some(ToolResultStatus::Error)));
        assert!(
            matches!(&req.system[1], SystemContentBlock::CachePoint(c) if c.ttl == Some(CacheTtl::OneHour))
        );
        let format = req
            .output_config
            .and_then(|o| o.text_format)
            .expect("textFormat");
        let OutputFormatStructure::JsonSchema(def) = format.structure;
        assert_eq!(def.schema, "{}");
    }

    #[test]
    fn tool_choice_auto_takes_an_empty_structure_and_bad_members_are_named() {
        let req: ConverseRequest = from_json(
            br#"{"toolConfig":{"tools":[{"cachePoint":{"type":"default"}}],"toolChoice":{"auto":{}}}}"#,
        )
        .expect("parse");
        assert!(matches!(
            req.tool_config.and_then(|c| c.tool_choice),
            Some(ToolChoice::Auto(_))
        ));
        let err = from_json::<ConverseRequest>(
            br#"{"messages":[{"role":"user","content":[{"cachePoint":{"type":"forever"}}]}]}"#,
        )
        .expect_err("type");
        assert!(
            err.message.contains("messages[0].content[0]"),
            "{}",
            err.message
        );
        let err = from_json::<ConverseRequest>(
            br#"{"toolConfig":{"tools":[{"toolSpec":{"name":"w"}}]}}"#,
        )
        .expect_err("schema");
        assert!(
            err.message.contains("toolConfig.tools[0]"),
            "{}",
            err.message
        );
    }

    #[test]
    fn tool_use_stream_events_and_cached_usage_serialise_like_bedrock() {
        let start = ConverseStreamEvent::ContentBlockStart {
            content_block_index: 1,
            start: ContentBlockStart::ToolUse(ToolUseBlockStart {
                tool_use_id: "tooluse_x".into(),
                name: "w".into(),
            }),
        };
        assert_eq!(start.event_type(), "contentBlockStart");
        assert_eq!(
            start.payload(),
            serde_json::json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_x", "name": "w"}}})
        );
        let delta = ConverseStreamEvent::ContentBlockDelta {
            content_block_index: 1,
            delta: ContentBlockDelta::ToolUse(ToolUseBlockDelta {
                input: "{\"a\":".into(),
            }),
        };
        assert_eq!(
            delta.payload().to_string(),
            r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"a\":"}}}"#
        );
        assert_eq!(
            serde_json::to_string(&TokenUsage::cached(3, 4, 10, 0)).expect("json"),
            r#"{"inputTokens":3,"outputTokens":4,"totalTokens":17,"cacheReadInputTokens":10,"cacheWriteInputTokens":0}"#
        );
        assert_eq!(
            serde_json::to_string(&TokenUsage::new(3, 4)).expect("json"),
            r#"{"inputTokens":3,"outputTokens":4,"totalTokens":7}"#
        );
        let block = ContentBlock::ToolUse(ToolUseBlock {
            tool_use_id: "tooluse_x".into(),
            name: "w".into(),
            input: serde_json::json!({"a": 1}),
            kind: None,
        });
        assert_eq!(
            serde_json::to_string(&block).expect("json"),
            r#"{"toolUse":{"toolUseId":"tooluse_x","name":"w","input":{"a":1}}}"#
        );
    }
}
