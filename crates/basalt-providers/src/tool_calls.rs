//! Tool calls in the Hermes style a small local model can follow: the tools are
//! described in the system turn and a call is written as [`OPEN`] +
//! `{"name": ..., "arguments": ...}` + [`CLOSE`]. This module owns that prompt
//! text, the call grammar, the Yes/No decision question, and the parser that
//! splits the model's raw output back into text and a call. Every family with
//! tools (Converse, Anthropic Messages) goes through it.

use basalt_engine::ChatTurn;
use basalt_grammar::{Grammar, Schema, SchemaError};
use basalt_proto::BedrockError;
use serde_json::Value;

use crate::{strip_cache_points, Prompt, ToolDecision, ToolPlan};

/// Opens a call in the model's output.
pub const OPEN: &str = "<tool_call>\n";
/// Closes a call.
pub const CLOSE: &str = "\n</tool_call>";
/// Wraps a tool's result in a user turn.
pub const RESULT_OPEN: &str = "<tool_response>\n";
pub const RESULT_CLOSE: &str = "\n</tool_response>";
/// Tools per request.
pub const MAX_TOOLS: usize = 128;
/// Largest input schema, serialised.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Deepest nesting of objects and arrays in an input schema.
pub const MAX_SCHEMA_DEPTH: usize = 16;
/// Longest tool name (Bedrock's `ToolName`).
pub const MAX_TOOL_NAME: usize = 64;

const SUPPORTED: &str = "Supported: object, properties, required, string, number, integer, boolean, array, enum, nested objects, additionalProperties false.";

/// A tool as every family describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub schema: Value,
}

/// Which calls the caller allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The model decides (Converse `auto`, Anthropic `auto`).
    Auto,
    /// Some tool must be called.
    Any,
    /// This tool must be called.
    Named(String),
}

/// Checks a tool's name and schema size; `at` is its member path.
pub fn check_tool(at: &str, tool: &ToolDef) -> Result<(), BedrockError> {
    let name = &tool.name;
    let valid_name = !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        return Err(BedrockError::constraint(
            &format!("{at}.name"),
            name,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+ and have length between 1 and 64",
        ));
    }
    check_schema(&format!("{at} ({name}) input schema"), &tool.schema)
}

