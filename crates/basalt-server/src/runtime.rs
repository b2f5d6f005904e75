//! bedrock-runtime operations: InvokeModel, InvokeModelWithResponseStream,
//! Converse, ConverseStream and CountTokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use basalt_catalog::ModelEntry;
use basalt_engine::{
    ChatTurn, EmbeddingModel, GenerateRequest, GenerationEvent, GenerationStream,
    GenerationSummary, Grammar, Lane, OutputConstraint, SamplingParams, TextModel,
};
use basalt_guardrails::{Content, Qualifier};
use basalt_proto::converse::{
    ConverseRequest, ConverseStreamEvent, CountTokensInput, CountTokensRequest,
};
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_providers::embeddings::EmbedInvocation;
use basalt_providers::invoke::{self, Invocation};
use basalt_providers::{
    converse, converse::ConverseResponder, Completion, OutputMode, Prompt, PromptUsage, Target,
    TextInvocation, TextResponder, ToolDecision, CACHE_POINT, INVOCATION_METRICS,
};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::edge::{engine_error, ApiError, Label};
use crate::guarded::{self, Guard};
use crate::loaded::Loaded;
use crate::provisioned::Provision;
use crate::quotas::Charge;
use crate::{images, stream, AppState};

type Result<T> = std::result::Result<T, ApiError>;

/// A resolved model ID and the loaded model behind it.
pub(crate) struct Resolved {
    pub(crate) entry: ModelEntry,
    pub(crate) model: Loaded,
    vision: bool,
    /// Set when the request names a provisioned model's ARN.
    pub(crate) provision: Option<Provision>,
    /// The caller's account, whose quotas the request counts against.
    pub(crate) account: String,
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
            Loaded::Embed(_) | Loaded::Image(_) => Err(BedrockError::validation(
                "This action doesn't support the model that you provided. Try again with a supported text or chat model.",
            )),
        }
    }
}

fn not_in_account(model_id: &str) -> BedrockError {
    BedrockError::not_found(format!(
        "The model {model_id} does not exist in your account. Check the model identifier and try again."
    ))
}

/// Resolves a runtime `modelId` for a caller of `account`: a model ID, inference
/// profile, or ARN, including the ARN of a provisioned throughput of that account (by
/// its ID or its name).
pub(crate) fn resolve(
    state: &AppState,
    account: &str,
    model_id: &str,
) -> std::result::Result<Resolved, BedrockError> {
    // Another account's imported model is not the caller's to use: named by its ARN,
    // it does not exist in the caller's account. (Provisioned throughputs are looked up
    // among the caller's own.)
    if model_id.contains(":imported-model/")
        && crate::authorization::other_account(model_id, account)
    {
        return Err(not_in_account(model_id));
    }
    let provision = match &state.provisioned {
        Some(p) => p.lookup(state, account, model_id)?,
        None => None,
    };
    let lookup = || match &provision {
        Some(p) => state.catalog.resolve(&p.model_id),
        None => state.catalog.resolve(model_id),
    };
    let mut found = lookup();
    // A model imported beside the running server (`basalt models import`) is picked up
    // the first time a request misses it.
    let missing = match &found {
        Ok(e) => e.local_model.is_none(),
        Err(e) => e.code == ErrorCode::ResourceNotFound,
    };
    if missing
        && state
            .model_imports
            .as_ref()
            .is_some_and(|i| i.refresh(&state.catalog, &state.models))
    {
        found = lookup();
    }
    let entry = found?;
    if let Some((_, id)) = model_id.rsplit_once(":imported-model/") {
        // The ARN may name the caller's account and another account's model ID.
        let owner = state
            .catalog
            .imported_model(id)
            .map(|m| m.account.unwrap_or_else(|| state.account_id.clone()));
        if owner.as_deref() != Some(account) {
            return Err(not_in_account(model_id));
        }
    }
    let local = entry.local()?;
    let model = state.models.get(local)?;
    let vision = state.catalog.local_model(local).is_some_and(|m| m.vision);
    Ok(Resolved {
        entry,
        model,
        vision,
        provision,
        account: account.to_string(),
    })
}

