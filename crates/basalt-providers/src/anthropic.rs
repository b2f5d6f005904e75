//! Anthropic Claude on Bedrock: the Messages API (`anthropic_version`
//! bedrock-2023-05-31) and the legacy Text Completions API (`prompt` with
//! Human/Assistant turns).

use basalt_engine::{ChatTurn, SamplingParams, StopReason};
use basalt_proto::{from_json, BedrockError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::images::{self, ImageFormat};
use crate::tool_calls::{self, BlockEvent, BlockStream, CallPlan, Choice, ToolDef, UserTurn};
use crate::{
    limits, push_turn, strip_cache_points, Completion, OutputMode, ParsedText, Prompt, PromptUsage,
    Target, TextInvocation, TextResponder, CACHE_POINT,
};

pub const BEDROCK_VERSION: &str = "bedrock-2023-05-31";
/// Messages per request.
pub const MAX_MESSAGES: usize = 1000;

#[derive(Debug, Deserialize)]
struct MessagesBody {
    anthropic_version: Option<String>,
    max_tokens: Option<i64>,
    messages: Option<Vec<MessageBody>>,
    system: Option<Value>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    stop_sequences: Option<Vec<String>>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    // Legacy text completions.
    prompt: Option<String>,
    max_tokens_to_sample: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct MessageBody {
    role: String,
    content: Value,
}

/// Parses either Claude API, chosen by the body's members.
pub fn parse(body: &[u8], target: Target<'_>) -> Result<ParsedText, BedrockError> {
    let b: MessagesBody = from_json(body)?;
    if b.messages.is_none() && b.prompt.is_some() {
        return parse_text_completion(b);
    }
    let (mut invocation, plan) = prepare_messages(b, target)?;
    let responder = MessagesResponder::new(target.model_id, plan.is_some());
    if let Some(plan) = plan {
        invocation.output = OutputMode::Tools(plan.compile()?);
    }
    Ok((invocation, Box::new(responder)))
}

/// The tools a Messages request offers.
struct ToolOffer {
    tools: Vec<ToolDef>,
    /// A tool carries `cache_control`: the tools section is a cacheable prefix.
    cache_point: bool,
}

/// A Messages request read and checked; the call plan's schemas are still to compile.
fn prepare_messages(
    b: MessagesBody,
    target: Target<'_>,
) -> Result<(TextInvocation, Option<CallPlan>), BedrockError> {
    match b.anthropic_version.as_deref() {
        None => return Err(BedrockError::missing("anthropic_version")),
        Some(BEDROCK_VERSION) => {}
        Some(other) => {
            return Err(BedrockError::validation(format!(
                "anthropic_version: invalid value '{other}'; it must be \"{BEDROCK_VERSION}\"."
            )))
        }
    }
    let max_tokens = limits::required_max_tokens("max_tokens", b.max_tokens)?;
    let offer = b.tools.as_ref().map(tool_offer).transpose()?;
    let choice = b.tool_choice.as_ref().map(tool_choice).transpose()?;
    if choice.is_some() && offer.is_none() {
        return Err(BedrockError::validation(
            "tool_choice: tool_choice may only be specified while providing tools.",
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
    if messages.len() > MAX_MESSAGES {
        return Err(BedrockError::validation(format!(
            "messages: at most {MAX_MESSAGES} messages are allowed."
        )));
    }
    // tool_choice none: the tools are not offered (not described, no calls), though
    // earlier tool_use and tool_result blocks still read as history.
    let offered = offer.as_ref().filter(|_| !matches!(choice, Some(None)));
    let mut turns = Vec::new();
    let mut system = Vec::new();
    if let Some(offer) = offered {
        let mut section = tool_calls::system_section(&offer.tools);
        if offer.cache_point {
            section.push_str(CACHE_POINT);
        }
        system.push(section);
    }
    if let Some(s) = &b.system {
        let text = system_text(s)?;
        if !text.is_empty() {
            system.push(text);
        }
    }
    if !system.is_empty() {
        turns.push(ChatTurn::new("system", system.join("\n\n")));
    }
    let mut images_seen = 0;
    let mut user_turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "user" | "assistant" => m.role.as_str(),
            other => {
                return Err(BedrockError::validation(format!(
                    "messages.{i}.role: unexpected role \"{other}\"; allowed roles are \"user\" and \"assistant\"."
                )))
            }
        };
        if i == 0 && role != "user" {
            return Err(BedrockError::validation(
                "messages.0.role: the first message must use the \"user\" role.",
            ));
        }
        let (text, user_turn) = content_text(
            &format!("messages.{i}.content"),
            role,
            &m.content,
            Context {
                target,
                tools_defined: offer.is_some(),
            },
            &mut images_seen,
        )?;
        if role == "user" {
            user_turns.push(user_turn);
        }
        push_turn(&mut turns, role, &text);
    }
    let plan = match (offered, choice.flatten()) {
        (Some(offer), choice) => Some(tool_calls::call_plan(
            &offer.tools,
            &choice.unwrap_or(Choice::Auto),
            "tool_choice.name",
            &user_turns,
        )?),
        (None, _) => None,
    };
    let sampling = claude_sampling(b.temperature, b.top_p, b.top_k)?;
    let invocation = TextInvocation {
        prompt: Prompt::Chat(turns),
        max_tokens,
        stop_sequences: limits::stop_sequences("stop_sequences", b.stop_sequences)?,
        sampling,
        output: OutputMode::Text,
    };
    Ok((invocation, plan))
}

/// Reads `tools`: custom tools only.
fn tool_offer(tools: &Value) -> Result<ToolOffer, BedrockError> {
    let Value::Array(list) = tools else {
        return Err(BedrockError::validation("tools: expected a list of tools."));
    };
    let mut defs = Vec::new();
    let mut cache_point = false;
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tools.{i}");
        if let Some(kind) = tool.get("type").and_then(Value::as_str) {
            if kind != "custom" {
                return Err(BedrockError::validation(format!(
                    "{at}.type: the tool type \"{kind}\" is not supported by Basalt; only custom tools ({{name, description, input_schema}}) are."
                )));
            }
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| BedrockError::missing(&format!("{at}.name")))?;
        let schema = tool
            .get("input_schema")
            .ok_or_else(|| BedrockError::missing(&format!("{at}.input_schema")))?;
        let def = ToolDef {
            name: name.to_string(),
            description: tool
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            schema: schema.clone(),
        };
        tool_calls::check_tool(&at, &def)?;
        cache_point |= tool.get("cache_control").is_some_and(|c| !c.is_null());
        defs.push(def);
    }
    tool_calls::check_tools("tools", &defs)?;
    Ok(ToolOffer {
        tools: defs,
        cache_point,
    })
}

/// Reads `tool_choice`; `None` inside is `{"type": "none"}`.
fn tool_choice(choice: &Value) -> Result<Option<Choice>, BedrockError> {
    match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(Some(Choice::Auto)),
        Some("any") => Ok(Some(Choice::Any)),
        Some("none") => Ok(None),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => Ok(Some(Choice::Named(name.to_string()))),
            None => Err(BedrockError::missing("tool_choice.name")),
        },
        Some(other) => Err(BedrockError::validation(format!(
            "tool_choice.type: unexpected value \"{other}\"; expected auto, any, tool or none."
        ))),
        None => Err(BedrockError::missing("tool_choice.type")),
    }
}

