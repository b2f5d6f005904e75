//! bedrock-agent-runtime over knowledge bases: Retrieve, RetrieveAndGenerate and
//! RetrieveAndGenerateStream. Generation goes through the Converse path, so quotas,
//! timeouts and guardrails apply as they do to Converse.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::HeaderValue;
use axum::response::Response;
use basalt_chunking::ChunkingStrategy;
use basalt_index::{Hit, SearchRequest, DATA_SOURCE_ID_KEY};
use basalt_knowledge::grounding::{self, CitedSpan, Rendered};
use basalt_knowledge::ingestion::Ingestor;
use basalt_knowledge::resources::{check_id, KnowledgeBase, CURRENT};
use basalt_knowledge::retrieval::{self, parse_settings, parse_token, query_text, Settings};
use basalt_knowledge::vectors::VectorStore;
use basalt_knowledge::Embedder;
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_providers::{Completion, PromptUsage};
use basalt_store::Key;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::edge::{ApiError, Label};
use crate::knowledge_bases::{caller_kb, ingestor, load_ds};
use crate::runtime::{
    converse_stream_with, converse_value, json_body, Screening, Settle, StreamShape,
};
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

/// Results one Retrieve may page through, as numberOfResults caps a single page.
const MAX_TOTAL_RESULTS: usize = 100;
const SESSION_KIND: &str = "kb-session";
/// Turns of a session replayed to the model.
const SESSION_TURNS: usize = 5;
/// Inline documents one EXTERNAL_SOURCES request may carry.
const MAX_EXTERNAL_SOURCES: usize = 5;
pub const SESSION_HEADER: &str = "x-amzn-bedrock-knowledge-base-session-id";

/// The knowledge base named by a 10-character ID or its ARN, once ACTIVE.
fn active_kb(
    state: &AppState,
    caller: &Caller,
    identifier: &str,
) -> std::result::Result<KnowledgeBase, BedrockError> {
    let id = identifier
        .rsplit_once(":knowledge-base/")
        .map(|(_, id)| id)
        .unwrap_or(identifier);
    if crate::authorization::other_account(identifier, &caller.account) {
        // Another account's knowledge base is not the caller's to query.
        check_id("knowledgeBaseId", id)?;
        return Err(BedrockError::not_found(format!(
            "Knowledge base with id {id} does not exist."
        )));
    }
    let kb = caller_kb(state, caller, id)?;
    if kb.status != "ACTIVE" {
        return Err(BedrockError::new(
            ErrorCode::Conflict,
            format!(
                "Knowledge base {} is {}; it can be queried once it is ACTIVE.",
                kb.knowledge_base_id, kb.status
            ),
        ));
    }
    Ok(kb)
}

async fn embed_one(
    embedder: &Arc<dyn Embedder>,
    text: String,
) -> std::result::Result<Vec<f32>, BedrockError> {
    let model = Arc::clone(embedder);
    tokio::task::spawn_blocking(move || model.embed(&[text]))
        .await
        .map_err(|e| BedrockError::internal(format!("embedding task failed: {e}")))?
        .map_err(|e| {
            BedrockError::new(
                ErrorCode::DependencyFailed,
                format!("The embedding model failed: {e}"),
            )
        })?
        .pop()
        .ok_or_else(|| BedrockError::internal("the embedding model returned nothing"))
}

