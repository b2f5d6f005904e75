//! The Converse API: one request shape for every text model, translated into
//! the internal request, and the engine's output shaped into Converse responses
//! and ConverseStream events.

use basalt_engine::{ChatTurn, SamplingParams, StopReason};
use basalt_grammar::Grammar;
use basalt_proto::converse::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConverseOutput, ConverseRequest,
    ConverseResponse, ConverseStreamEvent, Message, Metrics, OutputFormatStructure, Role,
    SystemContentBlock, TokenUsage, Tool, ToolChoice, ToolConfiguration, ToolInputSchema,
    ToolResultBlock, ToolResultContentBlock, ToolResultStatus, ToolUseBlock, ToolUseBlockDelta,
    ToolUseBlockStart,
};
use basalt_proto::BedrockError;
use serde_json::Value;

use crate::images::{self, ImageFormat};
use crate::tool_calls::{self, BlockEvent, BlockStream, CallPlan, Choice, ToolDef, UserTurn};
use crate::{
    limits, push_turn, strip_cache_points, Completion, OutputMode, Prompt, PromptUsage, Target,
    TextInvocation, TextResponder, CACHE_POINT,
};

/// Messages per Converse request.
pub const MAX_MESSAGES: usize = 1000;
/// Default `maxTokens` when the caller leaves it out.
pub const DEFAULT_MAX_TOKENS: u32 = 512;

const TOOL_CONFIG_REQUIRED: &str =
    "The toolConfig field must be defined when using toolUse and toolResult content blocks.";
const JSON_SCHEMA_AT: &str = "outputConfig.textFormat.structure.jsonSchema.schema";

