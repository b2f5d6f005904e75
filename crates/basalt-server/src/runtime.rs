//! bedrock-runtime operations: InvokeModel, InvokeModelWithResponseStream,
//! Converse, ConverseStream and CountTokens.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use basalt_catalog::ModelEntry;
use basalt_engine::{
    ChatTurn, EmbeddingModel, GenerateRequest, GenerationEvent, GenerationStream, Grammar,
    OutputConstraint, SamplingParams, TextModel,
};
use basalt_proto::converse::{
    ConverseRequest, ConverseStreamEvent, CountTokensInput, CountTokensRequest,
};
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_providers::embeddings::EmbedInvocation;
use basalt_providers::invoke::{self, Invocation};
use basalt_providers::{
    converse, converse::ConverseResponder, Completion, OutputMode, Prompt, Target, TextInvocation,
    TextResponder, ToolDecision, CACHE_POINT, INVOCATION_METRICS,
};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::edge::{engine_error, ApiError, Label};
use crate::loaded::Loaded;
use crate::{stream, AppState};

type Result<T> = std::result::Result<T, ApiError>;

/// A resolved model ID and the loaded model behind it.
struct Resolved {
    entry: ModelEntry,
    model: Loaded,
    vision: bool,
}

impl Resolved {
    fn target(&self) -> Target<'_> {
        Target {
            model_id: &self.entry.model_id,
            vision: self.vision,
        }
    }

    fn text_model(&self) -> std::result::Result<&TextModel, BedrockError> {
        match &self.model {
            Loaded::Text(m) => Ok(m),
            Loaded::Embed(_) => Err(BedrockError::validation(
                "This action doesn't support the model that you provided. Try again with a supported text or chat model.",
            )),
        }
    }
}

fn resolve(state: &AppState, model_id: &str) -> std::result::Result<Resolved, BedrockError> {
    let entry = state.catalog.resolve(model_id)?;
    let model = state.models.get(&entry.local_model)?;
    let vision = state
        .catalog
        .local_models()
        .get(&entry.local_model)
        .is_some_and(|m| m.vision);
    Ok(Resolved {
        entry,
        model,
        vision,
    })
}