/// Searches the knowledge base. Children of one hierarchical parent come back as
/// that parent, once, at the best child's score.
async fn search(
    ingestor: &Ingestor,
    kb: &KnowledgeBase,
    (embedder, store): &(Arc<dyn Embedder>, VectorStore),
    query: &str,
    settings: &Settings,
    offset: usize,
    limit: usize,
) -> std::result::Result<Vec<Hit>, BedrockError> {
    let vector = embed_one(embedder, query.to_string()).await?;
    let hits = store
        .search(SearchRequest {
            vector,
            text: query.to_string(),
            search_type: settings.search_type,
            filter: settings.filter.clone(),
            limit,
            offset,
        })
        .await
        .map_err(|e| BedrockError::internal(format!("The index failed: {e}")))?;
    let mut hierarchical: HashMap<String, bool> = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(hits.len());
    for hit in hits {
        let ds_id = hit
            .metadata
            .get(DATA_SOURCE_ID_KEY)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let parents = match hierarchical.get(&ds_id) {
            Some(&p) => p,
            None => {
                let p = load_ds(ingestor, &kb.knowledge_base_id, &ds_id)
                    .ok()
                    .and_then(|ds| ds.chunking().ok())
                    .is_some_and(|c| c.chunking_strategy == ChunkingStrategy::Hierarchical);
                hierarchical.insert(ds_id, p);
                p
            }
        };
        if !parents || seen.insert((hit.document_id.clone(), hit.text.clone())) {
            out.push(hit);
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetrieveRequest {
    retrieval_query: Value,
    retrieval_configuration: Option<Value>,
    guardrail_configuration: Option<Value>,
    next_token: Option<String>,
}

pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(knowledge_base_id): Label,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let req: RetrieveRequest = from_json(&body)?;
    if req.guardrail_configuration.is_some() {
        return Err(BedrockError::validation(
            "guardrailConfiguration on Retrieve is not supported by this server yet; apply the guardrail with ApplyGuardrail.",
        )
        .into());
    }
    let kb = active_kb(&state, &caller, &knowledge_base_id)?;
    let query = query_text(&req.retrieval_query, "retrievalQuery")?;
    let settings = parse_settings(
        req.retrieval_configuration.as_ref(),
        "retrievalConfiguration",
    )?;
    let offset = parse_token(req.next_token.as_deref())?;
    let limit = settings
        .number_of_results
        .min(MAX_TOTAL_RESULTS.saturating_sub(offset));
    let loaded = ingestor.loaded_now(&kb).await?;
    let hits = search(ingestor, &kb, &loaded, &query, &settings, offset, limit + 1).await?;
    let more = hits.len() > limit;
    let results: Vec<Value> = hits.iter().take(limit).map(retrieval::result).collect();
    let mut response = json!({ "retrievalResults": results });
    if more && offset + limit < MAX_TOTAL_RESULTS {
        response["nextToken"] = json!(retrieval::next_token(offset + limit));
    }
    Ok(json_body(&response))
}

// ---- RetrieveAndGenerate ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RagRequest {
    input: Value,
    session_id: Option<String>,
    retrieve_and_generate_configuration: Option<Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Session {
    turns: Vec<(String, String)>,
}

/// What the answer was grounded in.
struct Grounding {
    hits: Vec<Hit>,
    embedder: Arc<dyn Embedder>,
}

/// A request retrieved for and ready to generate: the model, the Converse body of the
/// generation step, and what is needed to conclude once the answer is known.
struct Prepared {
    model_arn: String,
    converse: Vec<u8>,
    guarded: bool,
    /// No sessionId was given: this call starts the session.
    new_session: bool,
    conclusion: Conclusion,
}

/// What turns a generated answer into citations and a session turn.
struct Conclusion {
    ingestor: Arc<Ingestor>,
    session_id: String,
    session: Session,
    query: String,
    grounding: Grounding,
}

impl Conclusion {
    fn save_session(&self) -> std::result::Result<(), BedrockError> {
        self.ingestor
            .store()
            .put(&session_key(&self.session_id), &self.session)
            .map_err(store_error)
    }

    /// Records the turn in the session and cites the answer (unless the guardrail
    /// intervened): the Citation objects, spans in characters of `text`.
    async fn finish(
        mut self,
        text: String,
        intervened: bool,
    ) -> std::result::Result<Vec<Value>, BedrockError> {
        self.session.turns.push((self.query.clone(), text.clone()));
        self.save_session()?;
        if intervened {
            return Ok(Vec::new());
        }
        let model = Arc::clone(&self.grounding.embedder);
        let texts: Vec<String> = self.grounding.hits.iter().map(|h| h.text.clone()).collect();
        let spans =
            tokio::task::spawn_blocking(move || grounding::cite(&text, &texts, model.as_ref()))
                .await
                .map_err(|e| BedrockError::internal(format!("citation task failed: {e}")))?
                .map_err(|e| {
                    BedrockError::new(
                        ErrorCode::DependencyFailed,
                        format!("The embedding model failed: {e}"),
                    )
                })?;
        Ok(spans
            .iter()
            .map(|s| citation(s, &self.grounding.hits))
            .collect())
    }
}

fn check_session_id(id: &str) -> std::result::Result<(), BedrockError> {
    let ok = (2..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BedrockError::constraint(
            "sessionId",
            id,
            "Member must satisfy regular expression pattern: [0-9a-zA-Z._:-]+ and have length between 2 and 100",
        ))
    }
}

fn session_key(id: &str) -> Key<'_> {
    Key {
        kind: SESSION_KIND,
        id,
        version: CURRENT,
    }
}