/// Size and depth limits on a schema, before it is compiled.
pub fn check_schema(what: &str, schema: &Value) -> Result<(), BedrockError> {
    let size = serde_json::to_string(schema).map_or(usize::MAX, |s| s.len());
    if size > MAX_SCHEMA_BYTES {
        return Err(BedrockError::validation(format!(
            "{what}: the schema is {size} bytes; at most {MAX_SCHEMA_BYTES} are allowed."
        )));
    }
    if depth(schema) > MAX_SCHEMA_DEPTH {
        return Err(BedrockError::validation(format!(
            "{what}: the schema nests objects and arrays more than {MAX_SCHEMA_DEPTH} levels deep."
        )));
    }
    Ok(())
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Count and unique names of a whole tool list; `at` is the list's member path.
pub fn check_tools(at: &str, tools: &[ToolDef]) -> Result<(), BedrockError> {
    if tools.is_empty() {
        return Err(BedrockError::validation(format!(
            "{at}: at least one tool is required."
        )));
    }
    if tools.len() > MAX_TOOLS {
        return Err(BedrockError::validation(format!(
            "{at}: {} tools were given; at most {MAX_TOOLS} are allowed.",
            tools.len()
        )));
    }
    for (i, tool) in tools.iter().enumerate() {
        if tools[..i].iter().any(|t| t.name == tool.name) {
            return Err(BedrockError::validation(format!(
                "{at}: the tool name {} is used more than once; tool names must be unique.",
                tool.name
            )));
        }
    }
    Ok(())
}

/// A JSON Schema compiled for the grammar; `subject` starts the error message,
/// e.g. "The input schema of tool get_weather".
pub fn compile_schema(subject: &str, schema: &Value) -> Result<Schema, BedrockError> {
    Schema::compile(schema).map_err(|e| match e {
        SchemaError::Unsupported { construct, at } => BedrockError::validation(format!(
            "{subject} uses an unsupported JSON Schema construct `{construct}` at {}. {SUPPORTED}",
            pointer(&at)
        )),
        SchemaError::Invalid { reason, at } => BedrockError::validation(format!(
            "{subject} is not a valid JSON Schema at {}: {reason}",
            pointer(&at)
        )),
    })
}

fn pointer(at: &str) -> &str {
    if at.is_empty() {
        "the root"
    } else {
        at
    }
}

/// The system-turn section that offers the tools; it comes before the caller's own
/// system text, as Bedrock caches tools, then system, then messages.
pub fn system_section(tools: &[ToolDef]) -> String {
    let mut out = format!(
        "You have access to the following tools. To call one, reply with {OPEN}{{\"name\": <tool name>, \"arguments\": <arguments as JSON>}}{CLOSE}\n\n<tools>"
    );
    for tool in tools {
        out.push('\n');
        out.push_str(&format!(
            "{{\"name\": {}, \"description\": {}, \"parameters\": {}}}",
            json_text(&Value::String(tool.name.clone())),
            json_text(&Value::String(tool.description.clone())),
            json_text(&tool.schema),
        ));
    }
    out.push_str("\n</tools>");
    strip_cache_points(&out)
}

fn json_text(value: &Value) -> String {
    // Serialising a Value cannot fail (its map keys are strings).
    serde_json::to_string(value).unwrap_or_default()
}

/// An earlier call, as it goes back into an assistant turn.
pub fn render_call(name: &str, input: &Value) -> String {
    strip_cache_points(&format!(
        "{OPEN}{{\"name\": {}, \"arguments\": {}}}{CLOSE}",
        json_text(&Value::String(name.to_string())),
        json_text(input)
    ))
}

/// A tool's result, as it goes into a user turn. A failed call's text is prefixed
/// with `Error: ` (the model reads prose more reliably than a JSON error object).
pub fn render_result(content: &str, is_error: bool) -> String {
    let prefix = if is_error { "Error: " } else { "" };
    strip_cache_points(&format!("{RESULT_OPEN}{prefix}{content}{RESULT_CLOSE}"))
}

/// One user message as the decision question reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserTurn {
    pub text: String,
    /// The text of each tool result in the message.
    pub tool_results: Vec<String>,
}

/// Request text kept for the decision question: its end, where the question usually is.
const QUESTION_REQUEST_CHARS: usize = 2000;
/// Tool-result text kept for the decision question.
const QUESTION_RESULT_CHARS: usize = 1000;

/// The Yes/No question that decides whether a call is forced (`ToolDecision::Auto`).
///
/// It names the tools and quotes the latest user request. When the last user message
/// carries tool results, the tool has already answered: the question quotes the
/// result and asks whether *another* call is needed, so the natural answer is No and
/// an agent loop ends with text instead of calling the same tool again.
pub fn decision_question(tools: &[ToolDef], user_turns: &[UserTurn]) -> Prompt {
    let mut system = String::from("You decide whether a tool is needed. Tools:");
    for tool in tools {
        let about = tool.description.lines().next().unwrap_or("").trim();
        if about.is_empty() {
            system.push_str(&format!("\n- {}", tool.name));
        } else {
            system.push_str(&format!("\n- {}: {about}", tool.name));
        }
    }
    let request = user_turns
        .iter()
        .rev()
        .map(|t| t.text.trim())
        .find(|t| !t.is_empty())
        .unwrap_or("");
    let request = tail(request, QUESTION_REQUEST_CHARS);
    let results = user_turns
        .last()
        .map(|t| t.tool_results.join("\n"))
        .unwrap_or_default();
    let user = if results.trim().is_empty() {
        format!("Request: {request}\nShould one of the tools be called to answer this request? Answer Yes or No.")
    } else {
        format!(
            "Request: {request}\nThe tool has already returned: {}\nIs another tool call needed to answer this request? Answer Yes or No.",
            head(results.trim(), QUESTION_RESULT_CHARS)
        )
    };
    Prompt::Chat(vec![
        ChatTurn::new("system", strip_cache_points(&system)),
        ChatTurn::new("user", strip_cache_points(&user)),
    ])
}