/// Sampling settings, with the member paths used in error messages.
pub struct Inference<'a> {
    pub max_tokens: (&'a str, Option<i64>),
    pub temperature: (&'a str, Option<f64>),
    pub top_p: (&'a str, Option<f64>),
    pub top_k: (&'a str, Option<i64>),
    pub stop_sequences: (&'a str, Option<Vec<String>>),
}

/// The tools a request offers, as read from `toolConfig`.
#[derive(Debug, Clone)]
pub struct ToolOffer {
    pub tools: Vec<ToolDef>,
    pub choice: Choice,
    /// `toolConfig.tools` holds a cachePoint: the tools section is a cacheable prefix.
    pub cache_point: bool,
}

/// What the output must be, before any schema is compiled into a grammar.
#[derive(Debug, Clone)]
pub enum PendingOutput {
    Text,
    /// Structured output under this JSON Schema.
    Json(Value),
    Tools(CallPlan),
}

/// A request read and checked, with its grammar still to compile.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Its `output` is [`OutputMode::Text`] until [`Prepared::compile`].
    pub invocation: TextInvocation,
    pub output: PendingOutput,
}

impl Prepared {
    pub fn compile(self) -> Result<TextInvocation, BedrockError> {
        let mut invocation = self.invocation;
        invocation.output = match self.output {
            PendingOutput::Text => OutputMode::Text,
            PendingOutput::Json(schema) => {
                OutputMode::Json(Grammar::json(tool_calls::compile_schema(
                    &format!("The JSON schema in {JSON_SCHEMA_AT}"),
                    &schema,
                )?))
            }
            PendingOutput::Tools(plan) => OutputMode::Tools(plan.compile()?),
        };
        Ok(invocation)
    }
}

/// Builds the internal request from Converse members (also used for Nova bodies, which
/// offer no tools).
pub fn invocation(
    system: &[SystemContentBlock],
    messages: &[Message],
    inference: Inference<'_>,
    target: Target<'_>,
) -> Result<TextInvocation, BedrockError> {
    let (turns, _) = chat_turns(system, messages, None, None, target)?;
    text_invocation(Prompt::Chat(turns), inference)
}

fn text_invocation(
    prompt: Prompt,
    inference: Inference<'_>,
) -> Result<TextInvocation, BedrockError> {
    let sampling = SamplingParams {
        temperature: limits::unit_interval(inference.temperature.0, inference.temperature.1)?
            .unwrap_or(0.7),
        top_p: limits::unit_interval(inference.top_p.0, inference.top_p.1)?.unwrap_or(0.9),
        top_k: limits::top_k(inference.top_k.0, inference.top_k.1, 500)?,
        ..SamplingParams::default()
    };
    Ok(TextInvocation {
        prompt,
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
        output: OutputMode::Text,
    })
}

/// Converse and ConverseStream requests.
pub fn parse(req: &ConverseRequest, target: Target<'_>) -> Result<TextInvocation, BedrockError> {
    prepare(req, target)?.compile()
}

/// Everything [`parse`] does except compiling schemas into grammars.
pub fn prepare(req: &ConverseRequest, target: Target<'_>) -> Result<Prepared, BedrockError> {
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
    let offer = req.tool_config.as_ref().map(tool_offer).transpose()?;
    let json_schema = match req
        .output_config
        .as_ref()
        .and_then(|o| o.text_format.as_ref())
    {
        None => None,
        Some(format) => {
            let OutputFormatStructure::JsonSchema(def) = &format.structure;
            let schema: Value = serde_json::from_str(&def.schema).map_err(|e| {
                BedrockError::validation(format!(
                    "{JSON_SCHEMA_AT}: the schema is not valid JSON ({e})."
                ))
            })?;
            tool_calls::check_schema(JSON_SCHEMA_AT, &schema)?;
            Some(schema)
        }
    };
    if offer.is_some() && json_schema.is_some() {
        return Err(BedrockError::validation(
            "toolConfig and outputConfig.textFormat cannot be used together in this Basalt release; use one of them.",
        ));
    }
    let (turns, user_turns) = chat_turns(
        &req.system,
        &req.messages,
        offer.as_ref(),
        json_schema.as_ref(),
        target,
    )?;
    let config = req.inference_config.clone().unwrap_or_default();
    // Models' own sampling members may come through additionalModelRequestFields.
    let extra = req.additional_model_request_fields.as_ref();
    let top_k = extra
        .and_then(|e| e.get("top_k").or_else(|| e.get("topK")))
        .and_then(Value::as_i64);
    let invocation = text_invocation(
        Prompt::Chat(turns),
        Inference {
            max_tokens: ("inferenceConfig.maxTokens", config.max_tokens),
            temperature: ("inferenceConfig.temperature", config.temperature),
            top_p: ("inferenceConfig.topP", config.top_p),
            top_k: ("additionalModelRequestFields.top_k", top_k),
            stop_sequences: ("inferenceConfig.stopSequences", config.stop_sequences),
        },
    )?;
    let output = match (offer, json_schema) {
        (Some(offer), _) => PendingOutput::Tools(tool_calls::call_plan(
            &offer.tools,
            &offer.choice,
            "toolConfig.toolChoice.tool.name",
            &user_turns,
        )?),
        (None, Some(schema)) => PendingOutput::Json(schema),
        (None, None) => PendingOutput::Text,
    };
    Ok(Prepared { invocation, output })
}

/// Reads `toolConfig`: tool specs, the cache point, and the choice.
pub fn tool_offer(config: &ToolConfiguration) -> Result<ToolOffer, BedrockError> {
    let mut tools = Vec::new();
    let mut cache_point = false;
    for (i, tool) in config.tools.iter().enumerate() {
        match tool {
            Tool::ToolSpec(spec) => {
                let ToolInputSchema::Json(schema) = &spec.input_schema;
                let def = ToolDef {
                    name: spec.name.clone(),
                    description: spec.description.clone().unwrap_or_default(),
                    schema: schema.clone(),
                };
                tool_calls::check_tool(&format!("toolConfig.tools.{i}.toolSpec"), &def)?;
                tools.push(def);
            }
            Tool::SystemTool(system) => {
                return Err(BedrockError::validation(format!(
                    "toolConfig.tools.{i}.systemTool: the system tool {} is not available in Basalt; describe it as a toolSpec.",
                    system.name
                )))
            }
            // The tools are rendered as one section, so any cache point ends after it.
            Tool::CachePoint(_) => cache_point = true,
        }
    }
    tool_calls::check_tools("toolConfig.tools", &tools)?;
    let choice = match &config.tool_choice {
        None | Some(ToolChoice::Auto(_)) => Choice::Auto,
        Some(ToolChoice::Any(_)) => Choice::Any,
        Some(ToolChoice::Tool(t)) => Choice::Named(t.name.clone()),
    };
    Ok(ToolOffer {
        tools,
        choice,
        cache_point,
    })
}

/// Adds a block's text to a turn's content, one block per line.
fn append_block(content: &mut String, text: &str) {
    if !content.is_empty() {
        content.push('\n');
    }
    content.push_str(text);
}

/// The system turn: tools first, then the caller's system text, then the output
/// format, as Bedrock caches tools, then system, then messages.
fn system_turn(
    system: &[SystemContentBlock],
    offer: Option<&ToolOffer>,
    json_schema: Option<&Value>,
) -> String {
    let mut sections = Vec::new();
    if let Some(offer) = offer {
        let mut tools = tool_calls::system_section(&offer.tools);
        if offer.cache_point {
            tools.push_str(CACHE_POINT);
        }
        sections.push(tools);
    }
    let mut caller = String::new();
    for block in system {
        match block {
            SystemContentBlock::Text(t) => append_block(&mut caller, &strip_cache_points(t)),
            SystemContentBlock::GuardContent(g) => {
                if let Some(t) = guard_text(g) {
                    append_block(&mut caller, &strip_cache_points(&t));
                }
            }
            SystemContentBlock::CachePoint(_) => caller.push_str(CACHE_POINT),
        }
    }
    if !caller.is_empty() {
        sections.push(caller);
    }
    if let Some(schema) = json_schema {
        sections.push(strip_cache_points(&format!(
            "Answer with only a JSON value that matches this JSON Schema:\n{schema}"
        )));
    }
    sections.join("\n\n")
}

/// The chat turns, and each user message as the tool decision question reads it.
fn chat_turns(
    system: &[SystemContentBlock],
    messages: &[Message],
    offer: Option<&ToolOffer>,
    json_schema: Option<&Value>,
    target: Target<'_>,
) -> Result<(Vec<ChatTurn>, Vec<UserTurn>), BedrockError> {
    if messages.len() > MAX_MESSAGES {
        return Err(BedrockError::validation(format!(
            "messages: at most {MAX_MESSAGES} messages are allowed."
        )));
    }
    let mut turns = Vec::new();
    let mut user_turns = Vec::new();
    let system_text = system_turn(system, offer, json_schema);
    if !system_text.is_empty() {
        turns.push(ChatTurn::new("system", system_text));
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
        let mut content = String::new();
        let mut user_turn = UserTurn::default();
        let mut has_image = false;
        for (j, block) in m.content.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match block {
                ContentBlock::Text(t) => {
                    let t = strip_cache_points(t);
                    append_block(&mut content, &t);
                    append_block(&mut user_turn.text, &t);
                }
                ContentBlock::GuardContent(g) => {
                    if let Some(t) = guard_text(g) {
                        let t = strip_cache_points(&t);
                        append_block(&mut content, &t);
                        append_block(&mut user_turn.text, &t);
                    }
                }
                // The cacheable prefix ends after the block before this one.
                ContentBlock::CachePoint(_) => content.push_str(CACHE_POINT),
                ContentBlock::Image(image) => {
                    check_image(&format!("{at}.image"), image)?;
                    has_image = true;
                }
                ContentBlock::ToolUse(ToolUseBlock { name, input, .. }) => {
                    if offer.is_none() {
                        return Err(BedrockError::validation(TOOL_CONFIG_REQUIRED));
                    }
                    if m.role != Role::Assistant {
                        return Err(BedrockError::validation(format!(
                            "{at}.toolUse: toolUse blocks belong in assistant messages."
                        )));
                    }
                    append_block(&mut content, &tool_calls::render_call(name, input));
                }
                ContentBlock::ToolResult(result) => {
                    if offer.is_none() {
                        return Err(BedrockError::validation(TOOL_CONFIG_REQUIRED));
                    }
                    if m.role != Role::User {
                        return Err(BedrockError::validation(format!(
                            "{at}.toolResult: toolResult blocks belong in user messages."
                        )));
                    }
                    let text = tool_result_text(&format!("{at}.toolResult"), result)?;
                    let failed = result.status == Some(ToolResultStatus::Error);
                    append_block(&mut content, &tool_calls::render_result(&text, failed));
                    user_turn.tool_results.push(text);
                }
                other => {
                    return Err(BedrockError::validation(format!(
                        "{at}: This model doesn't support the {} content block that you provided. Try again with a text or image block.",
                        other.kind()
                    )))
                }
            }
        }
        if has_image && !target.vision {
            return Err(images::no_vision(target.model_id));
        }
        if m.role == Role::User {
            user_turns.push(user_turn);
        }
        push_turn(&mut turns, role, &content);
    }
    Ok((turns, user_turns))
}

fn check_image(at: &str, image: &basalt_proto::converse::ImageBlock) -> Result<(), BedrockError> {
    let format = ImageFormat::from_converse(&image.format).ok_or_else(|| {
        BedrockError::validation(format!(
            "{at}.format: '{}' is not one of png, jpeg, gif, webp.",
            image.format
        ))
    })?;
    match &image.source {
        basalt_proto::converse::ImageSource::Bytes(data) => {
            images::validate_base64(at, format, data)?;
            Ok(())
        }
        basalt_proto::converse::ImageSource::S3Location(_) => Err(BedrockError::validation(
            format!("{at}.source.s3Location: images from S3 are not supported; send the bytes."),
        )),
    }
}

/// A tool result's text and JSON parts, one per line (JSON compact).
fn tool_result_text(at: &str, result: &ToolResultBlock) -> Result<String, BedrockError> {
    let mut text = String::new();
    for (k, part) in result.content.iter().enumerate() {
        match part {
            ToolResultContentBlock::Text(t) => append_block(&mut text, &strip_cache_points(t)),
            ToolResultContentBlock::Json(v) => append_block(
                &mut text,
                &strip_cache_points(&serde_json::to_string(v).unwrap_or_default()),
            ),
            other => {
                return Err(BedrockError::validation(format!(
                    "{at}.content.{k}: {} tool results are not supported by this model; send text or json.",
                    other.kind()
                )))
            }
        }
    }
    Ok(text)
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

/// Usage as Bedrock reports it: `inputTokens` excludes the cached prompt tokens, which
/// `Completion::input_tokens` includes.
pub fn usage(done: &Completion) -> TokenUsage {
    let cached = done
        .cache_read_tokens
        .saturating_add(done.cache_write_tokens);
    TokenUsage::cached(
        done.input_tokens.saturating_sub(cached),
        done.output_tokens,
        done.cache_read_tokens,
        done.cache_write_tokens,
    )
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

/// A text-only response (no tools offered).
pub fn response(done: &Completion, paths: Option<&[String]>) -> ConverseResponse {
    ConverseResponse {
        output: ConverseOutput {
            message: Message {
                role: Role::Assistant,
                content: vec![ContentBlock::Text(done.text.clone())],
            },
        },
        stop_reason: stop_reason(&done.stop_reason),
        usage: usage(done),
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

/// contentBlockStop, messageStop, metadata (text-only streams).
pub fn stream_end(done: &Completion, paths: Option<&[String]>) -> Vec<ConverseStreamEvent> {
    let mut events = vec![ConverseStreamEvent::ContentBlockStop {
        content_block_index: 0,
    }];
    events.extend(stream_close(stop_reason(&done.stop_reason), done, paths));
    events
}

/// messageStop and metadata.
fn stream_close(
    reason: basalt_proto::converse::StopReason,
    done: &Completion,
    paths: Option<&[String]>,
) -> [ConverseStreamEvent; 2] {
    [
        ConverseStreamEvent::MessageStop {
            stop_reason: reason,
            additional_model_response_fields: additional_fields(paths, done),
        },
        ConverseStreamEvent::Metadata {
            usage: usage(done),
            metrics: Metrics {
                latency_ms: done.latency_ms,
            },
        },
    ]
}

/// Shapes Converse responses and ConverseStream events from the model's raw output.
/// When tools were offered it splits a `<tool_call>` out of the text into a toolUse
/// block; otherwise the text passes through unchanged.
pub struct ConverseResponder {
    paths: Option<Vec<String>>,
    /// Present when tools were offered.
    blocks: Option<BlockStream>,
    tool_use_id: String,
}

/// `tooluse_` and 22 letters and digits, like Bedrock's Converse IDs.
pub fn tool_use_id() -> String {
    format!("tooluse_{}", tool_calls::random_alphanumeric(22))
}

impl ConverseResponder {
    /// `paths`: the request's `additionalModelResponseFieldPaths`.
    pub fn new(invocation: &TextInvocation, paths: Option<Vec<String>>) -> Self {
        Self::offering_tools(matches!(invocation.output, OutputMode::Tools(_)), paths)
    }

    /// As [`ConverseResponder::new`], saying directly whether tools were offered.
    pub fn offering_tools(tools: bool, paths: Option<Vec<String>>) -> Self {
        Self {
            paths,
            blocks: tools.then(BlockStream::new),
            tool_use_id: tool_use_id(),
        }
    }

    pub fn converse_response(&self, done: &Completion) -> ConverseResponse {
        let paths = self.paths.as_deref();
        if self.blocks.is_none() {
            return response(done, paths);
        }
        let split = tool_calls::split(&done.text);
        let mut r = response(done, paths);
        let Some(call) = split.call else {
            r.output.message.content = vec![ContentBlock::Text(split.text)];
            return r;
        };
        let mut content = Vec::new();
        if !split.text.trim().is_empty() {
            content.push(ContentBlock::Text(split.text));
        }
        content.push(ContentBlock::ToolUse(ToolUseBlock {
            tool_use_id: self.tool_use_id.clone(),
            name: call.name,
            input: call.input,
            kind: None,
        }));
        r.output.message.content = content;
        r.stop_reason = basalt_proto::converse::StopReason::ToolUse;
        r
    }

    pub fn start_events(&mut self) -> Vec<ConverseStreamEvent> {
        vec![stream_start()]
    }

    pub fn delta_events(&mut self, text: &str) -> Vec<ConverseStreamEvent> {
        match &mut self.blocks {
            None => vec![stream_delta(text)],
            Some(blocks) => {
                let events = blocks.push(text);
                self.converse_events(events)
            }
        }
    }

    pub fn end_events(&mut self, done: &Completion) -> Vec<ConverseStreamEvent> {
        let paths = self.paths.clone();
        let Some(blocks) = &mut self.blocks else {
            return stream_end(done, paths.as_deref());
        };
        let closing = blocks.finish();
        let called = blocks.call().is_some();
        let mut events = self.converse_events(closing);
        let reason = if called {
            basalt_proto::converse::StopReason::ToolUse
        } else {
            stop_reason(&done.stop_reason)
        };
        events.extend(stream_close(reason, done, paths.as_deref()));
        events
    }

    fn converse_events(&self, events: Vec<BlockEvent>) -> Vec<ConverseStreamEvent> {
        events
            .into_iter()
            .filter_map(|e| match e {
                // Bedrock sends no contentBlockStart for text.
                BlockEvent::TextStart { .. } => None,
                BlockEvent::Text { index, text } => Some(ConverseStreamEvent::ContentBlockDelta {
                    content_block_index: index,
                    delta: ContentBlockDelta::Text(text),
                }),
                BlockEvent::ToolStart { index, name } => {
                    Some(ConverseStreamEvent::ContentBlockStart {
                        content_block_index: index,
                        start: ContentBlockStart::ToolUse(ToolUseBlockStart {
                            tool_use_id: self.tool_use_id.clone(),
                            name,
                        }),
                    })
                }
                BlockEvent::ToolInput { index, json } => {
                    Some(ConverseStreamEvent::ContentBlockDelta {
                        content_block_index: index,
                        delta: ContentBlockDelta::ToolUse(ToolUseBlockDelta { input: json }),
                    })
                }
                BlockEvent::TextStop { index } | BlockEvent::ToolStop { index } => {
                    Some(ConverseStreamEvent::ContentBlockStop {
                        content_block_index: index,
                    })
                }
            })
            .collect()
    }
}

/// Wraps an event as `{eventType: payload}`, the shape of Nova's stream chunks.
pub fn wrapped(event: &ConverseStreamEvent) -> Value {
    serde_json::json!({ event.event_type(): event.payload() })
}

/// As a [`TextResponder`], the body is the Converse response and each chunk is one
/// event wrapped as `{eventType: payload}`.
impl TextResponder for ConverseResponder {
    fn response(&self, done: &Completion) -> Value {
        serde_json::to_value(self.converse_response(done)).unwrap_or(Value::Null)
    }
    fn stream_start(&mut self, _prompt: &PromptUsage) -> Vec<Value> {
        self.start_events().iter().map(wrapped).collect()
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        self.delta_events(text).iter().map(wrapped).collect()
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        self.end_events(done).iter().map(wrapped).collect()
    }
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

    const WEATHER_TOOLS: &str = r#""toolConfig":{"tools":[{"toolSpec":{"name":"get_weather","description":"Get current weather for a location","inputSchema":{"json":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}}},{"cachePoint":{"type":"default"}}]}"#;

    fn done_with(text: &str, stop: StopReason) -> Completion {
        Completion {
            text: text.into(),
            stop_reason: stop,
            input_tokens: 100,
            output_tokens: 20,
            cache_read_tokens: 60,
            cache_write_tokens: 10,
            latency_ms: 9,
            first_byte_ms: 1,
        }
    }

    const CALL: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}\n</tool_call>";

    #[test]
    fn tools_go_first_in_the_system_turn_with_cache_markers_and_history() {
        let body = format!(
            r#"{{"system":[{{"text":"Be brief."}},{{"cachePoint":{{"type":"default"}}}},{{"text":"x{CACHE_POINT}y"}}],
              "messages":[{{"role":"user","content":[{{"text":"Weather in Paris?"}},{{"cachePoint":{{"type":"default"}}}}]}},
                {{"role":"assistant","content":[{{"text":"Checking."}},{{"toolUse":{{"toolUseId":"t1","name":"get_weather","input":{{"location":"Paris"}}}}}}]}},
                {{"role":"user","content":[{{"toolResult":{{"toolUseId":"t1","content":[{{"json":{{"temp":20}}}},{{"text":"sunny"}}]}}}},{{"toolResult":{{"toolUseId":"t2","content":[{{"text":"down"}}],"status":"error"}}}}]}}],
              {WEATHER_TOOLS}}}"#
        );
        let p = prepare(&req(&body), TARGET).expect("prepare");
        let Prompt::Chat(turns) = p.invocation.prompt else {
            panic!("chat")
        };
        let tools = tool_calls::system_section(
            &tool_offer(
                req(&format!("{{{WEATHER_TOOLS}}}"))
                    .tool_config
                    .as_ref()
                    .expect("config"),
            )
            .expect("offer")
            .tools,
        );
        assert_eq!(
            turns,
            vec![
                ChatTurn::new("system", format!("{tools}{CACHE_POINT}\n\nBe brief.{CACHE_POINT}\nxy")),
                ChatTurn::new("user", format!("Weather in Paris?{CACHE_POINT}")),
                ChatTurn::new(
                    "assistant",
                    format!(
                        "Checking.\n{}",
                        tool_calls::render_call("get_weather", &serde_json::json!({"location": "Paris"}))
                    )
                ),
                ChatTurn::new("user", "<tool_response>\n{\"temp\":20}\nsunny\n</tool_response>\n<tool_response>\nError: down\n</tool_response>"),
            ]
        );
        let PendingOutput::Tools(plan) = p.output else {
            panic!("tools")
        };
        let crate::ToolDecision::Auto {
            question: Prompt::Chat(q),
        } = plan.decision
        else {
            panic!("auto")
        };
        assert!(
            q[1].content
                .contains("The tool has already returned: {\"temp\":20}\nsunny\ndown"),
            "{}",
            q[1].content
        );
        assert!(
            q[1].content.starts_with("Request: Weather in Paris?"),
            "{}",
            q[1].content
        );
    }

    #[test]
    fn tool_errors_name_the_member() {
        let e = parse(&req(r#"{"messages":[{"role":"user","content":[{"text":"x"}]},{"role":"assistant","content":[{"toolUse":{"toolUseId":"t","name":"w","input":{}}}]}]}"#), TARGET).expect_err("no config");
        assert_eq!(e.message, TOOL_CONFIG_REQUIRED);
        let e = prepare(
            &req(&format!(
                r#"{{"messages":[{{"role":"user","content":[{{"text":"x"}}]}}],{}}}"#,
                WEATHER_TOOLS.replace("]}", r#"],"toolChoice":{"tool":{"name":"nope"}}}"#)
            )),
            TARGET,
        )
        .expect_err("unknown tool");
        assert!(
            e.message.contains("toolConfig.toolChoice.tool.name") && e.message.contains("nope"),
            "{}",
            e.message
        );
        let e = prepare(&req(r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"toolConfig":{"tools":[{"systemTool":{"name":"web"}}]}}"#), TARGET).expect_err("system tool");
        assert!(
            e.message.contains("toolConfig.tools.0.systemTool"),
            "{}",
            e.message
        );
        let e = prepare(&req(r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"toolConfig":{"tools":[{"cachePoint":{"type":"default"}}]}}"#), TARGET).expect_err("no tools");
        assert!(e.message.contains("toolConfig.tools"), "{}", e.message);
        let e = prepare(&req(r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"outputConfig":{"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{not json"}}}}}"#), TARGET).expect_err("schema json");
        assert!(
            e.message
                .contains("outputConfig.textFormat.structure.jsonSchema.schema"),
            "{}",
            e.message
        );
        let e = prepare(&req(&format!(r#"{{"messages":[{{"role":"user","content":[{{"text":"x"}}]}}],{WEATHER_TOOLS},"outputConfig":{{"textFormat":{{"type":"json_schema","structure":{{"jsonSchema":{{"schema":"{{}}"}}}}}}}}}}"#)), TARGET).expect_err("both");
        assert!(
            e.message.contains("cannot be used together"),
            "{}",
            e.message
        );
    }

    #[test]
    fn tool_choice_any_and_tool_force_a_call() {
        let body = |choice: &str| {
            format!(
                r#"{{"messages":[{{"role":"user","content":[{{"text":"x"}}]}}],{}}}"#,
                WEATHER_TOOLS.replace("]}", &format!(r#"],"toolChoice":{choice}}}"#))
            )
        };
        for choice in [r#"{"any":{}}"#, r#"{"tool":{"name":"get_weather"}}"#] {
            let p = prepare(&req(&body(choice)), TARGET).expect("prepare");
            let PendingOutput::Tools(plan) = p.output else {
                panic!("tools")
            };
            assert!(
                matches!(plan.decision, crate::ToolDecision::Forced),
                "{choice}"
            );
        }
    }

    #[test]
    fn structured_output_schema_goes_into_the_system_turn() {
        let p = prepare(&req(r#"{"messages":[{"role":"user","content":[{"text":"Name a city"}]}],"outputConfig":{"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}","name":"city"}}}}}"#), TARGET).expect("prepare");
        assert!(
            matches!(&p.output, PendingOutput::Json(s) if s["properties"]["city"]["type"] == "string")
        );
        let Prompt::Chat(turns) = p.invocation.prompt else {
            panic!("chat")
        };
        assert!(
            turns[0]
                .content
                .starts_with("Answer with only a JSON value that matches this JSON Schema:\n{"),
            "{}",
            turns[0].content
        );
    }

    #[test]
    fn text_only_usage_reports_cache_counts_apart_from_input() {
        let r = response(&done_with("hi", StopReason::EndOfTurn), None);
        assert_eq!(
            serde_json::to_value(&r.usage).expect("json"),
            serde_json::json!({"inputTokens": 30, "outputTokens": 20, "totalTokens": 120, "cacheReadInputTokens": 60, "cacheWriteInputTokens": 10})
        );
    }

    #[test]
    fn a_tool_call_becomes_a_tool_use_block_and_stop_reason() {
        let r = ConverseResponder::offering_tools(true, None);
        let v = serde_json::to_value(r.converse_response(&done_with(
            &format!("Sure.\n{CALL}"),
            StopReason::GrammarComplete,
        )))
        .expect("json");
        assert_eq!(v["stopReason"], "tool_use");
        assert_eq!(v["output"]["message"]["content"][0]["text"], "Sure.\n");
        let tool = &v["output"]["message"]["content"][1]["toolUse"];
        assert_eq!(tool["name"], "get_weather");
        assert_eq!(tool["input"], serde_json::json!({"location": "Paris"}));
        let id = tool["toolUseId"].as_str().expect("id");
        assert!(id.starts_with("tooluse_") && id.len() == 30, "{id}");
        let v = serde_json::to_value(
            r.converse_response(&done_with("It is sunny.", StopReason::EndOfTurn)),
        )
        .expect("json");
        assert_eq!(v["stopReason"], "end_turn");
        assert_eq!(
            v["output"]["message"]["content"],
            serde_json::json!([{"text": "It is sunny."}])
        );
    }

    #[test]
    fn a_streamed_tool_call_has_start_input_deltas_and_stop() {
        let mut r = ConverseResponder::offering_tools(true, None);
        let mut events = r.start_events();
        let raw = format!("Sure.{CALL}");
        for chunk in raw.as_bytes().chunks(3) {
            events.extend(r.delta_events(std::str::from_utf8(chunk).expect("ascii")));
        }
        events.extend(r.end_events(&done_with(&raw, StopReason::GrammarComplete)));
        let names: Vec<_> = events.iter().map(|e| e.event_type()).collect();
        assert_eq!(names.first(), Some(&"messageStart"));
        assert_eq!(
            &names[names.len() - 4..],
            [
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        let payloads: Vec<Value> = events.iter().map(|e| e.payload()).collect();
        let start = payloads
            .iter()
            .position(|p| p.get("start").is_some())
            .expect("start");
        assert_eq!(payloads[start]["contentBlockIndex"], 1);
        assert_eq!(payloads[start]["start"]["toolUse"]["name"], "get_weather");
        assert!(
            payloads[..start]
                .iter()
                .any(|p| p == &serde_json::json!({"contentBlockIndex": 0})),
            "text block stopped first"
        );
        let input: String = payloads
            .iter()
            .filter_map(|p| p["delta"]["toolUse"]["input"].as_str())
            .collect();
        assert_eq!(input, r#"{"location":"Paris"}"#);
        let text: String = payloads
            .iter()
            .filter_map(|p| p["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "Sure.");
        assert_eq!(payloads[payloads.len() - 2]["stopReason"], "tool_use");
        assert_eq!(
            payloads[payloads.len() - 1]["usage"]["cacheReadInputTokens"],
            60
        );
    }

    #[test]
    fn parse_compiles_tool_and_json_grammars() {
        let inv = parse(&req(&format!(r#"{{"messages":[{{"role":"user","content":[{{"text":"Weather?"}}]}}],{WEATHER_TOOLS}}}"#)), TARGET).expect("tools");
        assert!(matches!(&inv.output, OutputMode::Tools(plan) if plan.open == tool_calls::OPEN));
        let inv = parse(&req(r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"outputConfig":{"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}"}}}}}"#), TARGET).expect("json");
        assert!(matches!(inv.output, OutputMode::Json(_)));
        let e = parse(&req(r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"outputConfig":{"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{\"oneOf\":[]}"}}}}}"#), TARGET).expect_err("oneOf");
        assert!(
            e.message
                .contains("unsupported JSON Schema construct `oneOf`"),
            "{}",
            e.message
        );
    }
}