/// Both Claude APIs share the sampling members and Anthropic's defaults.
fn claude_sampling(
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
) -> Result<SamplingParams, BedrockError> {
    Ok(SamplingParams {
        temperature: limits::unit_interval("temperature", temperature)?.unwrap_or(1.0),
        top_p: limits::unit_interval("top_p", top_p)?.unwrap_or(1.0),
        top_k: limits::top_k("top_k", top_k, 500)?,
        ..SamplingParams::default()
    })
}

fn system_text(system: &Value) -> Result<String, BedrockError> {
    match system {
        Value::String(s) => Ok(strip_cache_points(s)),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                match (
                    block.get("type").and_then(Value::as_str),
                    block.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => {
                        let mut text = strip_cache_points(text);
                        if has_cache_control(block) {
                            text.push_str(CACHE_POINT);
                        }
                        out.push(text);
                    }
                    _ => {
                        return Err(BedrockError::validation(format!(
                        "system.{i}: expected a text block {{\"type\": \"text\", \"text\": ...}}."
                    )))
                    }
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(BedrockError::validation(
            "system: expected a string or a list of text blocks.",
        )),
    }
}

fn has_cache_control(block: &Value) -> bool {
    block.get("cache_control").is_some_and(|c| !c.is_null())
}

/// What a message's blocks may use.
#[derive(Clone, Copy)]
struct Context<'a> {
    target: Target<'a>,
    /// The request defines `tools`, so tool_use and tool_result blocks may appear.
    tools_defined: bool,
}