fn head(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn tail(text: &str, chars: usize) -> &str {
    let count = text.chars().count();
    match text.char_indices().nth(count.saturating_sub(chars)) {
        Some((at, _)) => &text[at..],
        None => text,
    }
}

/// The tools a call may use and who decides, before any schema is compiled.
#[derive(Debug, Clone)]
pub struct CallPlan {
    pub tools: Vec<ToolDef>,
    pub decision: ToolDecision,
}

/// Maps a tool choice to a plan; `choice_at` names the choice's member in errors.
pub fn call_plan(
    tools: &[ToolDef],
    choice: &Choice,
    choice_at: &str,
    user_turns: &[UserTurn],
) -> Result<CallPlan, BedrockError> {
    Ok(match choice {
        Choice::Auto => CallPlan {
            tools: tools.to_vec(),
            decision: ToolDecision::Auto {
                question: decision_question(tools, user_turns),
            },
        },
        Choice::Any => CallPlan {
            tools: tools.to_vec(),
            decision: ToolDecision::Forced,
        },
        Choice::Named(name) => {
            let tool = tools.iter().find(|t| &t.name == name).ok_or_else(|| {
                BedrockError::validation(format!(
                    "{choice_at}: the tool {name} is not one of the tools defined in the request."
                ))
            })?;
            CallPlan {
                tools: vec![tool.clone()],
                decision: ToolDecision::Forced,
            }
        }
    })
}

impl CallPlan {
    /// Compiles every tool's schema into the call grammar.
    pub fn compile(self) -> Result<ToolPlan, BedrockError> {
        let mut compiled = Vec::with_capacity(self.tools.len());
        for tool in &self.tools {
            let subject = format!("The input schema of tool {}", tool.name);
            compiled.push((tool.name.clone(), compile_schema(&subject, &tool.schema)?));
        }
        Ok(ToolPlan {
            grammar: Grammar::tool_call(compiled, OPEN, CLOSE),
            open: OPEN.to_string(),
            decision: self.decision,
        })
    }
}

/// `len` random ASCII letters and digits, for tool-use IDs.
pub fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in uuid::Uuid::new_v4().as_bytes() {
            if out.len() == len {
                break;
            }
            // 248 = 4 * 62: rejecting the rest keeps the letters uniform.
            if *byte < 248 {
                out.push(char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]));
            }
        }
    }
    out
}

// ---- reading the model's output ----

/// What [`CallSplitter`] found in a piece of raw output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Free text, outside any call.
    Text(String),
    /// A call to this tool has begun.
    CallStart { name: String },
    /// More of the call's arguments as compact JSON text.
    CallInput(String),
    /// The arguments are complete (or the output ended inside them).
    CallEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// After OPEN, reading `{"name": "...", "arguments": `.
    Header,
    Arguments,
    /// After the call; the rest (CLOSE) is not output.
    After,
}

/// Splits raw output, arriving in arbitrary chunks, into text and at most one call.
/// Text that could be the start of [`OPEN`] is held back until it is known not to be.
#[derive(Debug)]
pub struct CallSplitter {
    state: State,
    pending: String,
    args: ArgumentScan,
    input: String,
    name: Option<String>,
}

impl Default for CallSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl CallSplitter {
    pub fn new() -> Self {
        Self {
            state: State::Text,
            pending: String::new(),
            args: ArgumentScan::default(),
            input: String::new(),
            name: None,
        }
    }

    pub fn push(&mut self, chunk: &str) -> Vec<Piece> {
        self.pending.push_str(chunk);
        let mut out = Vec::new();
        loop {
            let before = self.state;
            match self.state {
                State::Text => self.scan_text(&mut out),
                State::Header => self.scan_header(&mut out),
                State::Arguments => self.scan_arguments(&mut out),
                State::After => self.pending.clear(),
            }
            if self.state == before {
                return out;
            }
        }
    }