/// No guardrail can exist yet, so naming one is naming a missing resource.
fn reject_guardrail(
    id: Option<&str>,
    version: Option<&str>,
) -> std::result::Result<(), BedrockError> {
    match id {
        Some(id) => Err(BedrockError::not_found(format!(
            "The guardrail {id} (version {}) does not exist. Guardrails are not available in this Basalt release.",
            version.unwrap_or("DRAFT")
        ))),
        None => Ok(()),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn check_invoke_headers(
    headers: &HeaderMap,
    accept_header: &str,
    body: &[u8],
) -> std::result::Result<(), BedrockError> {
    if let Some(ct) = header_str(headers, "content-type") {
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") && mime != "*/*" && !mime.is_empty() {
            return Err(BedrockError::validation(format!(
                "The provided content type {ct} is not supported; use application/json."
            )));
        }
    }
    if let Some(accept) = header_str(headers, accept_header) {
        let ok = accept
            .split(',')
            .map(|a| a.split(';').next().unwrap_or("").trim())
            .any(|a| a.eq_ignore_ascii_case("application/json") || a == "*/*" || a.is_empty());
        if !ok {
            return Err(BedrockError::validation(format!(
                "The provided accept type {accept} is not supported; use application/json."
            )));
        }
    }
    if body.is_empty() {
        return Err(BedrockError::validation(
            "The request body is empty; send the model's JSON body.",
        ));
    }
    reject_guardrail(
        header_str(headers, "x-amzn-bedrock-guardrailidentifier"),
        header_str(headers, "x-amzn-bedrock-guardrailversion"),
    )
}

/// The exact text the model reads. A trailing assistant turn is continued, not closed.
fn render(model: &TextModel, prompt: &Prompt) -> std::result::Result<String, BedrockError> {
    match prompt {
        Prompt::Raw(text) => Ok(text.clone()),
        Prompt::Chat(turns) => {
            let (prefill, turns): (Option<&ChatTurn>, &[ChatTurn]) = match turns.split_last() {
                Some((last, rest)) if last.role == "assistant" => (Some(last), rest),
                _ => (None, turns.as_slice()),
            };
            let mut text = model.render_chat(turns).map_err(engine_error)?;
            if let Some(p) = prefill {
                text.push_str(&p.content);
            }
            Ok(text)
        }
    }
}

/// Removes the cache-point markers from a rendered prompt and returns the byte offset
/// each one marked.
fn take_cache_points(prompt: &str) -> (String, Vec<usize>) {
    let mut text = String::with_capacity(prompt.len());
    let mut points = Vec::new();
    for (i, part) in prompt.split(CACHE_POINT).enumerate() {
        if i > 0 {
            points.push(text.len());
        }
        text.push_str(part);
    }
    (text, points)
}

/// Starts a generation. When tools are offered and the model is to decide, it is first
/// asked whether a tool call is needed, under a Yes/No grammar.
async fn start(
    model: &TextModel,
    inv: &TextInvocation,
) -> std::result::Result<GenerationStream, BedrockError> {
    let constraint = match &inv.output {
        OutputMode::Text => None,
        OutputMode::Json(grammar) => Some(OutputConstraint {
            grammar: grammar.clone(),
            trigger: None,
        }),
        OutputMode::Tools(plan) => {
            let forced = match &plan.decision {
                ToolDecision::Forced => true,
                ToolDecision::Auto { question } => wants_tool(model, question).await?,
            };
            Some(OutputConstraint {
                grammar: plan.grammar.clone(),
                trigger: (!forced).then(|| plan.open.clone()),
            })
        }
    };
    let (prompt, cache_points) = take_cache_points(&render(model, &inv.prompt)?);
    model
        .generate(GenerateRequest {
            prompt,
            max_tokens: inv.max_tokens,
            stop_sequences: inv.stop_sequences.clone(),
            sampling: inv.sampling.clone(),
            cache_points,
            constraint,
        })
        .map_err(engine_error)
}

/// The model's own Yes/No answer to whether a tool call is needed.
async fn wants_tool(
    model: &TextModel,
    question: &Prompt,
) -> std::result::Result<bool, BedrockError> {
    let (prompt, _) = take_cache_points(&render(model, question)?);
    let (answer, _) = model
        .generate(GenerateRequest {
            prompt,
            max_tokens: 4,
            stop_sequences: Vec::new(),
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            cache_points: Vec::new(),
            constraint: Some(OutputConstraint {
                grammar: Grammar::choice(&["Yes", "No"]),
                trigger: None,
            }),
        })
        .map_err(engine_error)?
        .collect()
        .await
        .map_err(engine_error)?;
    Ok(answer == "Yes")
}

fn completion(
    text: String,
    summary: basalt_engine::GenerationSummary,
    started: Instant,
) -> Completion {
    Completion {
        text,
        stop_reason: summary.stop_reason,
        input_tokens: summary.input_tokens,
        output_tokens: summary.output_tokens,
        cache_read_tokens: summary.cache_read_tokens,
        cache_write_tokens: summary.cache_write_tokens,
        latency_ms: started.elapsed().as_millis() as u64,
        first_byte_ms: summary.first_token_ms,
    }
}

pub(crate) fn json_body(value: &impl serde::Serialize) -> Response {
    let mut resp = serde_json::to_vec(value)
        .unwrap_or_default()
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn insert_number(resp: &mut Response, name: &'static str, value: u64) {
    resp.headers_mut().insert(name, HeaderValue::from(value));
}

pub async fn invoke_model(
    State(state): State<Arc<AppState>>,
    Label(model_id): Label,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let started = Instant::now();
    check_invoke_headers(&headers, "accept", &body)?;
    let resolved = resolve(&state, &model_id)?;
    match invoke::parse(resolved.entry.format, &body, resolved.target())? {
        Invocation::Text((inv, responder)) => {
            let model = resolved.text_model()?;
            let (text, summary) = start(model, &inv).await?.collect().await?;
            let done = completion(text, summary, started);
            let mut resp = json_body(&responder.response(&done));
            insert_number(
                &mut resp,
                "x-amzn-bedrock-input-token-count",
                done.input_tokens.into(),
            );
            insert_number(
                &mut resp,
                "x-amzn-bedrock-output-token-count",
                done.output_tokens.into(),
            );
            insert_number(
                &mut resp,
                "x-amzn-bedrock-invocation-latency",
                done.latency_ms,
            );
            Ok(resp)
        }
        Invocation::Embed(inv) => {
            let Loaded::Embed(model) = &resolved.model else {
                return Err(BedrockError::internal(
                    "the catalog maps an embedding body to a text model",
                )
                .into());
            };
            let (body, tokens) = embed(model, inv).await?;
            let mut resp = json_body(&body);
            insert_number(&mut resp, "x-amzn-bedrock-input-token-count", tokens as u64);
            insert_number(&mut resp, "x-amzn-bedrock-output-token-count", 0);
            insert_number(
                &mut resp,
                "x-amzn-bedrock-invocation-latency",
                started.elapsed().as_millis() as u64,
            );
            Ok(resp)
        }
    }
}

async fn embed(
    model: &EmbeddingModel,
    inv: EmbedInvocation,
) -> std::result::Result<(Value, usize), BedrockError> {
    let embedded = model.embed(inv.texts.clone()).await.map_err(engine_error)?;
    let tokens = embedded.token_counts.iter().sum();
    let model2 = model.clone();
    let (width, normalize) = (inv.dimensions, inv.normalize);
    // Fitting may compute a projection the first time (CPU work): keep it off the reactor.
    let vectors =
        tokio::task::spawn_blocking(move || model2.fit(embedded.vectors, width, normalize))
            .await
            .map_err(|_| BedrockError::internal("embedding task failed"))?
            .map_err(engine_error)?;
    Ok((inv.response(&vectors, &embedded.token_counts), tokens))
}

pub async fn invoke_model_stream(
    State(state): State<Arc<AppState>>,
    Label(model_id): Label,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let started = Instant::now();
    check_invoke_headers(&headers, "x-amzn-bedrock-accept", &body)?;
    let resolved = resolve(&state, &model_id)?;
    if resolved.entry.format.is_embedding() {
        return Err(BedrockError::validation(format!(
            "The model {} doesn't support streaming; call InvokeModel instead.",
            resolved.entry.model_id
        ))
        .into());
    }
    let Invocation::Text((inv, responder)) =
        invoke::parse(resolved.entry.format, &body, resolved.target())?
    else {
        return Err(BedrockError::internal("a text body parsed as an embedding").into());
    };
    let generation = start(resolved.text_model()?, &inv).await?;
    let mut resp = stream_response(generation, ProviderChunks(responder), started);
    resp.headers_mut().insert(
        "x-amzn-bedrock-content-type",
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Shapes a generation into stream events, one family at a time.
trait StreamShape: Send + 'static {
    fn start(&mut self, input_tokens: u32) -> Vec<(&'static str, Value)>;
    fn delta(&mut self, text: &str) -> Vec<(&'static str, Value)>;
    fn end(&mut self, done: &Completion) -> Vec<(&'static str, Value)>;
}

/// InvokeModelWithResponseStream: each provider chunk goes out base64-encoded in a
/// `chunk` event, and the last carries `amazon-bedrock-invocationMetrics`.
struct ProviderChunks(Box<dyn TextResponder>);

fn chunk_event(chunk: &Value) -> (&'static str, Value) {
    let bytes = base64::engine::general_purpose::STANDARD.encode(chunk.to_string());
    ("chunk", json!({ "bytes": bytes }))
}

impl StreamShape for ProviderChunks {
    fn start(&mut self, input_tokens: u32) -> Vec<(&'static str, Value)> {
        self.0
            .stream_start(input_tokens)
            .iter()
            .map(chunk_event)
            .collect()
    }
    fn delta(&mut self, text: &str) -> Vec<(&'static str, Value)> {
        self.0.stream_delta(text).iter().map(chunk_event).collect()
    }
    fn end(&mut self, done: &Completion) -> Vec<(&'static str, Value)> {
        let mut chunks = self.0.stream_end(done);
        if let Some(Value::Object(last)) = chunks.last_mut() {
            last.insert(
                INVOCATION_METRICS.into(),
                basalt_providers::invocation_metrics(done),
            );
        }
        chunks.iter().map(chunk_event).collect()
    }
}

/// ConverseStream: Converse events by their union member names.
struct ConverseEvents(ConverseResponder);

fn converse_event(e: &ConverseStreamEvent) -> (&'static str, Value) {
    (e.event_type(), e.payload())
}

impl StreamShape for ConverseEvents {
    fn start(&mut self, _input_tokens: u32) -> Vec<(&'static str, Value)> {
        self.0.start_events().iter().map(converse_event).collect()
    }
    fn delta(&mut self, text: &str) -> Vec<(&'static str, Value)> {
        self.0
            .delta_events(text)
            .iter()
            .map(converse_event)
            .collect()
    }
    fn end(&mut self, done: &Completion) -> Vec<(&'static str, Value)> {
        self.0.end_events(done).iter().map(converse_event).collect()
    }
}

/// Starts a task that feeds `generation` into a new event-stream response. It stops
/// as soon as the client goes away, which drops the generation and frees the model.
fn stream_response(
    generation: GenerationStream,
    shape: impl StreamShape,
    started: Instant,
) -> Response {
    let (resp, events) = stream::response();
    tokio::spawn(pump(generation, shape, events, started));
    resp
}

async fn send_all(events: &stream::EventSender, batch: Vec<(&'static str, Value)>) -> bool {
    for (event_type, payload) in batch {
        if !events.event(event_type, &payload).await {
            return false;
        }
    }
    true
}

async fn pump(
    mut generation: GenerationStream,
    mut shape: impl StreamShape,
    events: stream::EventSender,
    started: Instant,
) {
    if !send_all(&events, shape.start(generation.input_tokens)).await {
        return;
    }
    let mut text = String::new();
    while let Some(event) = generation.next().await {
        match event {
            GenerationEvent::Text(delta) => {
                text.push_str(&delta);
                if !send_all(&events, shape.delta(&delta)).await {
                    return;
                }
            }
            GenerationEvent::Finished(summary) => {
                let done = completion(std::mem::take(&mut text), summary, started);
                send_all(&events, shape.end(&done)).await;
                return;
            }
            GenerationEvent::Failed(e) => {
                let err = engine_error(e);
                events
                    .exception(&BedrockError::new(ErrorCode::ModelStreamError, err.message))
                    .await;
                return;
            }
        }
    }
    events
        .exception(&BedrockError::new(
            ErrorCode::ModelStreamError,
            "The generation ended without a stop reason.",
        ))
        .await;
}

fn parse_converse(
    state: &AppState,
    model_id: &str,
    body: &[u8],
) -> std::result::Result<(Resolved, ConverseRequest, TextInvocation), BedrockError> {
    let req: ConverseRequest = from_json(body)?;
    let resolved = resolve(state, model_id)?;
    resolved.text_model()?;
    if let Some(g) = &req.guardrail_config {
        let id = g
            .get("guardrailIdentifier")
            .and_then(Value::as_str)
            .unwrap_or("");
        reject_guardrail(Some(id), g.get("guardrailVersion").and_then(Value::as_str))?;
    }
    let inv = converse::parse(&req, resolved.target())?;
    Ok((resolved, req, inv))
}

pub async fn converse(
    State(state): State<Arc<AppState>>,
    Label(model_id): Label,
    body: Bytes,
) -> Result<Response> {
    let started = Instant::now();
    let (resolved, req, inv) = parse_converse(&state, &model_id, &body)?;
    let (text, summary) = start(resolved.text_model()?, &inv).await?.collect().await?;
    let done = completion(text, summary, started);
    let responder = ConverseResponder::new(&inv, req.additional_model_response_field_paths);
    Ok(json_body(&responder.converse_response(&done)))
}

pub async fn converse_stream(
    State(state): State<Arc<AppState>>,
    Label(model_id): Label,
    body: Bytes,
) -> Result<Response> {
    let started = Instant::now();
    let (resolved, req, inv) = parse_converse(&state, &model_id, &body)?;
    let generation = start(resolved.text_model()?, &inv).await?;
    let shape = ConverseEvents(ConverseResponder::new(
        &inv,
        req.additional_model_response_field_paths,
    ));
    Ok(stream_response(generation, shape, started))
}

pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    Label(model_id): Label,
    body: Bytes,
) -> Result<Response> {
    let req: CountTokensRequest = from_json(&body)?;
    let resolved = resolve(&state, &model_id)?;
    let tokens = match req.input {
        CountTokensInput::InvokeModel(i) => {
            let body = base64::engine::general_purpose::STANDARD
                .decode(i.body.trim())
                .map_err(|e| {
                    BedrockError::validation(format!(
                        "input.invokeModel.body: not valid base64 ({e})."
                    ))
                })?;
            match invoke::parse(resolved.entry.format, &body, resolved.target())? {
                Invocation::Text((inv, _)) => {
                    let model = resolved.text_model()?;
                    model.count_tokens(&render(model, &inv.prompt)?)
                }
                Invocation::Embed(inv) => {
                    let Loaded::Embed(model) = &resolved.model else {
                        return Err(BedrockError::internal("embedding body on a text model").into());
                    };
                    let mut total = 0;
                    for t in &inv.texts {
                        total += model.count_tokens(t)?;
                    }
                    total
                }
            }
        }
        CountTokensInput::Converse(c) => {
            let model = resolved.text_model()?;
            let inv = converse::parse(&c, resolved.target())?;
            model.count_tokens(&render(model, &inv.prompt)?)
        }
    };
    Ok(json_body(&json!({ "inputTokens": tokens })))
}