/// A message's turn text, and the message as the tool decision question reads it.
fn content_text(
    path: &str,
    role: &str,
    content: &Value,
    context: Context<'_>,
    images_seen: &mut usize,
) -> Result<(String, UserTurn), BedrockError> {
    let blocks = match content {
        Value::String(s) => {
            let text = strip_cache_points(s);
            let turn = UserTurn {
                text: text.clone(),
                tool_results: Vec::new(),
            };
            return Ok((text, turn));
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(BedrockError::validation(format!(
                "{path}: expected a string or a list of content blocks."
            )))
        }
    };
    let mut out = String::new();
    let mut turn = UserTurn::default();
    let mut has_image = false;
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{path}.{j}");
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        if matches!(kind, "tool_use" | "tool_result") && !context.tools_defined {
            return Err(BedrockError::validation(format!(
                "{at}: requests which include `tool_use` or `tool_result` blocks must define tools."
            )));
        }
        match kind {
            "text" => match block.get("text").and_then(Value::as_str) {
                Some(t) => {
                    let t = strip_cache_points(t);
                    push_block(&mut out, &t);
                    push_block(&mut turn.text, &t);
                }
                None => return Err(BedrockError::missing(&format!("{at}.text"))),
            },
            "image" => {
                *images_seen += 1;
                if *images_seen > images::MAX_IMAGES {
                    return Err(BedrockError::validation(format!(
                        "{at}: too many images; at most {} are allowed.",
                        images::MAX_IMAGES
                    )));
                }
                validate_image(&at, block)?;
                has_image = true;
            }
            "tool_use" => {
                if role != "assistant" {
                    return Err(BedrockError::validation(format!(
                        "{at}: tool_use blocks belong in assistant messages."
                    )));
                }
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| BedrockError::missing(&format!("{at}.name")))?;
                let input = block
                    .get("input")
                    .ok_or_else(|| BedrockError::missing(&format!("{at}.input")))?;
                push_block(&mut out, &tool_calls::render_call(name, input));
            }
            "tool_result" => {
                if role != "user" {
                    return Err(BedrockError::validation(format!(
                        "{at}: tool_result blocks belong in user messages."
                    )));
                }
                if block.get("tool_use_id").and_then(Value::as_str).is_none() {
                    return Err(BedrockError::missing(&format!("{at}.tool_use_id")));
                }
                let text = tool_result_text(&at, block.get("content"))?;
                let failed = block.get("is_error").and_then(Value::as_bool) == Some(true);
                push_block(&mut out, &tool_calls::render_result(&text, failed));
                turn.tool_results.push(text);
            }
            "document" | "thinking" | "redacted_thinking" => {
                return Err(BedrockError::validation(format!(
                    "{at}: {kind} blocks are not supported by this model."
                )))
            }
            "" => return Err(BedrockError::missing(&format!("{at}.type"))),
            other => {
                return Err(BedrockError::validation(format!(
                    "{at}.type: unexpected value \"{other}\"; expected text, image, tool_use or tool_result."
                )))
            }
        }
        // The cacheable prefix ends after this block.
        if has_cache_control(block) {
            out.push_str(CACHE_POINT);
        }
    }
    if has_image && !context.target.vision {
        return Err(images::no_vision(context.target.model_id));
    }
    Ok((out, turn))
}

/// Adds a block's text to a turn's content, one block per line.
fn push_block(content: &mut String, text: &str) {
    if !content.is_empty() {
        content.push('\n');
    }
    content.push_str(text);
}