    /// Pieces still held back when the output ends.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            State::Text if !rest.is_empty() => vec![Piece::Text(rest)],
            // An unfinished header was never a call.
            State::Header => {
                self.state = State::Text;
                vec![Piece::Text(format!("{OPEN}{rest}"))]
            }
            State::Arguments => {
                self.state = State::After;
                vec![Piece::CallEnd]
            }
            _ => Vec::new(),
        }
    }

    /// The call, once its arguments are complete and valid JSON.
    pub fn call(&self) -> Option<ParsedCall> {
        let name = self.name.clone()?;
        if !self.args.done {
            return None;
        }
        let input = serde_json::from_str(&self.input).ok()?;
        Some(ParsedCall { name, input })
    }

    fn scan_text(&mut self, out: &mut Vec<Piece>) {
        if let Some(at) = self.pending.find(OPEN) {
            if at > 0 {
                out.push(Piece::Text(self.pending[..at].to_string()));
            }
            self.pending.drain(..at + OPEN.len());
            self.state = State::Header;
            return;
        }
        let keep = open_prefix_len(&self.pending);
        let cut = self.pending.len() - keep;
        if cut > 0 {
            out.push(Piece::Text(self.pending[..cut].to_string()));
            self.pending.drain(..cut);
        }
    }

    fn scan_header(&mut self, out: &mut Vec<Piece>) {
        match read_header(&self.pending) {
            Header::Incomplete => {}
            Header::Invalid => {
                // Not a call after all: what looked like one is text.
                out.push(Piece::Text(format!("{OPEN}{}", self.pending)));
                self.pending.clear();
                self.state = State::Text;
            }
            Header::Done { name, consumed } => {
                self.pending.drain(..consumed);
                self.name = Some(name.clone());
                out.push(Piece::CallStart { name });
                self.state = State::Arguments;
            }
        }
    }

    fn scan_arguments(&mut self, out: &mut Vec<Piece>) {
        let (fragment, consumed) = self.args.feed(&self.pending);
        self.pending.drain(..consumed);
        if !fragment.is_empty() {
            self.input.push_str(&fragment);
            out.push(Piece::CallInput(fragment));
        }
        if self.args.done {
            out.push(Piece::CallEnd);
            self.state = State::After;
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of OPEN.
fn open_prefix_len(text: &str) -> usize {
    let max = (OPEN.len() - 1).min(text.len());
    (1..=max)
        .rev()
        .find(|&len| {
            let start = text.len() - len;
            text.is_char_boundary(start) && OPEN.starts_with(&text[start..])
        })
        .unwrap_or(0)
}

enum Header {
    Incomplete,
    Invalid,
    Done { name: String, consumed: usize },
}

/// Reads `{"name": "<name>", "arguments": ` (any JSON whitespace) from the start of `text`.
fn read_header(text: &str) -> Header {
    let mut at = 0;
    let mut name = None;
    for step in [
        HeaderStep::Literal("{"),
        HeaderStep::Literal("\"name\""),
        HeaderStep::Literal(":"),
        HeaderStep::Name,
        HeaderStep::Literal(","),
        HeaderStep::Literal("\"arguments\""),
        HeaderStep::Literal(":"),
    ] {
        at += leading_whitespace(&text[at..]);
        let rest = &text[at..];
        match step {
            HeaderStep::Literal(lit) => {
                if rest.starts_with(lit) {
                    at += lit.len();
                } else if lit.starts_with(rest) {
                    return Header::Incomplete;
                } else {
                    return Header::Invalid;
                }
            }
            HeaderStep::Name => match json_string_len(rest) {
                StringScan::Incomplete => return Header::Incomplete,
                StringScan::Invalid => return Header::Invalid,
                StringScan::Done(len) => {
                    // Decoded, so escapes in the name read as the model meant them.
                    match serde_json::from_str::<String>(&rest[..len]) {
                        Ok(decoded) => name = Some(decoded),
                        Err(_) => return Header::Invalid,
                    }
                    at += len;
                }
            },
        }
    }
    match name {
        Some(name) => Header::Done { name, consumed: at },
        None => Header::Invalid,
    }
}

enum HeaderStep {
    Literal(&'static str),
    Name,
}

fn leading_whitespace(text: &str) -> usize {
    text.len() - text.trim_start_matches([' ', '\t', '\n', '\r']).len()
}

enum StringScan {
    Incomplete,
    Invalid,
    /// Bytes up to and including the closing quote.
    Done(usize),
}

fn json_string_len(text: &str) -> StringScan {
    let mut chars = text.char_indices();
    match chars.next() {
        None => return StringScan::Incomplete,
        Some((_, '"')) => {}
        Some(_) => return StringScan::Invalid,
    }
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return StringScan::Done(i + 1);
        }
    }
    StringScan::Incomplete
}

/// Follows the arguments value character by character, dropping whitespace outside
/// strings so the fragments concatenate to compact JSON.
#[derive(Debug, Default)]
struct ArgumentScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// A bare number or literal at the top level.
    scalar: bool,
    done: bool,
}