fn store_error(e: basalt_store::StoreError) -> BedrockError {
    BedrockError::internal(format!("The session store failed: {e}"))
}

fn str_at<'a>(
    v: &'a Value,
    path: &str,
    member: &str,
) -> std::result::Result<&'a str, BedrockError> {
    v.get(member)
        .and_then(Value::as_str)
        .ok_or_else(|| BedrockError::validation(format!("{path}.{member} is required.")))
}

/// The Converse body for the generation step. With a guardrail, the search results
/// and the query go as qualified guardContent (grounding_source, and query plus
/// guard_content), so that the guardrail checks the query and scores the answer's
/// grounding and relevance against them, as Bedrock does.
fn converse_body(
    system: &Rendered,
    history: &[(String, String)],
    query: &str,
    generation: Option<&Value>,
) -> std::result::Result<Value, BedrockError> {
    let mut messages = Vec::new();
    for (user, assistant) in history {
        messages.push(json!({"role": "user", "content": [{"text": user}]}));
        messages.push(json!({"role": "assistant", "content": [{"text": assistant}]}));
    }
    let guardrail = generation.and_then(|g| g.get("guardrailConfiguration"));
    let (system_blocks, question) = if guardrail.is_some() {
        let mut blocks = Vec::new();
        if !system.before.trim().is_empty() {
            blocks.push(json!({"text": system.before}));
        }
        blocks.push(json!({"guardContent": {"text": {
            "text": system.results, "qualifiers": ["grounding_source"]}}}));
        if !system.after.trim().is_empty() {
            blocks.push(json!({"text": system.after}));
        }
        let question = json!({"guardContent": {"text": {
            "text": query, "qualifiers": ["query", "guard_content"]}}});
        (blocks, question)
    } else {
        (
            vec![json!({"text": system.whole()})],
            json!({"text": query}),
        )
    };
    messages.push(json!({"role": "user", "content": [question]}));
    let mut body = json!({ "messages": messages, "system": system_blocks });
    let Some(generation) = generation else {
        return Ok(body);
    };
    if let Some(text) = generation
        .get("inferenceConfig")
        .and_then(|c| c.get("textInferenceConfig"))
    {
        let mut config = Map::new();
        for member in ["temperature", "topP", "maxTokens", "stopSequences"] {
            if let Some(v) = text.get(member) {
                config.insert(member.into(), v.clone());
            }
        }
        body["inferenceConfig"] = Value::Object(config);
    }
    if let Some(g) = guardrail {
        let path = "generationConfiguration.guardrailConfiguration";
        body["guardrailConfig"] = json!({
            "guardrailIdentifier": str_at(g, path, "guardrailId")?,
            "guardrailVersion": str_at(g, path, "guardrailVersion")?,
        });
    }
    if let Some(extra) = generation.get("additionalModelRequestFields") {
        body["additionalModelRequestFields"] = extra.clone();
    }
    Ok(body)
}

fn template(generation: Option<&Value>) -> Option<&str> {
    generation
        .and_then(|g| g.get("promptTemplate"))
        .and_then(|p| p.get("textPromptTemplate"))
        .and_then(Value::as_str)
}