/// A tool_result's content: a string, or text blocks one per line.
fn tool_result_text(at: &str, content: Option<&Value>) -> Result<String, BedrockError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(strip_cache_points(s)),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for (k, block) in blocks.iter().enumerate() {
                match (
                    block.get("type").and_then(Value::as_str),
                    block.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => push_block(&mut text, &strip_cache_points(t)),
                    (kind, _) => {
                        return Err(BedrockError::validation(format!(
                            "{at}.content.{k}: {} blocks in a tool_result are not supported by this model; send text.",
                            kind.unwrap_or("untyped")
                        )))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(BedrockError::validation(format!(
            "{at}.content: expected a string or a list of text blocks."
        ))),
    }
}

fn validate_image(at: &str, block: &Value) -> Result<(), BedrockError> {
    let source = block
        .get("source")
        .ok_or_else(|| BedrockError::missing(&format!("{at}.source")))?;
    if source.get("type").and_then(Value::as_str) != Some("base64") {
        return Err(BedrockError::validation(format!(
            "{at}.source.type: only \"base64\" image sources are supported."
        )));
    }
    let media = source
        .get("media_type")
        .and_then(Value::as_str)
        .ok_or_else(|| BedrockError::missing(&format!("{at}.source.media_type")))?;
    let format = ImageFormat::from_media_type(media).ok_or_else(|| {
        BedrockError::validation(format!(
            "{at}.source.media_type: '{media}' is not one of image/jpeg, image/png, image/gif, image/webp."
        ))
    })?;
    let data = source
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| BedrockError::missing(&format!("{at}.source.data")))?;
    images::validate_base64(&format!("{at}.source"), format, data)?;
    Ok(())
}

/// `claude-3-haiku-20240307` from `anthropic.claude-3-haiku-20240307-v1:0`, as Bedrock reports it.
fn anthropic_model_name(model_id: &str) -> String {
    let base = model_id.strip_prefix("anthropic.").unwrap_or(model_id);
    // Dated IDs drop their `-vN:M` suffix; undated ones (claude-v2:1) keep it.
    match base.rfind("-v") {
        Some(at)
            if base[..at].len() >= 8 && base[at - 8..at].bytes().all(|b| b.is_ascii_digit()) =>
        {
            base[..at].to_string()
        }
        _ => base.to_string(),
    }
}

fn message_id() -> String {
    format!("msg_bdrk_{}", uuid::Uuid::new_v4().simple())
}

fn stop_fields(reason: &StopReason) -> (&'static str, Value) {
    match reason {
        StopReason::EndOfTurn | StopReason::GrammarComplete => ("end_turn", Value::Null),
        StopReason::MaxTokens => ("max_tokens", Value::Null),
        StopReason::StopSequence(s) => ("stop_sequence", Value::String(s.clone())),
        StopReason::ContextWindow => ("model_context_window_exceeded", Value::Null),
    }
}

/// `toolu_bdrk_` and 24 letters and digits, like Bedrock's Claude tool-use IDs.
pub fn tool_use_id() -> String {
    format!("toolu_bdrk_{}", tool_calls::random_alphanumeric(24))
}

/// Usage with Anthropic's cache members, always present; `input_tokens` excludes the
/// cached prompt tokens, which `Completion::input_tokens` includes.
fn usage(done: &Completion) -> Value {
    let cached = done
        .cache_read_tokens
        .saturating_add(done.cache_write_tokens);
    json!({
        "input_tokens": done.input_tokens.saturating_sub(cached),
        "output_tokens": done.output_tokens,
        "cache_creation_input_tokens": done.cache_write_tokens,
        "cache_read_input_tokens": done.cache_read_tokens,
    })
}

struct MessagesResponder {
    id: String,
    model: String,
    /// Present when tools were offered: the raw output is split into text and a call.
    blocks: Option<BlockStream>,
    tool_use_id: String,
}

impl MessagesResponder {
    fn new(model_id: &str, tools_offered: bool) -> Self {
        Self {
            id: message_id(),
            model: anthropic_model_name(model_id),
            blocks: tools_offered.then(BlockStream::new),
            tool_use_id: tool_use_id(),
        }
    }

    fn anthropic_events(&self, events: Vec<BlockEvent>) -> Vec<Value> {
        events
            .into_iter()
            .map(|e| match e {
                BlockEvent::TextStart { index } => json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                BlockEvent::Text { index, text } => json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
                BlockEvent::ToolStart { index, name } => json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": self.tool_use_id, "name": name, "input": {}}}),
                BlockEvent::ToolInput { index, json } => json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": json}}),
                BlockEvent::TextStop { index } | BlockEvent::ToolStop { index } => json!({"type": "content_block_stop", "index": index}),
            })
            .collect()
    }
}