impl ArgumentScan {
    /// The compact fragment from `text`, and how many bytes of it were consumed.
    fn feed(&mut self, text: &str) -> (String, usize) {
        let mut out = String::new();
        for (i, c) in text.char_indices() {
            if self.done {
                return (out, i);
            }
            if self.in_string {
                out.push(c);
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == '"' {
                    self.in_string = false;
                    self.done = self.depth == 0;
                }
                continue;
            }
            match c {
                ' ' | '\t' | '\n' | '\r' => self.done = self.scalar && self.depth == 0,
                '{' | '[' => {
                    self.depth += 1;
                    out.push(c);
                }
                '}' | ']' | ',' if self.depth == 0 => {
                    // Belongs to the enclosing call object: a bare value ended here.
                    self.done = true;
                    return (out, i);
                }
                '}' | ']' => {
                    self.depth -= 1;
                    out.push(c);
                    self.done = self.depth == 0;
                }
                '"' => {
                    self.in_string = true;
                    out.push(c);
                }
                _ => {
                    self.scalar |= self.depth == 0;
                    out.push(c);
                }
            }
        }
        (out, text.len())
    }
}

/// A complete call read from the output.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub input: Value,
}

/// A whole output: the text before the call, and the call if one was made.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitOutput {
    pub text: String,
    pub call: Option<ParsedCall>,
}

/// Splits a whole output. If a call began but did not finish (the output was cut
/// off), the raw output is kept as text so nothing is lost.
pub fn split(raw: &str) -> SplitOutput {
    let mut splitter = CallSplitter::new();
    let mut pieces = splitter.push(raw);
    pieces.extend(splitter.finish());
    let call = splitter.call();
    let started = pieces.iter().any(|p| matches!(p, Piece::CallStart { .. }));
    if started && call.is_none() {
        return SplitOutput {
            text: raw.to_string(),
            call: None,
        };
    }
    let text = pieces
        .into_iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(t),
            _ => None,
        })
        .collect();
    SplitOutput { text, call }
}

/// One event of a response's content, numbered like Bedrock's content blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockEvent {
    TextStart { index: u32 },
    Text { index: u32, text: String },
    TextStop { index: u32 },
    ToolStart { index: u32, name: String },
    ToolInput { index: u32, json: String },
    ToolStop { index: u32 },
}

/// Turns streamed raw output into content-block events: a text block (index 0) only
/// once it has more than whitespace, then the tool block after it.
#[derive(Debug, Default)]
pub struct BlockStream {
    splitter: CallSplitter,
    /// Leading whitespace not yet known to open a text block.
    held: String,
    open_text: Option<u32>,
    open_tool: Option<u32>,
    next_index: u32,
}