/// Checks the request, loads the session and retrieves: everything before generation.
async fn prepare(
    state: &AppState,
    caller: &Caller,
    body: &[u8],
) -> std::result::Result<Prepared, BedrockError> {
    let ingestor = ingestor(state)?;
    let req: RagRequest = from_json(body)?;
    let query = query_text(&req.input, "input")?;
    let config = req
        .retrieve_and_generate_configuration
        .as_ref()
        .ok_or_else(|| BedrockError::validation("retrieveAndGenerateConfiguration is required."))?;
    let (session_id, session) = match &req.session_id {
        Some(id) => {
            check_session_id(id)?;
            let session: Session = ingestor
                .store()
                .get(&session_key(id))
                .map_err(store_error)?
                .ok_or_else(|| {
                    BedrockError::validation(format!(
                        "Session with Id {id} is not valid. Please check and try again."
                    ))
                })?;
            (id.clone(), session)
        }
        None => (uuid::Uuid::new_v4().to_string(), Session::default()),
    };
    let kind = str_at(config, "retrieveAndGenerateConfiguration", "type")?;
    let (model_arn, generation, grounding) = match kind {
        "KNOWLEDGE_BASE" => {
            let path = "retrieveAndGenerateConfiguration.knowledgeBaseConfiguration";
            let kb_config = config.get("knowledgeBaseConfiguration").ok_or_else(|| {
                BedrockError::validation(format!("{path} is required when type is KNOWLEDGE_BASE."))
            })?;
            if kb_config
                .get("orchestrationConfiguration")
                .and_then(|o| o.get("queryTransformationConfiguration"))
                .is_some()
            {
                return Err(BedrockError::validation(format!(
                    "{path}.orchestrationConfiguration.queryTransformationConfiguration (QUERY_DECOMPOSITION) is not supported by this server."
                )));
            }
            let kb = active_kb(state, caller, str_at(kb_config, path, "knowledgeBaseId")?)?;
            let settings = parse_settings(
                kb_config.get("retrievalConfiguration"),
                &format!("{path}.retrievalConfiguration"),
            )?;
            let loaded = ingestor.loaded_now(&kb).await?;
            let hits = search(
                ingestor,
                &kb,
                &loaded,
                &query,
                &settings,
                0,
                settings.number_of_results,
            )
            .await?;
            let embedder = loaded.0;
            (
                str_at(kb_config, path, "modelArn")?.to_string(),
                kb_config.get("generationConfiguration").cloned(),
                Grounding { hits, embedder },
            )
        }
        "EXTERNAL_SOURCES" => {
            let path = "retrieveAndGenerateConfiguration.externalSourcesConfiguration";
            let ext = config.get("externalSourcesConfiguration").ok_or_else(|| {
                BedrockError::validation(format!(
                    "{path} is required when type is EXTERNAL_SOURCES."
                ))
            })?;
            let grounding = external_sources(state, ext, &query, path).await?;
            (
                str_at(ext, path, "modelArn")?.to_string(),
                ext.get("generationConfiguration").cloned(),
                grounding,
            )
        }
        other => {
            return Err(BedrockError::constraint(
                "retrieveAndGenerateConfiguration.type",
                other,
                "Member must satisfy enum value set: [KNOWLEDGE_BASE, EXTERNAL_SOURCES]",
            ))
        }
    };
    let texts: Vec<String> = grounding.hits.iter().map(|h| h.text.clone()).collect();
    let system = grounding::render(template(generation.as_ref()), &query, &texts)?;
    let history = &session.turns[session.turns.len().saturating_sub(SESSION_TURNS)..];
    let converse = converse_body(&system, history, &query, generation.as_ref())?;
    let converse =
        serde_json::to_vec(&converse).map_err(|e| BedrockError::internal(e.to_string()))?;
    let guarded = generation
        .as_ref()
        .is_some_and(|g| g.get("guardrailConfiguration").is_some());
    Ok(Prepared {
        model_arn,
        converse,
        guarded,
        new_session: req.session_id.is_none(),
        conclusion: Conclusion {
            ingestor: Arc::clone(ingestor),
            session_id,
            session,
            query,
            grounding,
        },
    })
}