/// Admits a generation against the caller's on-demand quotas (requests made through a
/// provisioned model bypass them) and starts it.
async fn start_metered(
    state: &AppState,
    resolved: &Resolved,
    inv: &TextInvocation,
) -> std::result::Result<(GenerationStream, Charge), BedrockError> {
    let model = resolved.text_model()?;
    let charge = if resolved.provision.is_some() {
        Charge::free()
    } else {
        let (prompt, _) = take_cache_points(&render(model, &inv.prompt)?);
        let input = model.count_tokens(&prompt) as u64;
        state.quotas.admit(
            &resolved.account,
            &resolved.entry,
            input,
            inv.max_tokens.into(),
        )?
    };
    let lane = match &resolved.provision {
        Some(p) => Lane::Reserved(Arc::from(p.arn.as_str())),
        None => Lane::Shared,
    };
    Ok((start(model, inv, lane).await?, charge))
}

/// The tokens a finished generation counts against a token quota.
fn quota_tokens(summary: &GenerationSummary) -> u64 {
    u64::from(
        summary
            .input_tokens
            .saturating_sub(summary.cache_read_tokens),
    ) + u64::from(summary.output_tokens)
}

pub(crate) fn model_timeout(limit: Duration) -> BedrockError {
    BedrockError::new(
        ErrorCode::ModelTimeout,
        format!(
            "Model has timed out in processing the request (over this server's limit of {:.1} s). Try your request again, or raise --model-timeout-s.",
            limit.as_secs_f64()
        ),
    )
}

/// Waits for the whole generation, within the model time limit, and settles its quota.
async fn finish(
    state: &AppState,
    generation: GenerationStream,
    charge: Charge,
) -> std::result::Result<(String, GenerationSummary), BedrockError> {
    let collected = match state.model_timeout {
        // Dropping the stream on timeout makes the engine abandon the generation.
        Some(limit) => tokio::time::timeout(limit, generation.collect())
            .await
            .map_err(|_| model_timeout(limit))?,
        None => generation.collect().await,
    };
    let (text, summary) = collected.map_err(engine_error)?;
    charge.settle(quota_tokens(&summary));
    Ok((text, summary))
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
    Ok(())
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
pub(crate) async fn start(
    model: &TextModel,
    inv: &TextInvocation,
    lane: Lane,
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
                ToolDecision::Auto { question } => {
                    wants_tool(model, question, lane.clone()).await?
                }
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
            lane,
        })
        .map_err(engine_error)
}

/// The model's own Yes/No answer to whether a tool call is needed.
async fn wants_tool(
    model: &TextModel,
    question: &Prompt,
    lane: Lane,
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
            lane,
        })
        .map_err(engine_error)?
        .collect()
        .await
        .map_err(engine_error)?;
    Ok(answer == "Yes")
}