impl BlockStream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &str) -> Vec<BlockEvent> {
        let pieces = self.splitter.push(chunk);
        self.events(pieces)
    }

    /// The closing events; every stream gets at least one (possibly empty) block.
    pub fn finish(&mut self) -> Vec<BlockEvent> {
        let pieces = self.splitter.finish();
        let mut out = self.events(pieces);
        if let Some(index) = self.open_text.take() {
            out.push(BlockEvent::TextStop { index });
        }
        if let Some(index) = self.open_tool.take() {
            out.push(BlockEvent::ToolStop { index });
        }
        if self.next_index == 0 {
            out.push(BlockEvent::TextStart { index: 0 });
            let held = std::mem::take(&mut self.held);
            if !held.is_empty() {
                out.push(BlockEvent::Text {
                    index: 0,
                    text: held,
                });
            }
            out.push(BlockEvent::TextStop { index: 0 });
            self.next_index = 1;
        }
        out
    }

    /// The call, once complete.
    pub fn call(&self) -> Option<ParsedCall> {
        self.splitter.call()
    }

    fn events(&mut self, pieces: Vec<Piece>) -> Vec<BlockEvent> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Text(text) => match self.open_text {
                    Some(index) => out.push(BlockEvent::Text { index, text }),
                    None => {
                        self.held.push_str(&text);
                        if !self.held.trim().is_empty() {
                            let index = self.next_index;
                            self.next_index += 1;
                            self.open_text = Some(index);
                            out.push(BlockEvent::TextStart { index });
                            out.push(BlockEvent::Text {
                                index,
                                text: std::mem::take(&mut self.held),
                            });
                        }
                    }
                },
                Piece::CallStart { name } => {
                    if let Some(index) = self.open_text.take() {
                        out.push(BlockEvent::TextStop { index });
                    }
                    self.held.clear();
                    let index = self.next_index;
                    self.next_index += 1;
                    self.open_tool = Some(index);
                    out.push(BlockEvent::ToolStart { index, name });
                }
                Piece::CallInput(json) => {
                    if let Some(index) = self.open_tool {
                        out.push(BlockEvent::ToolInput { index, json });
                    }
                }
                Piece::CallEnd => {
                    if let Some(index) = self.open_tool.take() {
                        out.push(BlockEvent::ToolStop { index });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> ToolDef {
        ToolDef {
            name: "get_weather".into(),
            description: "Get current weather for a location".into(),
            schema: json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
        }
    }

    const CALL: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris, FR\", \"days\": [1, 2]}}\n</tool_call>";

    fn run(chunks: &[&str]) -> (Vec<Piece>, Option<ParsedCall>) {
        let mut s = CallSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.push(c));
        }
        out.extend(s.finish());
        (out, s.call())
    }

    /// Merges adjacent text and input pieces, so chunkings can be compared.
    fn merged(pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        for p in pieces {
            match (out.last_mut(), p) {
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (Some(Piece::CallInput(a)), Piece::CallInput(b)) => a.push_str(&b),
                (_, p) => out.push(p),
            }
        }
        out
    }

    fn expected_call_pieces(before: &str) -> Vec<Piece> {
        let mut v = Vec::new();
        if !before.is_empty() {
            v.push(Piece::Text(before.into()));
        }
        v.extend([
            Piece::CallStart {
                name: "get_weather".into(),
            },
            Piece::CallInput(r#"{"location":"Paris, FR","days":[1,2]}"#.into()),
            Piece::CallEnd,
        ]);
        v
    }

    #[test]
    fn a_call_in_one_chunk_splits_into_start_input_and_end() {
        let (pieces, call) = run(&[CALL]);
        assert_eq!(merged(pieces), expected_call_pieces(""));
        let call = call.expect("call");
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.input, json!({"location": "Paris, FR", "days": [1, 2]}));
    }

    #[test]
    fn byte_by_byte_chunks_give_the_same_pieces_and_never_leak_open() {
        let raw = format!("Let me check.\n{CALL}");
        let chunks: Vec<String> = raw.chars().map(String::from).collect();
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let (pieces, call) = run(&refs);
        for p in &pieces {
            if let Piece::Text(t) = p {
                assert!(!t.contains('<'), "leaked {t:?}");
            }
        }
        assert_eq!(merged(pieces), expected_call_pieces("Let me check.\n"));
        assert!(call.is_some());
    }

    #[test]
    fn chunks_splitting_open_are_held_back_then_released_when_not_a_call() {
        let (pieces, _) = run(&[
            "Use <tool_c",
            "all>\n{\"name\": \"get_weather\", \"argu",
            "ments\": {}}",
        ]);
        assert_eq!(
            merged(pieces),
            vec![
                Piece::Text("Use ".into()),
                Piece::CallStart {
                    name: "get_weather".into()
                },
                Piece::CallInput("{}".into()),
                Piece::CallEnd
            ]
        );
        let mut s = CallSplitter::new();
        assert_eq!(s.push("a <tool_c"), vec![Piece::Text("a ".into())]);
        assert_eq!(s.push("ar> b"), vec![Piece::Text("<tool_car> b".into())]);
        assert_eq!(s.finish(), vec![]);
        let mut s = CallSplitter::new();
        assert_eq!(s.push("x <tool"), vec![Piece::Text("x ".into())]);
        assert_eq!(s.finish(), vec![Piece::Text("<tool".into())]);
    }

    #[test]
    fn output_without_a_call_is_all_text() {
        let out = split("Just a joke: why did the chicken cross the road?");
        assert_eq!(out.text, "Just a joke: why did the chicken cross the road?");
        assert_eq!(out.call, None);
    }

    #[test]
    fn split_keeps_text_before_the_call_and_raw_text_for_a_cut_off_call() {
        let out = split(&format!("Checking. {CALL}"));
        assert_eq!(out.text, "Checking. ");
        assert_eq!(out.call.map(|c| c.name), Some("get_weather".into()));
        let cut = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"loc";
        assert_eq!(
            split(cut),
            SplitOutput {
                text: cut.into(),
                call: None
            }
        );
        let not_a_call = "<tool_call>\nhello";
        assert_eq!(split(not_a_call).text, not_a_call);
    }

    #[test]
    fn escaped_names_and_strings_with_braces_are_read_exactly() {
        let raw = "<tool_call>\n{\"name\":\"get_\\u0077eather\",\"arguments\":{\"q\":\"a } \\\" {\"}}\n</tool_call>";
        let out = split(raw);
        let call = out.call.expect("call");
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.input, json!({"q": "a } \" {"}));
    }

    #[test]
    fn block_stream_numbers_text_then_tool_and_drops_whitespace_only_text() {
        let mut b = BlockStream::new();
        let mut events = b.push("Sure. ");
        events.extend(b.push(&CALL[..20]));
        events.extend(b.push(&CALL[20..]));
        events.extend(b.finish());
        assert_eq!(events[0], BlockEvent::TextStart { index: 0 });
        assert!(events.contains(&BlockEvent::TextStop { index: 0 }));
        assert!(events.contains(&BlockEvent::ToolStart {
            index: 1,
            name: "get_weather".into()
        }));
        assert_eq!(events.last(), Some(&BlockEvent::ToolStop { index: 1 }));
        let input: String = events
            .iter()
            .filter_map(|e| match e {
                BlockEvent::ToolInput { json, .. } => Some(json.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(input, r#"{"location":"Paris, FR","days":[1,2]}"#);

        let mut b = BlockStream::new();
        let mut events = b.push("\n ");
        events.extend(b.push(CALL));
        events.extend(b.finish());
        assert_eq!(
            events[0],
            BlockEvent::ToolStart {
                index: 0,
                name: "get_weather".into()
            }
        );
        let mut b = BlockStream::new();
        assert_eq!(
            b.finish(),
            vec![
                BlockEvent::TextStart { index: 0 },
                BlockEvent::TextStop { index: 0 }
            ]
        );
    }

    #[test]
    fn tools_section_lists_one_json_line_per_tool() {
        let section = system_section(&[weather()]);
        assert_eq!(
            section,
            "You have access to the following tools. To call one, reply with <tool_call>\n{\"name\": <tool name>, \"arguments\": <arguments as JSON>}\n</tool_call>\n\n<tools>\n{\"name\": \"get_weather\", \"description\": \"Get current weather for a location\", \"parameters\": {\"type\":\"object\",\"properties\":{\"location\":{\"type\":\"string\"}},\"required\":[\"location\"]}}\n</tools>"
        );
        assert_eq!(
            render_call("get_weather", &json!({"location": "Paris"})),
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\":\"Paris\"}}\n</tool_call>"
        );
        assert_eq!(
            render_result("boom", true),
            "<tool_response>\nError: boom\n</tool_response>"
        );
    }

    #[test]
    fn tool_choice_maps_to_decisions() {
        let tools = [
            weather(),
            ToolDef {
                name: "joke".into(),
                description: String::new(),
                schema: json!({"type": "object"}),
            },
        ];
        let turns = [UserTurn {
            text: "Weather in Paris?".into(),
            tool_results: vec![],
        }];
        let plan = call_plan(&tools, &Choice::Auto, "toolChoice", &turns).expect("auto");
        assert_eq!(plan.tools.len(), 2);
        let ToolDecision::Auto { question } = plan.decision else {
            panic!("auto")
        };
        assert_eq!(
            question,
            Prompt::Chat(vec![
                ChatTurn::new("system", "You decide whether a tool is needed. Tools:\n- get_weather: Get current weather for a location\n- joke"),
                ChatTurn::new("user", "Request: Weather in Paris?\nShould one of the tools be called to answer this request? Answer Yes or No."),
            ])
        );
        let plan = call_plan(&tools, &Choice::Any, "toolChoice", &turns).expect("any");
        assert!(matches!(plan.decision, ToolDecision::Forced));
        assert_eq!(plan.tools.len(), 2);
        let plan =
            call_plan(&tools, &Choice::Named("joke".into()), "toolChoice", &turns).expect("named");
        assert_eq!(plan.tools, vec![tools[1].clone()]);
        let e = call_plan(
            &tools,
            &Choice::Named("nope".into()),
            "toolConfig.toolChoice.tool.name",
            &turns,
        )
        .expect_err("unknown");
        assert!(
            e.message.contains("toolConfig.toolChoice.tool.name") && e.message.contains("nope"),
            "{}",
            e.message
        );
    }

    #[test]
    fn after_a_tool_result_the_question_asks_for_another_call() {
        let turns = [
            UserTurn {
                text: "Weather in Paris?".into(),
                tool_results: vec![],
            },
            UserTurn {
                text: String::new(),
                tool_results: vec!["{\"temp\":20}".into()],
            },
        ];
        let Prompt::Chat(q) = decision_question(&[weather()], &turns) else {
            panic!("chat")
        };
        assert_eq!(
            q[1].content,
            "Request: Weather in Paris?\nThe tool has already returned: {\"temp\":20}\nIs another tool call needed to answer this request? Answer Yes or No."
        );
    }

    #[test]
    fn limits_and_names_are_checked() {
        let mut bad = weather();
        bad.name = "get weather".into();
        let e = check_tool("toolConfig.tools.0.toolSpec", &bad).expect_err("name");
        assert!(
            e.message.contains("toolConfig.tools.0.toolSpec.name"),
            "{}",
            e.message
        );
        let mut deep = json!({"type": "string"});
        for _ in 0..20 {
            deep = json!({"type": "array", "items": deep});
        }
        let e = check_tool(
            "tools.0",
            &ToolDef {
                schema: deep,
                ..weather()
            },
        )
        .expect_err("depth");
        assert!(
            e.message.contains("tools.0 (get_weather)") && e.message.contains("16"),
            "{}",
            e.message
        );
        let big = json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert!(check_tool(
            "tools.0",
            &ToolDef {
                schema: big,
                ..weather()
            }
        )
        .is_err());
        let many = vec![weather(); 2];
        assert!(check_tools("tools", &many)
            .expect_err("dupe")
            .message
            .contains("more than once"));
        assert!(check_tools("tools", &[]).is_err());
    }

    #[test]
    fn ids_are_alphanumeric_of_the_asked_length() {
        let id = random_alphanumeric(22);
        assert_eq!(id.len(), 22);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_alphanumeric(24), random_alphanumeric(24));
    }

    #[test]
    fn unsupported_schema_constructs_are_named() {
        let mut tool = weather();
        tool.schema = json!({"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}});
        let plan = CallPlan {
            tools: vec![tool],
            decision: ToolDecision::Forced,
        };
        let e = plan.compile().expect_err("oneOf");
        assert!(
            e.message.starts_with("The input schema of tool get_weather uses an unsupported JSON Schema construct `oneOf` at /properties/x."),
            "{}",
            e.message
        );
        let ok = CallPlan {
            tools: vec![weather()],
            decision: ToolDecision::Forced,
        }
        .compile()
        .expect("compile");
        assert_eq!(ok.open, OPEN);
        // The shortest call the grammar allows is one the splitter reads as a call.
        let shortest = ok.grammar.matcher().shortest_completion();
        assert_eq!(
            split(&shortest).call.map(|c| c.name),
            Some("get_weather".into()),
            "{shortest:?}"
        );
    }
}