/// EXTERNAL_SOURCES: the inline documents (or S3 objects) are parsed, chunked and
/// ranked against the query with the default embedding model, in memory.
async fn external_sources(
    state: &AppState,
    ext: &Value,
    query: &str,
    path: &str,
) -> std::result::Result<Grounding, BedrockError> {
    let ingestor = ingestor(state)?;
    let sources = ext
        .get("sources")
        .and_then(Value::as_array)
        .ok_or_else(|| BedrockError::validation(format!("{path}.sources is required.")))?;
    if sources.is_empty() || sources.len() > MAX_EXTERNAL_SOURCES {
        return Err(BedrockError::validation(format!(
            "{path}.sources must hold between 1 and {MAX_EXTERNAL_SOURCES} sources."
        )));
    }
    let mut documents: Vec<(String, Vec<u8>, Option<String>)> = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let at = format!("{path}.sources[{i}]");
        match source.get("sourceType").and_then(Value::as_str) {
            Some("BYTE_CONTENT") => {
                let content = source.get("byteContent").ok_or_else(|| {
                    BedrockError::validation(format!(
                        "{at}.byteContent is required for BYTE_CONTENT."
                    ))
                })?;
                let data = STANDARD
                    .decode(str_at(content, &at, "data")?)
                    .map_err(|_| {
                        BedrockError::validation(format!("{at}.byteContent.data is not base64."))
                    })?;
                documents.push((
                    str_at(content, &at, "identifier")?.to_string(),
                    data,
                    Some(str_at(content, &at, "contentType")?.to_string()),
                ));
            }
            Some("S3") => {
                let uri = source
                    .get("s3Location")
                    .and_then(|l| l.get("uri"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        BedrockError::validation(format!("{at}.s3Location.uri is required for S3."))
                    })?;
                let parsed = basalt_objects::S3Uri::parse(uri)
                    .map_err(|e| BedrockError::validation(format!("{at}.s3Location.uri: {e}")))?;
                let bytes =
                    ingestor.objects().get(&parsed).await.map_err(|e| {
                        BedrockError::validation(format!("{at}.s3Location.uri: {e}"))
                    })?;
                documents.push((uri.to_string(), bytes.to_vec(), None));
            }
            _ => {
                return Err(BedrockError::validation(format!(
                    "{at}.sourceType must be S3 or BYTE_CONTENT."
                )))
            }
        }
    }
    let model_id = state.catalog.default_embedding_model().ok_or_else(|| {
        BedrockError::validation(
            "This server has no embedding model to rank external sources with.",
        )
    })?;
    let embedder = ingestor
        .embedders()
        .embedder(&model_id, None)?
        .ok_or_else(|| {
            BedrockError::new(
                ErrorCode::Throttling,
                "The embedding model is loading. Try your request again shortly.",
            )
        })?;
    let model = Arc::clone(&embedder);
    let query = query.to_string();
    let hits = tokio::task::spawn_blocking(move || {
        retrieval::rank_external(&documents, &query, model.as_ref())
    })
    .await
    .map_err(|e| BedrockError::internal(format!("ranking task failed: {e}")))??;
    Ok(Grounding { hits, embedder })
}

fn citation(span: &CitedSpan, hits: &[Hit]) -> Value {
    json!({
        "generatedResponsePart": {"textResponsePart": {
            "text": span.text,
            "span": {"start": span.start, "end": span.end},
        }},
        "retrievedReferences": span
            .references
            .iter()
            .filter_map(|&i| hits.get(i))
            .map(retrieval::reference)
            .collect::<Vec<_>>(),
    })
}