impl TextResponder for MessagesResponder {
    fn response(&self, done: &Completion) -> Value {
        let (mut stop_reason, stop_sequence) = stop_fields(&done.stop_reason);
        let content = match &self.blocks {
            None => json!([{"type": "text", "text": done.text}]),
            Some(_) => {
                let split = tool_calls::split(&done.text);
                match split.call {
                    None => json!([{"type": "text", "text": split.text}]),
                    Some(call) => {
                        stop_reason = "tool_use";
                        let mut content = Vec::new();
                        if !split.text.trim().is_empty() {
                            content.push(json!({"type": "text", "text": split.text}));
                        }
                        content.push(json!({"type": "tool_use", "id": self.tool_use_id, "name": call.name, "input": call.input}));
                        Value::Array(content)
                    }
                }
            }
        };
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": if stop_reason == "tool_use" { Value::Null } else { stop_sequence },
            "usage": usage(done),
        })
    }

    fn stream_start(&mut self, prompt: &PromptUsage) -> Vec<Value> {
        let cached = prompt
            .cache_read_tokens
            .saturating_add(prompt.cache_write_tokens);
        let mut events = vec![json!({"type": "message_start", "message": {
        "id": self.id, "type": "message", "role": "assistant", "model": self.model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {
            "input_tokens": prompt.input_tokens.saturating_sub(cached),
            "output_tokens": 1,
            "cache_creation_input_tokens": prompt.cache_write_tokens,
            "cache_read_input_tokens": prompt.cache_read_tokens,
        }}})];
        // With tools the first block may be the call, so blocks open as output arrives.
        if self.blocks.is_none() {
            events.push(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
        }
        events
    }

    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        match &mut self.blocks {
            None => vec![
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            ],
            Some(blocks) => {
                let events = blocks.push(text);
                self.anthropic_events(events)
            }
        }
    }

    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        let (mut stop_reason, mut stop_sequence) = stop_fields(&done.stop_reason);
        let mut events = match &mut self.blocks {
            None => vec![json!({"type": "content_block_stop", "index": 0})],
            Some(blocks) => {
                let closing = blocks.finish();
                if blocks.call().is_some() {
                    stop_reason = "tool_use";
                    stop_sequence = Value::Null;
                }
                self.anthropic_events(closing)
            }
        };
        let mut delta_usage = usage(done);
        if let Value::Object(u) = &mut delta_usage {
            // message_start already reported the prompt; Anthropic repeats only the cache counts.
            u.remove("input_tokens");
        }
        events.push(json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                   "usage": delta_usage}));
        events.push(json!({"type": "message_stop"}));
        events
    }
}

// ---- legacy text completions ----

const HUMAN: &str = "\n\nHuman:";
const ASSISTANT: &str = "\n\nAssistant:";

fn parse_text_completion(b: MessagesBody) -> Result<ParsedText, BedrockError> {
    let prompt = b.prompt.unwrap_or_default();
    let max_tokens = limits::required_max_tokens("max_tokens_to_sample", b.max_tokens_to_sample)?;
    if !prompt
        .trim_end()
        .ends_with(ASSISTANT.trim_start_matches('\n'))
        || !prompt.contains(HUMAN)
    {
        return Err(BedrockError::validation(
            "prompt must start with \"\\n\\nHuman:\" turn after an optional system prompt, and end with \"\\n\\nAssistant:\".",
        ));
    }
    let turns = human_assistant_turns(&prompt);
    let mut stops = limits::stop_sequences("stop_sequences", b.stop_sequences)?;
    // Claude always stops before writing the next Human turn.
    if !stops.iter().any(|s| s == HUMAN) {
        stops.push(HUMAN.to_string());
    }
    let sampling = claude_sampling(b.temperature, b.top_p, b.top_k)?;
    Ok((
        TextInvocation {
            prompt: Prompt::Chat(turns),
            max_tokens,
            stop_sequences: stops,
            sampling,
            output: crate::OutputMode::Text,
        },
        Box::new(CompletionResponder),
    ))
}