pub(crate) fn completion(
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

/// A finished generation as a Completion, counted in the metrics under `model`.
fn counted_completion(
    state: &AppState,
    model: &str,
    text: String,
    summary: GenerationSummary,
    started: Instant,
) -> Completion {
    state.metrics.generation(
        model,
        summary.input_tokens,
        summary.output_tokens,
        (summary.output_tokens > 0).then_some(summary.first_token_ms),
        summary.total_ms,
    );
    completion(text, summary, started)
}

/// The reply to a prompt the guardrail blocked: the model never ran.
fn blocked_completion(text: String, started: Instant) -> Completion {
    Completion {
        text,
        stop_reason: basalt_engine::StopReason::EndOfTurn,
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        latency_ms: started.elapsed().as_millis() as u64,
        first_byte_ms: started.elapsed().as_millis() as u64,
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

pub(crate) fn insert_number(resp: &mut Response, name: &'static str, value: u64) {
    resp.headers_mut().insert(name, HeaderValue::from(value));
}

pub async fn invoke_model(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(model_id): Label,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let started = Instant::now();
    check_invoke_headers(&headers, "accept", &body)?;
    let resolved = resolve(&state, &caller.account, &model_id)?;
    let mut guard = Guard::from_headers(&state, &caller.account, &headers)?;
    if let Some(g) = &mut guard {
        g.read_body_config(&body)?;
    }
    match invoke::parse(resolved.entry.format, &body, resolved.target())? {
        Invocation::Text((mut inv, responder)) => {
            resolved.text_model()?;
            let input_check = match &mut guard {
                Some(g) => Some(g.check_prompt(&state, &mut inv.prompt, Vec::new()).await?),
                None => None,
            };
            let mut output_checks = Vec::new();
            let done = match (&guard, &input_check) {
                (Some(_), Some(input)) if input.blocked => {
                    blocked_completion(guarded::replacement(input), started)
                }
                _ => {
                    let (generation, charge) = start_metered(&state, &resolved, &inv).await?;
                    let (text, summary) = finish(&state, generation, charge).await?;
                    let mut done = counted_completion(
                        &state,
                        &resolved.entry.model_id,
                        text,
                        summary,
                        started,
                    );
                    if let Some(g) = &guard {
                        let check = g.check_output(&state, &done.text).await?;
                        if check.intervened() {
                            done.text = guarded::replacement(&check);
                        }
                        output_checks.push(check);
                    }
                    done
                }
            };
            let mut resp = guarded::invoke_response(
                guard.as_ref(),
                input_check.as_ref(),
                &output_checks,
                responder.response(&done),
            );
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
            if guard.is_some() {
                return Err(BedrockError::validation(
                    "Guardrails apply to text generation; this model returns embeddings.",
                )
                .into());
            }
            let Loaded::Embed(model) = &resolved.model else {
                return Err(BedrockError::internal(
                    "the catalog maps an embedding body to a text model",
                )
                .into());
            };
            let charge = if resolved.provision.is_some() {
                Charge::free()
            } else {
                let mut input = 0u64;
                for t in &inv.texts {
                    input += model.count_tokens(t)? as u64;
                }
                state
                    .quotas
                    .admit(&resolved.account, &resolved.entry, input, 0)?
            };
            let (body, tokens) = embed(model, inv).await?;
            charge.settle(tokens as u64);
            let elapsed = started.elapsed().as_millis() as u64;
            let input = u32::try_from(tokens).unwrap_or(u32::MAX);
            state
                .metrics
                .generation(&resolved.entry.model_id, input, 0, None, elapsed);
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
        Invocation::Image(inv) => Ok(images::invoke(&state, &resolved, inv, guard, started).await?),
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
    Extension(caller): Extension<Caller>,
    Label(model_id): Label,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let started = Instant::now();
    check_invoke_headers(&headers, "x-amzn-bedrock-accept", &body)?;
    let resolved = resolve(&state, &caller.account, &model_id)?;
    if resolved.entry.format.is_embedding() || resolved.entry.format.is_image() {
        return Err(BedrockError::validation(format!(
            "The model {} doesn't support streaming; call InvokeModel instead.",
            resolved.entry.model_id
        ))
        .into());
    }
    let mut guard = Guard::from_headers(&state, &caller.account, &headers)?;
    if let Some(g) = &mut guard {
        g.read_body_config(&body)?;
    }
    let Invocation::Text((mut inv, responder)) =
        invoke::parse(resolved.entry.format, &body, resolved.target())?
    else {
        return Err(BedrockError::internal("a text body parsed as an embedding").into());
    };
    let screening = match guard.take() {
        Some(mut g) => {
            let input = g.check_prompt(&state, &mut inv.prompt, Vec::new()).await?;
            Some(Screening { guard: g, input })
        }
        None => None,
    };
    let shape = ProviderChunks {
        responder,
        guardrail: None,
    };
    let mut resp = guarded_stream(&state, &resolved, &inv, shape, screening, started).await?;
    resp.headers_mut().insert(
        "x-amzn-bedrock-content-type",
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Work a stream does once its reply is complete, whose events go out before `end`'s.
pub(crate) type Settle = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<Vec<(&'static str, Value)>, BedrockError>,
            > + Send,
    >,
>;

/// Shapes a generation into stream events, one family at a time.
pub(crate) trait StreamShape: Send + 'static {
    fn start(&mut self, prompt: &PromptUsage) -> Vec<(&'static str, Value)>;
    fn delta(&mut self, text: &str) -> Vec<(&'static str, Value)>;
    fn end(&mut self, done: &Completion) -> Vec<(&'static str, Value)>;
    /// The error as this API's event union carries it: each union has its own
    /// exception members (ConverseStream's has no modelTimeoutException).
    fn stream_error(&self, err: BedrockError) -> BedrockError;
    /// Work after the reply is complete and judged (RetrieveAndGenerateStream cites it).
    fn settle(&mut self) -> Option<Settle> {
        None
    }
    /// Records a guardrail's verdict on the prompt and the reply (and the trace, in this
    /// API's shape), which `end` reports.
    fn guardrail(
        &mut self,
        s: &Screening,
        outputs: &[basalt_guardrails::Evaluation],
        model_output: Option<&str>,
    );
}

/// InvokeModelWithResponseStream: each provider chunk goes out base64-encoded in a
/// `chunk` event, and the last carries `amazon-bedrock-invocationMetrics` (and the
/// guardrail's action, when one is attached).
struct ProviderChunks {
    responder: Box<dyn TextResponder>,
    guardrail: Option<(bool, Option<Value>)>,
}

fn chunk_event(chunk: &Value) -> (&'static str, Value) {
    let bytes = base64::engine::general_purpose::STANDARD.encode(chunk.to_string());
    ("chunk", json!({ "bytes": bytes }))
}

impl StreamShape for ProviderChunks {
    fn stream_error(&self, err: BedrockError) -> BedrockError {
        err
    }
    fn start(&mut self, prompt: &PromptUsage) -> Vec<(&'static str, Value)> {
        self.responder
            .stream_start(prompt)
            .iter()
            .map(chunk_event)
            .collect()
    }
    fn delta(&mut self, text: &str) -> Vec<(&'static str, Value)> {
        self.responder
            .stream_delta(text)
            .iter()
            .map(chunk_event)
            .collect()
    }
    fn end(&mut self, done: &Completion) -> Vec<(&'static str, Value)> {
        let mut chunks = self.responder.stream_end(done);
        if let Some(Value::Object(last)) = chunks.last_mut() {
            last.insert(
                INVOCATION_METRICS.into(),
                basalt_providers::invocation_metrics(done),
            );
            if let Some((intervened, trace)) = self.guardrail.take() {
                last.insert(
                    guarded::ACTION_FIELD.into(),
                    json!(if intervened { "INTERVENED" } else { "NONE" }),
                );
                if let Some(trace) = trace {
                    last.insert(guarded::TRACE_FIELD.into(), trace);
                }
            }
        }
        chunks.iter().map(chunk_event).collect()
    }
    fn guardrail(
        &mut self,
        s: &Screening,
        outputs: &[basalt_guardrails::Evaluation],
        _model_output: Option<&str>,
    ) {
        self.guardrail = Some((
            s.intervened(outputs),
            s.guard.invoke_trace(&s.input, outputs),
        ));
    }
}

/// ConverseStream: Converse events by their union member names.
struct ConverseEvents {
    responder: ConverseResponder,
    guardrail: Option<(bool, Option<Value>)>,
}

fn converse_event(e: &ConverseStreamEvent) -> (&'static str, Value) {
    (e.event_type(), e.payload())
}

impl StreamShape for ConverseEvents {
    fn stream_error(&self, mut err: BedrockError) -> BedrockError {
        if err.code == ErrorCode::ModelTimeout {
            err.code = ErrorCode::ModelStreamError;
        }
        err
    }
    fn start(&mut self, _prompt: &PromptUsage) -> Vec<(&'static str, Value)> {
        self.responder
            .start_events()
            .iter()
            .map(converse_event)
            .collect()
    }
    fn delta(&mut self, text: &str) -> Vec<(&'static str, Value)> {
        self.responder
            .delta_events(text)
            .iter()
            .map(converse_event)
            .collect()
    }
    fn end(&mut self, done: &Completion) -> Vec<(&'static str, Value)> {
        let mut events: Vec<(&'static str, Value)> = self
            .responder
            .end_events(done)
            .iter()
            .map(converse_event)
            .collect();
        if let Some((intervened, trace)) = self.guardrail.take() {
            for (kind, payload) in &mut events {
                match *kind {
                    "messageStop" if intervened => {
                        payload["stopReason"] = json!("guardrail_intervened");
                    }
                    "metadata" => {
                        if let Some(trace) = &trace {
                            payload["trace"] = trace.clone();
                        }
                    }
                    _ => {}
                }
            }
        }
        events
    }
    fn guardrail(
        &mut self,
        s: &Screening,
        outputs: &[basalt_guardrails::Evaluation],
        model_output: Option<&str>,
    ) {
        let trace = s.guard.converse_trace(&s.input, outputs, model_output);
        self.guardrail = Some((s.intervened(outputs), trace));
    }
}

/// A guardrail attached to a stream, with its verdict on the prompt.
pub(crate) struct Screening {
    guard: Guard,
    input: basalt_guardrails::Evaluation,
}

impl Screening {
    pub(crate) fn intervened(&self, outputs: &[basalt_guardrails::Evaluation]) -> bool {
        self.input.intervened()
            || outputs
                .iter()
                .any(basalt_guardrails::Evaluation::intervened)
    }
}

/// Starts the generation (unless the guardrail blocked the prompt) and a task that
/// feeds it into a new event-stream response.
async fn guarded_stream(
    state: &Arc<AppState>,
    resolved: &Resolved,
    inv: &TextInvocation,
    shape: impl StreamShape,
    screening: Option<Screening>,
    started: Instant,
) -> std::result::Result<Response, BedrockError> {
    let (resp, events) = stream::response();
    match screening {
        Some(s) if s.input.blocked => {
            tokio::spawn(send_blocked(shape, s, events, started));
        }
        screening => {
            let (generation, charge) = start_metered(state, resolved, inv).await?;
            tokio::spawn(pump(
                generation,
                shape,
                events,
                started,
                screening,
                (Arc::clone(state), resolved.entry.model_id.clone(), charge),
            ));
        }
    }
    Ok(resp)
}

async fn send_all(events: &stream::EventSender, batch: Vec<(&'static str, Value)>) -> bool {
    for (event_type, payload) in batch {
        if !events.event(event_type, &payload).await {
            return false;
        }
    }
    true
}

/// The stream's last events: the shape's settling work, then its end.
async fn send_end(shape: &mut impl StreamShape, events: &stream::EventSender, done: &Completion) {
    if let Some(work) = shape.settle() {
        match work.await {
            Ok(batch) => {
                if !send_all(events, batch).await {
                    return;
                }
            }
            Err(e) => {
                events.exception(&shape.stream_error(e)).await;
                return;
            }
        }
    }
    send_all(events, shape.end(done)).await;
}

/// The whole stream for a blocked prompt: the blocked message, then the end.
async fn send_blocked(
    mut shape: impl StreamShape,
    s: Screening,
    events: stream::EventSender,
    started: Instant,
) {
    let done = blocked_completion(guarded::replacement(&s.input), started);
    shape.guardrail(&s, &[], None);
    let mut batch = shape.start(&PromptUsage::default());
    batch.extend(shape.delta(&done.text));
    if send_all(&events, batch).await {
        send_end(&mut shape, &events, &done).await;
    }
}

async fn pump(
    mut generation: GenerationStream,
    mut shape: impl StreamShape,
    events: stream::EventSender,
    started: Instant,
    screening: Option<Screening>,
    (state, model_id, charge): (Arc<AppState>, String, Charge),
) {
    let deadline = state
        .model_timeout
        .map(|limit| (Instant::now() + limit, limit));
    // The start goes out with the first event: only then are cache reads and writes known.
    let mut start_sent = false;
    let mut screen = guarded::StreamScreen::new();
    let mut text = String::new();
    let mut deltas = 0u32;
    let mut prompt = PromptUsage {
        input_tokens: generation.input_tokens,
        ..PromptUsage::default()
    };
    let mut first_token_ms = 0;
    loop {
        let next = match deadline {
            Some((at, limit)) => {
                match tokio::time::timeout_at(at.into(), generation.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // Returning drops the generation, which the engine then abandons.
                        events
                            .exception(&shape.stream_error(model_timeout(limit)))
                            .await;
                        return;
                    }
                }
            }
            None => generation.next().await,
        };
        let Some(event) = next else { break };
        if !start_sent {
            if let GenerationEvent::Prefilled {
                cache_read_tokens,
                cache_write_tokens,
            } = &event
            {
                prompt.cache_read_tokens = *cache_read_tokens;
                prompt.cache_write_tokens = *cache_write_tokens;
                first_token_ms = started.elapsed().as_millis() as u64;
            }
            start_sent = true;
            if !send_all(&events, shape.start(&prompt)).await {
                return;
            }
        }
        let (delta, finished) = match event {
            GenerationEvent::Prefilled { .. } => continue,
            GenerationEvent::Text(delta) => (delta, None),
            GenerationEvent::Finished(summary) => (String::new(), Some(summary)),
            GenerationEvent::Failed(e) => {
                let err = engine_error(e);
                let err = BedrockError::new(ErrorCode::ModelStreamError, err.message);
                events.exception(&shape.stream_error(err)).await;
                return;
            }
        };
        text.push_str(&delta);
        deltas += u32::from(!delta.is_empty());
        let blocked = match &screening {
            None => {
                if finished.is_none() && !send_all(&events, shape.delta(&delta)).await {
                    return;
                }
                None
            }
            Some(s) => {
                if s.guard.asynchronous
                    && !delta.is_empty()
                    && !send_all(&events, shape.delta(&delta)).await
                {
                    return;
                }
                let release = match screen
                    .feed(&s.guard, &state, &delta, finished.is_some())
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        events.exception(&shape.stream_error(e)).await;
                        return;
                    }
                };
                match release {
                    Some(guarded::Release::Blocked(message)) => Some(message),
                    Some(guarded::Release::Text(chunk)) if !s.guard.asynchronous => {
                        if !send_all(&events, shape.delta(&chunk)).await {
                            return;
                        }
                        None
                    }
                    _ => None,
                }
            }
        };
        if blocked.is_none() && finished.is_none() {
            continue;
        }
        if let Some(message) = &blocked {
            if !send_all(&events, shape.delta(message)).await {
                return;
            }
        }
        // A blocked reply stops here: dropping the generation frees the model.
        let summary = finished.unwrap_or_else(|| GenerationSummary {
            stop_reason: basalt_engine::StopReason::EndOfTurn,
            input_tokens: prompt.input_tokens,
            // About one text event per sampled token (stop matching can merge some).
            output_tokens: deltas,
            cache_read_tokens: prompt.cache_read_tokens,
            cache_write_tokens: prompt.cache_write_tokens,
            first_token_ms,
            total_ms: started.elapsed().as_millis() as u64,
        });
        charge.settle(quota_tokens(&summary));
        let done = counted_completion(
            &state,
            &model_id,
            std::mem::take(&mut text),
            summary,
            started,
        );
        if let Some(s) = &screening {
            shape.guardrail(s, &screen.outputs, Some(&done.text));
        }
        send_end(&mut shape, &events, &done).await;
        return;
    }
    let err = BedrockError::new(
        ErrorCode::ModelStreamError,
        "The generation ended without a stop reason.",
    );
    events.exception(&shape.stream_error(err)).await;
}

/// The request's guardContent blocks (messages and system), as guardrail contents.
fn guard_contents(req: &ConverseRequest) -> Vec<Content> {
    let blocks = req
        .messages
        .iter()
        .flat_map(|m| m.content.iter())
        .filter_map(|b| match b {
            basalt_proto::converse::ContentBlock::GuardContent(g) => Some(g),
            _ => None,
        })
        .chain(req.system.iter().filter_map(|b| match b {
            basalt_proto::converse::SystemContentBlock::GuardContent(g) => Some(g),
            _ => None,
        }));
    blocks
        .filter_map(|g| {
            let text = g.get("text")?;
            let qualifiers = text
                .get("qualifiers")
                .and_then(Value::as_array)
                .map(|qs| {
                    qs.iter()
                        .filter_map(|q| q.as_str().and_then(Qualifier::parse))
                        .collect()
                })
                .unwrap_or_default();
            Some(Content {
                text: text.get("text")?.as_str()?.to_string(),
                qualifiers,
            })
        })
        .collect()
}

struct ConverseCall {
    resolved: Resolved,
    req: ConverseRequest,
    inv: TextInvocation,
    screening: Option<Screening>,
}

async fn parse_converse(
    state: &AppState,
    account: &str,
    model_id: &str,
    body: &[u8],
) -> std::result::Result<ConverseCall, BedrockError> {
    let req: ConverseRequest = from_json(body)?;
    let resolved = resolve(state, account, model_id)?;
    resolved.text_model()?;
    let guard = req
        .guardrail_config
        .as_ref()
        .map(|g| Guard::from_converse(state, account, g))
        .transpose()?;
    let mut inv = converse::parse(&req, resolved.target())?;
    let screening = match guard {
        Some(mut guard) => {
            let input = guard
                .check_prompt(state, &mut inv.prompt, guard_contents(&req))
                .await?;
            Some(Screening { guard, input })
        }
        None => None,
    };
    Ok(ConverseCall {
        resolved,
        req,
        inv,
        screening,
    })
}

pub async fn converse(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(model_id): Label,
    body: Bytes,
) -> Result<Response> {
    Ok(json_body(
        &converse_value(&state, &caller.account, &model_id, &body).await?,
    ))
}

/// Runs a Converse request and returns the response body: the Converse operation, and
/// RetrieveAndGenerate's generation step.
pub(crate) async fn converse_value(
    state: &AppState,
    account: &str,
    model_id: &str,
    body: &[u8],
) -> std::result::Result<Value, BedrockError> {
    let started = Instant::now();
    let call = parse_converse(state, account, model_id, body).await?;
    let responder =
        ConverseResponder::new(&call.inv, call.req.additional_model_response_field_paths);
    let Some(s) = &call.screening else {
        let (generation, charge) = start_metered(state, &call.resolved, &call.inv).await?;
        let (text, summary) = finish(state, generation, charge).await?;
        let done = counted_completion(state, &call.resolved.entry.model_id, text, summary, started);
        return serde_json::to_value(responder.converse_response(&done))
            .map_err(|e| BedrockError::internal(e.to_string()));
    };
    if s.input.blocked {
        let done = blocked_completion(guarded::replacement(&s.input), started);
        let mut body = serde_json::to_value(responder.converse_response(&done))
            .map_err(|e| BedrockError::internal(e.to_string()))?;
        body["stopReason"] = json!("guardrail_intervened");
        if let Some(trace) = s.guard.converse_trace(&s.input, &[], None) {
            body["trace"] = trace;
        }
        return Ok(body);
    }
    let (generation, charge) = start_metered(state, &call.resolved, &call.inv).await?;
    let (text, summary) = finish(state, generation, charge).await?;
    let mut done = counted_completion(state, &call.resolved.entry.model_id, text, summary, started);
    let model_output = done.text.clone();
    let check = s.guard.check_output(state, &done.text).await?;
    if check.intervened() {
        done.text = guarded::replacement(&check);
    }
    let mut body = serde_json::to_value(responder.converse_response(&done))
        .map_err(|e| BedrockError::internal(e.to_string()))?;
    if check.intervened() || s.input.intervened() {
        body["stopReason"] = json!("guardrail_intervened");
    }
    let outputs = [check];
    if let Some(trace) = s
        .guard
        .converse_trace(&s.input, &outputs, Some(&model_output))
    {
        body["trace"] = trace;
    }
    Ok(body)
}

pub async fn converse_stream(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(model_id): Label,
    body: Bytes,
) -> Result<Response> {
    let started = Instant::now();
    let call = parse_converse(&state, &caller.account, &model_id, &body).await?;
    let shape = ConverseEvents {
        responder: ConverseResponder::new(
            &call.inv,
            call.req.additional_model_response_field_paths,
        ),
        guardrail: None,
    };
    Ok(guarded_stream(
        &state,
        &call.resolved,
        &call.inv,
        shape,
        call.screening,
        started,
    )
    .await?)
}

/// A Converse request body generated into another API's event stream, shaped by
/// `shape`: RetrieveAndGenerateStream's generation step.
pub(crate) async fn converse_stream_with(
    state: &Arc<AppState>,
    account: &str,
    model_id: &str,
    body: &[u8],
    shape: impl StreamShape,
) -> std::result::Result<Response, BedrockError> {
    let started = Instant::now();
    let call = parse_converse(state, account, model_id, body).await?;
    guarded_stream(
        state,
        &call.resolved,
        &call.inv,
        shape,
        call.screening,
        started,
    )
    .await
}

pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(model_id): Label,
    body: Bytes,
) -> Result<Response> {
    let req: CountTokensRequest = from_json(&body)?;
    let resolved = resolve(&state, &caller.account, &model_id)?;
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
                Invocation::Image(_) => {
                    return Err(BedrockError::validation(
                        "The provided model doesn't support counting tokens.",
                    )
                    .into())
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