pub async fn retrieve_and_generate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response> {
    let prepared = prepare(&state, &caller, &body).await?;
    let response = converse_value(
        &state,
        &caller.account,
        &prepared.model_arn,
        &prepared.converse,
    )
    .await?;
    let text = response
        .pointer("/output/message/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let intervened =
        response.get("stopReason").and_then(Value::as_str) == Some("guardrail_intervened");
    let session_id = prepared.conclusion.session_id.clone();
    let citations = prepared.conclusion.finish(text.clone(), intervened).await?;
    let mut response = json!({
        "sessionId": session_id,
        "output": {"text": text},
        "citations": citations,
    });
    if prepared.guarded {
        response["guardrailAction"] = json!(if intervened { "INTERVENED" } else { "NONE" });
    }
    Ok(json_body(&response))
}

/// RetrieveAndGenerateStream's events: `output` as the answer is released (token by
/// token, or in checked chunks under a guardrail), then a `citation` per cited span of
/// the streamed text, then `guardrail` when one is attached.
struct RagEvents {
    conclusion: Option<Conclusion>,
    /// The text sent so far: the citations' spans index into it.
    sent: String,
    guardrail_action: Option<&'static str>,
}

impl StreamShape for RagEvents {
    fn start(&mut self, _prompt: &PromptUsage) -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    fn delta(&mut self, text: &str) -> Vec<(&'static str, Value)> {
        if text.is_empty() {
            return Vec::new();
        }
        self.sent.push_str(text);
        vec![("output", json!({ "text": text }))]
    }

    fn end(&mut self, _done: &Completion) -> Vec<(&'static str, Value)> {
        self.guardrail_action
            .map(|action| ("guardrail", json!({ "action": action })))
            .into_iter()
            .collect()
    }

    /// The union has no model exceptions: a model failure or timeout is a failed dependency.
    fn stream_error(&self, mut err: BedrockError) -> BedrockError {
        if matches!(
            err.code,
            ErrorCode::ModelStreamError | ErrorCode::ModelTimeout | ErrorCode::ServiceUnavailable
        ) {
            err.code = ErrorCode::DependencyFailed;
        }
        err
    }

    fn guardrail(
        &mut self,
        s: &Screening,
        outputs: &[basalt_guardrails::Evaluation],
        _model_output: Option<&str>,
    ) {
        self.guardrail_action = Some(if s.intervened(outputs) {
            "INTERVENED"
        } else {
            "NONE"
        });
    }

    fn settle(&mut self) -> Option<Settle> {
        let conclusion = self.conclusion.take()?;
        let text = std::mem::take(&mut self.sent);
        let intervened = self.guardrail_action == Some("INTERVENED");
        Some(Box::pin(async move {
            let citations = conclusion.finish(text, intervened).await?;
            Ok(citations
                .into_iter()
                .map(|c| {
                    let event = json!({
                        "generatedResponsePart": c["generatedResponsePart"],
                        "retrievedReferences": c["retrievedReferences"],
                        "citation": c,
                    });
                    ("citation", event)
                })
                .collect())
        }))
    }
}

/// Streams the answer as the model writes it; the citations follow the text, since
/// they need the whole of it. A dropped connection ends the generation.
pub async fn retrieve_and_generate_stream(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response> {
    let prepared = prepare(&state, &caller, &body).await?;
    let conclusion = prepared.conclusion;
    if prepared.new_session {
        // The session ID goes out in the header now: it must name a session even if
        // the stream is cut short.
        conclusion.save_session()?;
    }
    let session_id = conclusion.session_id.clone();
    let shape = RagEvents {
        conclusion: Some(conclusion),
        sent: String::new(),
        guardrail_action: None,
    };
    let mut response = converse_stream_with(
        &state,
        &caller.account,
        &prepared.model_arn,
        &prepared.converse,
        shape,
    )
    .await?;
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_follow_botocore_constraints() {
        assert!(check_session_id("abc-123_x.y:z").is_ok());
        assert!(check_session_id("a").is_err());
        assert!(check_session_id("has space").is_err());
    }

    #[test]
    fn converse_body_carries_history_inference_and_guardrail() {
        let generation = json!({
            "inferenceConfig": {"textInferenceConfig": {"maxTokens": 64, "temperature": 0.1}},
            "guardrailConfiguration": {"guardrailId": "g1", "guardrailVersion": "DRAFT"},
        });
        let system = Rendered {
            before: "Use these:\n".into(),
            results: "[1] fact".into(),
            after: String::new(),
        };
        let body = converse_body(
            &system,
            &[("q0".into(), "a0".into())],
            "q1",
            Some(&generation),
        )
        .expect("body");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(3));
        assert_eq!(body["inferenceConfig"]["maxTokens"], 64);
        assert_eq!(body["guardrailConfig"]["guardrailIdentifier"], "g1");
        assert_eq!(body["system"][0]["text"], "Use these:\n");
        assert_eq!(
            body["system"][1]["guardContent"]["text"]["qualifiers"],
            json!(["grounding_source"])
        );
        assert_eq!(
            body["messages"][2]["content"][0]["guardContent"]["text"]["text"],
            "q1"
        );
        let plain = converse_body(&system, &[], "q", None).expect("body");
        assert_eq!(plain["system"][0]["text"], "Use these:\n[1] fact");
        assert_eq!(plain["messages"][0]["content"][0]["text"], "q");
        let bad = json!({"guardrailConfiguration": {"guardrailId": "g1"}});
        assert!(converse_body(&system, &[], "q", Some(&bad)).is_err());
    }
}