/// Splits `\n\nHuman: ...\n\nAssistant: ...` into chat turns; text before the first
/// Human turn is the system prompt. The final empty Assistant turn opens the reply.
fn human_assistant_turns(prompt: &str) -> Vec<ChatTurn> {
    let mut turns = Vec::new();
    let mut rest = prompt;
    let mut role = "system";
    loop {
        let next_h = rest.find(HUMAN).map(|i| (i, HUMAN, "user"));
        let next_a = rest.find(ASSISTANT).map(|i| (i, ASSISTANT, "assistant"));
        let next = match (next_h, next_a) {
            (Some(h), Some(a)) => Some(if h.0 < a.0 { h } else { a }),
            (h, a) => h.or(a),
        };
        let (end, marker, next_role) = match next {
            Some(n) => n,
            None => (rest.len(), "", role),
        };
        let text = rest[..end].trim();
        if !text.is_empty() {
            push_turn(&mut turns, role, text);
        }
        if marker.is_empty() {
            break;
        }
        rest = &rest[end + marker.len()..];
        role = next_role;
    }
    // A trailing assistant turn with text is a prefill; an empty one is just the opening.
    turns
}

struct CompletionResponder;

fn completion_stop(reason: &StopReason) -> (&'static str, Value) {
    match reason {
        StopReason::StopSequence(s) => ("stop_sequence", Value::String(s.clone())),
        StopReason::EndOfTurn | StopReason::GrammarComplete => {
            ("stop_sequence", Value::String(HUMAN.to_string()))
        }
        StopReason::MaxTokens | StopReason::ContextWindow => ("max_tokens", Value::Null),
    }
}

impl TextResponder for CompletionResponder {
    fn response(&self, done: &Completion) -> Value {
        let (reason, stop) = completion_stop(&done.stop_reason);
        json!({"type": "completion", "completion": done.text, "stop_reason": reason, "stop": stop})
    }
    fn stream_start(&mut self, _prompt: &PromptUsage) -> Vec<Value> {
        Vec::new()
    }
    fn stream_delta(&mut self, text: &str) -> Vec<Value> {
        vec![json!({"type": "completion", "completion": text, "stop_reason": null, "stop": null})]
    }
    fn stream_end(&mut self, done: &Completion) -> Vec<Value> {
        let (reason, stop) = completion_stop(&done.stop_reason);
        vec![json!({"type": "completion", "completion": "", "stop_reason": reason, "stop": stop})]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Target<'static> = Target {
        model_id: "anthropic.claude-3-sonnet-20240229-v1:0",
        vision: false,
    };

    fn done(text: &str, stop: StopReason) -> Completion {
        Completion {
            text: text.into(),
            stop_reason: stop,
            input_tokens: 7,
            output_tokens: 3,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            latency_ms: 10,
            first_byte_ms: 2,
        }
    }

    #[test]
    fn seed_body_becomes_system_and_user_turns() {
        let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1024, "temperature": 0.7,
            "messages": [{"role": "user", "content": "Explain microservices."}],
            "system": "You are a software architect. Be concise."});
        let (inv, _) = parse(body.to_string().as_bytes(), TARGET).expect("parse");
        assert_eq!(inv.max_tokens, 1024);
        assert_eq!(inv.sampling.temperature, 0.7);
        assert_eq!(
            inv.prompt,
            Prompt::Chat(vec![
                ChatTurn::new("system", "You are a software architect. Be concise."),
                ChatTurn::new("user", "Explain microservices."),
            ])
        );
    }

    #[test]
    fn response_has_the_messages_shape() {
        let (_, r) = parse(br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#, TARGET).expect("parse");
        let v = r.response(&done("Hello", StopReason::StopSequence("X".into())));
        assert!(v["id"].as_str().expect("id").starts_with("msg_bdrk_"));
        assert_eq!(v["model"], "claude-3-sonnet-20240229");
        assert_eq!(v["content"][0]["text"], "Hello");
        assert_eq!(v["stop_reason"], "stop_sequence");
        assert_eq!(v["stop_sequence"], "X");
        assert_eq!(v["usage"]["input_tokens"], 7);
    }

    #[test]
    fn stream_has_the_event_sequence() {
        let (_, mut r) = parse(br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#, TARGET).expect("parse");
        let mut events = r.stream_start(&PromptUsage {
            input_tokens: 7,
            ..PromptUsage::default()
        });
        events.extend(r.stream_delta("He"));
        events.extend(r.stream_end(&done("He", StopReason::EndOfTurn)));
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["type"].as_str().expect("type"))
            .collect();
        assert_eq!(
            types,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[4]["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn required_members_are_named() {
        let e = parse(
            br#"{"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            TARGET,
        )
        .err()
        .expect("version");
        assert!(e.message.contains("anthropic_version"));
        let e = parse(br#"{"anthropic_version":"bedrock-2023-05-31","messages":[{"role":"user","content":"hi"}]}"#, TARGET).err().expect("max");
        assert!(e.message.contains("max_tokens"));
        let e = parse(
            br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":"x","messages":[]}"#,
            TARGET,
        )
        .err()
        .expect("type");
        assert!(e.message.contains("max_tokens"));
    }

    #[test]
    fn a_valid_image_is_refused_by_a_text_only_model_and_a_bad_one_is_explained() {
        // 1x1 PNG.
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
        let body = |media: &str| {
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": media, "data": png}}, {"type": "text", "text": "Describe"}]}]}).to_string()
        };
        let e = parse(body("image/png").as_bytes(), TARGET)
            .err()
            .expect("no vision");
        assert!(
            e.message.contains("doesn't support image input"),
            "{}",
            e.message
        );
        let e = parse(body("image/jpeg").as_bytes(), TARGET)
            .err()
            .expect("mismatch");
        assert!(e.message.contains("media type"), "{}", e.message);
    }

    #[test]
    fn legacy_prompt_splits_into_turns_and_stops_at_human() {
        let (inv, r) = parse(
            br#"{"prompt":"\n\nHuman: Summarize X\n\nAssistant:","max_tokens_to_sample":300}"#,
            TARGET,
        )
        .expect("parse");
        assert_eq!(
            inv.prompt,
            Prompt::Chat(vec![ChatTurn::new("user", "Summarize X")])
        );
        assert!(inv.stop_sequences.contains(&"\n\nHuman:".to_string()));
        let v = r.response(&done(" X is", StopReason::EndOfTurn));
        assert_eq!(v["completion"], " X is");
        assert_eq!(v["stop_reason"], "stop_sequence");
    }

    #[test]
    fn model_names_drop_the_provider_and_version() {
        assert_eq!(
            anthropic_model_name("anthropic.claude-3-haiku-20240307-v1:0"),
            "claude-3-haiku-20240307"
        );
        assert_eq!(anthropic_model_name("anthropic.claude-v2:1"), "claude-v2:1");
    }

    const TOOLS: &str = r#""tools":[{"name":"get_weather","description":"Get current weather for a location","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]},"cache_control":{"type":"ephemeral"}}]"#;
    const CALL: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}\n</tool_call>";

    fn prepare(body: &str) -> Result<(TextInvocation, Option<CallPlan>), BedrockError> {
        prepare_messages(from_json(body.as_bytes())?, TARGET)
    }

    fn cached(text: &str, stop: StopReason) -> Completion {
        Completion {
            cache_read_tokens: 4,
            cache_write_tokens: 1,
            ..done(text, stop)
        }
    }

    #[test]
    fn tools_history_and_cache_control_render_into_turns() {
        let body = format!(
            r#"{{"anthropic_version":"bedrock-2023-05-31","max_tokens":50,{TOOLS},
              "system":[{{"type":"text","text":"Be brief.","cache_control":{{"type":"ephemeral"}}}}],
              "messages":[{{"role":"user","content":[{{"type":"text","text":"Weather in Paris?","cache_control":{{"type":"ephemeral"}}}}]}},
                {{"role":"assistant","content":[{{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{{"location":"Paris"}}}}]}},
                {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_1","content":[{{"type":"text","text":"20C"}}],"is_error":true}}]}}]}}"#
        );
        let (inv, plan) = prepare(&body).expect("prepare");
        let tools = tool_calls::system_section(&[ToolDef {
            name: "get_weather".into(),
            description: "Get current weather for a location".into(),
            schema: json!({"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}),
        }]);
        assert_eq!(
            inv.prompt,
            Prompt::Chat(vec![
                ChatTurn::new(
                    "system",
                    format!("{tools}{CACHE_POINT}\n\nBe brief.{CACHE_POINT}")
                ),
                ChatTurn::new("user", format!("Weather in Paris?{CACHE_POINT}")),
                ChatTurn::new(
                    "assistant",
                    tool_calls::render_call("get_weather", &json!({"location": "Paris"}))
                ),
                ChatTurn::new("user", "<tool_response>\nError: 20C\n</tool_response>"),
            ])
        );
        let plan = plan.expect("plan");
        assert!(matches!(plan.decision, crate::ToolDecision::Auto { .. }));
    }

    #[test]
    fn tool_choice_and_tool_errors() {
        let body = |extra: &str| {
            format!(
                r#"{{"anthropic_version":"bedrock-2023-05-31","max_tokens":50,"messages":[{{"role":"user","content":"hi"}}],{extra}}}"#
            )
        };
        let (inv, plan) = prepare(&body(&format!(
            r#"{TOOLS},"tool_choice":{{"type":"none"}}"#
        )))
        .expect("none");
        assert!(plan.is_none());
        assert!(matches!(inv.prompt, Prompt::Chat(ref t) if t.len() == 1));
        let (_, plan) = prepare(&body(&format!(
            r#"{TOOLS},"tool_choice":{{"type":"tool","name":"get_weather"}}"#
        )))
        .expect("tool");
        assert!(matches!(
            plan.map(|p| p.decision),
            Some(crate::ToolDecision::Forced)
        ));
        let e = prepare(&body(&format!(
            r#"{TOOLS},"tool_choice":{{"type":"tool","name":"x"}}"#
        )))
        .expect_err("unknown");
        assert!(e.message.contains("tool_choice.name"), "{}", e.message);
        let e = prepare(&body(
            r#""tools":[{"type":"computer_20241022","name":"computer","display_width_px":1024}]"#,
        ))
        .expect_err("computer");
        assert!(e.message.contains("computer_20241022"), "{}", e.message);
        let e = prepare(r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"x"}]}]}"#).expect_err("no tools");
        assert!(e.message.contains("must define tools"), "{}", e.message);
    }

    #[test]
    fn usage_always_has_cache_members_with_input_excluding_them() {
        let (_, r) = parse(br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#, TARGET).expect("parse");
        let v = r.response(&cached("Hello", StopReason::EndOfTurn));
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 2, "output_tokens": 3, "cache_creation_input_tokens": 1, "cache_read_input_tokens": 4})
        );
    }

    #[test]
    fn a_tool_call_becomes_tool_use_content() {
        let r = MessagesResponder::new(TARGET.model_id, true);
        let v = r.response(&done(
            &format!("Let me check.\n{CALL}"),
            StopReason::GrammarComplete,
        ));
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(
            v["content"][0],
            json!({"type": "text", "text": "Let me check.\n"})
        );
        assert_eq!(v["content"][1]["type"], "tool_use");
        assert_eq!(v["content"][1]["name"], "get_weather");
        assert_eq!(v["content"][1]["input"], json!({"location": "Paris"}));
        let id = v["content"][1]["id"].as_str().expect("id");
        assert!(id.starts_with("toolu_bdrk_") && id.len() == 35, "{id}");
        let v = r.response(&done(CALL, StopReason::GrammarComplete));
        assert_eq!(v["content"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_streamed_tool_call_has_the_anthropic_event_sequence() {
        let mut r = MessagesResponder::new(TARGET.model_id, true);
        let mut events = r.stream_start(&PromptUsage {
            input_tokens: 7,
            ..PromptUsage::default()
        });
        for chunk in CALL.as_bytes().chunks(5) {
            events.extend(r.stream_delta(std::str::from_utf8(chunk).expect("ascii")));
        }
        events.extend(r.stream_end(&done(CALL, StopReason::GrammarComplete)));
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["type"].as_str().expect("type"))
            .collect();
        assert_eq!(types.first(), Some(&"message_start"));
        assert_eq!(types[1], "content_block_start");
        assert_eq!(events[1]["content_block"]["type"], "tool_use");
        assert_eq!(events[1]["content_block"]["input"], json!({}));
        assert_eq!(events[1]["index"], 0);
        assert_eq!(
            &types[types.len() - 3..],
            ["content_block_stop", "message_delta", "message_stop"]
        );
        let partial: String = events
            .iter()
            .filter_map(|e| e["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(partial, r#"{"location":"Paris"}"#);
        assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "tool_use");
    }
}
