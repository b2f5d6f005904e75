//! bedrock-agent's knowledge-base control plane: knowledge bases, data sources and
//! ingestion jobs. Resources are rows in the store; ingestion runs in
//! [`basalt_knowledge::ingestion::Ingestor`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use basalt_knowledge::documents::{identify, parse_document, MAX_DOCUMENTS};
use basalt_knowledge::ingestion::{document_id, DocumentState, IngestError, Ingestor, DOC_KIND};
use basalt_knowledge::resources::{
    check_id, now, DataSource, DataSourceRequest, IngestionJob, JobStatus, KnowledgeBase,
    KnowledgeBaseRequest, SourceKind, Storage, CURRENT, DS_KIND, JOB_KIND, KB_KIND,
};
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_store::{Key, StoreError, Write};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::edge::{ApiError, Labels};
use crate::idempotency::Token;
use crate::kb_embedder::check_model;
use crate::runtime::json_body;
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

pub(crate) fn ingestor(state: &AppState) -> std::result::Result<&Arc<Ingestor>, BedrockError> {
    state.knowledge.as_ref().ok_or_else(|| {
        BedrockError::new(
            ErrorCode::ServiceUnavailable,
            "Knowledge bases need a data directory; this server was started without one.",
        )
    })
}

fn store_error(e: StoreError) -> BedrockError {
    BedrockError::internal(format!("The knowledge-base store failed: {e}"))
}

fn accepted(value: &Value) -> Response {
    let mut r = json_body(value);
    *r.status_mut() = StatusCode::ACCEPTED;
    r.into_response()
}

fn label(labels: &Labels, i: usize) -> &str {
    labels.0.get(i).map(String::as_str).unwrap_or("")
}

pub(crate) fn load_kb(
    ingestor: &Ingestor,
    id: &str,
) -> std::result::Result<KnowledgeBase, BedrockError> {
    check_id("knowledgeBaseId", id)?;
    ingestor
        .store()
        .get(&Key {
            kind: KB_KIND,
            id,
            version: CURRENT,
        })
        .map_err(store_error)?
        .ok_or_else(|| kb_not_found(id))
}

pub(crate) fn load_ds(
    ingestor: &Ingestor,
    kb_id: &str,
    ds_id: &str,
) -> std::result::Result<DataSource, BedrockError> {
    load_kb(ingestor, kb_id)?;
    check_id("dataSourceId", ds_id)?;
    ingestor
        .store()
        .get(&Key {
            kind: DS_KIND,
            id: &format!("{kb_id}/{ds_id}"),
            version: CURRENT,
        })
        .map_err(store_error)?
        .ok_or_else(|| {
            BedrockError::not_found(format!(
                "Data source with id {ds_id} does not exist in knowledge base {kb_id}."
            ))
        })
}

/// The caller's knowledge base `id`: another account's is answered as one that does
/// not exist, with the same message.
pub(crate) fn caller_kb(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> std::result::Result<KnowledgeBase, BedrockError> {
    let kb = load_kb(ingestor(state)?, id)?;
    let owner =
        crate::authorization::arn_account(&kb.knowledge_base_arn).unwrap_or(&state.account_id);
    if owner != caller.account {
        return Err(kb_not_found(id));
    }
    Ok(kb)
}

/// Data source `ds_id` of the caller's knowledge base `kb_id`.
pub(crate) fn caller_ds(
    state: &AppState,
    caller: &Caller,
    kb_id: &str,
    ds_id: &str,
) -> std::result::Result<DataSource, BedrockError> {
    caller_kb(state, caller, kb_id)?;
    load_ds(ingestor(state)?, kb_id, ds_id)
}

fn kb_not_found(id: &str) -> BedrockError {
    BedrockError::not_found(format!("Knowledge base with id {id} does not exist."))
}

fn put_kb(ingestor: &Ingestor, kb: &KnowledgeBase) -> std::result::Result<(), BedrockError> {
    ingestor
        .store()
        .put(
            &Key {
                kind: KB_KIND,
                id: &kb.knowledge_base_id,
                version: CURRENT,
            },
            kb,
        )
        .map_err(store_error)
}

fn put_ds(ingestor: &Ingestor, ds: &DataSource) -> std::result::Result<(), BedrockError> {
    ingestor
        .store()
        .put(
            &Key {
                kind: DS_KIND,
                id: &ds.scope(),
                version: CURRENT,
            },
            ds,
        )
        .map_err(store_error)
}

/// `maxResults` and `nextToken` of a POST-for-list body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageRequest {
    max_results: Option<i64>,
    next_token: Option<String>,
}

impl PageRequest {
    fn parse(body: &[u8]) -> std::result::Result<Self, BedrockError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        from_json(body)
    }

    /// The slice of `items` this page holds, and the next token.
    fn page<T: Clone>(
        &self,
        items: &[T],
    ) -> std::result::Result<(Vec<T>, Option<String>), BedrockError> {
        let max = match self.max_results {
            None => 1000,
            Some(m @ 1..=1000) => m as usize,
            Some(m) => {
                return Err(BedrockError::constraint(
                    "maxResults",
                    m,
                    "Member must have value between 1 and 1000",
                ))
            }
        };
        let start = match &self.next_token {
            None => 0,
            Some(t) => t.parse::<usize>().map_err(|_| {
                BedrockError::validation("The nextToken is not one this server issued.")
            })?,
        };
        let end = (start + max).min(items.len());
        let page = items.get(start..end).unwrap_or_default().to_vec();
        let next = (end < items.len()).then(|| end.to_string());
        Ok((page, next))
    }

    /// The List response: this page under `member`, and `nextToken` when more follow.
    fn respond(&self, member: &str, items: &[Value]) -> Result<Response> {
        let (page, next) = self.page(items)?;
        let mut body = json!({ member: page });
        if let Some(t) = next {
            body["nextToken"] = json!(t);
        }
        Ok(json_body(&body))
    }
}

// ---- knowledge bases ----

pub async fn create_knowledge_base(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let req: KnowledgeBaseRequest = from_json(&body)?;
    let (embedding, storage) = req.validate()?;
    check_model(&state.catalog, &embedding.model_arn, embedding.dimensions)?;
    ingestor.vectors().check(&storage)?;
    let client_token = req.client_token.clone();
    let token = Token::new(
        ingestor.store(),
        &caller.account,
        "CreateKnowledgeBase",
        client_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay(ErrorCode::Conflict)? {
        return Ok(accepted(&response));
    }
    let kb = KnowledgeBase::new(req, &caller.region, &caller.account);
    put_kb(ingestor, &kb)?;
    activate(Arc::clone(ingestor), kb.knowledge_base_id.clone());
    let response = json!({ "knowledgeBase": kb });
    token.remember(&response)?;
    Ok(accepted(&response))
}

/// CREATING → ACTIVE once the embedding model answers and the vector store opens;
/// FAILED, with the reason, if either cannot happen.
fn activate(ingestor: Arc<Ingestor>, id: String) {
    tokio::spawn(async move {
        let Ok(kb) = load_kb(&ingestor, &id) else {
            return;
        };
        let outcome = async {
            let embedder = ingestor
                .embedder(&kb, || false)
                .await?
                .ok_or_else(|| BedrockError::internal("the embedding model did not load"))?;
            ingestor.vectors().open(&kb, embedder.dimensions()).await?;
            Ok::<_, BedrockError>(())
        }
        .await;
        let Ok(mut kb) = load_kb(&ingestor, &id) else {
            return;
        };
        match outcome {
            Ok(()) => kb.status = "ACTIVE".into(),
            Err(e) => {
                kb.status = "FAILED".into();
                kb.failure_reasons = vec![e.message];
            }
        }
        kb.updated_at = now();
        if let Err(e) = put_kb(&ingestor, &kb) {
            tracing::error!(knowledge_base = %id, error = %e.message, "cannot save the knowledge base");
        }
    });
}

pub async fn get_knowledge_base(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
) -> Result<Response> {
    let kb = caller_kb(&state, &caller, label(&labels, 0))?;
    Ok(json_body(&json!({ "knowledgeBase": kb })))
}

pub async fn list_knowledge_bases(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let page = PageRequest::parse(&body)?;
    let all: Vec<Value> = ingestor
        .store()
        .list::<KnowledgeBase>(KB_KIND, CURRENT)
        .map_err(store_error)?
        .into_iter()
        .filter(|(_, kb)| {
            crate::authorization::arn_account(&kb.knowledge_base_arn).unwrap_or(&state.account_id)
                == caller.account
        })
        .map(|(_, kb)| kb.summary())
        .collect();
    page.respond("knowledgeBaseSummaries", &all)
}

pub async fn update_knowledge_base(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let mut kb = caller_kb(&state, &caller, label(&labels, 0))?;
    let req: KnowledgeBaseRequest = from_json(&body)?;
    let (embedding, storage) = req.validate()?;
    if embedding != kb.embedding()? {
        return Err(BedrockError::validation(
            "The embedding model and its dimensions cannot change after a knowledge base is created.",
        )
        .into());
    }
    // An update that leaves storageConfiguration out keeps the knowledge base's own.
    if req.storage_configuration.is_some() && storage != kb.storage()? {
        return Err(BedrockError::validation(
            "storageConfiguration cannot change after a knowledge base is created.",
        )
        .into());
    }
    kb.name = req.name;
    kb.description = req.description;
    kb.role_arn = req.role_arn;
    kb.knowledge_base_configuration = req.knowledge_base_configuration;
    if req.metadata_configurations.is_some() {
        kb.metadata_configurations = req.metadata_configurations;
    }
    kb.updated_at = now();
    put_kb(ingestor, &kb)?;
    Ok(accepted(&json!({ "knowledgeBase": kb })))
}

/// ConflictException while a job runs on the knowledge base (or one data source).
fn refuse_while_running(
    ingestor: &Ingestor,
    kb_id: &str,
    ds_id: Option<&str>,
    what: &str,
) -> std::result::Result<(), BedrockError> {
    match running_jobs(ingestor, kb_id, ds_id)?.first() {
        Some(job) => Err(BedrockError::new(
            ErrorCode::Conflict,
            format!(
                "Ingestion job {} is {}; {what}",
                job.ingestion_job_id,
                job.status.as_str()
            ),
        )),
        None => Ok(()),
    }
}

fn running_jobs(
    ingestor: &Ingestor,
    kb_id: &str,
    ds_id: Option<&str>,
) -> std::result::Result<Vec<IngestionJob>, BedrockError> {
    Ok(ingestor
        .jobs()
        .map_err(store_error)?
        .into_iter()
        .filter(|j| {
            j.knowledge_base_id == kb_id
                && ds_id.is_none_or(|d| j.data_source_id == d)
                && !j.status.is_terminal()
        })
        .collect())
}

pub async fn delete_knowledge_base(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let kb = caller_kb(&state, &caller, label(&labels, 0))?;
    let id = kb.knowledge_base_id.clone();
    refuse_while_running(
        ingestor,
        &id,
        None,
        "stop it before deleting the knowledge base.",
    )?;
    let store = ingestor.store();
    let sources: Vec<DataSource> = store
        .list::<DataSource>(DS_KIND, CURRENT)
        .map_err(store_error)?
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d.knowledge_base_id == id)
        .collect();
    for ds in &sources {
        // The embedded index goes with the knowledge base; an RDS table is the user's.
        if ds.data_deletion_policy == "DELETE" && kb.storage()? != Storage::Embedded {
            purge_vectors(ingestor, &kb, ds).await?;
        }
        forget_data_source(ingestor, ds)?;
    }
    store
        .delete(&Key {
            kind: KB_KIND,
            id: &id,
            version: CURRENT,
        })
        .map_err(store_error)?;
    ingestor.vectors().remove(&id).await;
    Ok(accepted(
        &json!({ "knowledgeBaseId": id, "status": "DELETING" }),
    ))
}

/// Removes a data source's rows: its documents' states, its jobs and itself.
fn forget_data_source(
    ingestor: &Ingestor,
    ds: &DataSource,
) -> std::result::Result<(), BedrockError> {
    let store = ingestor.store();
    let scope = ds.scope();
    store.delete_all(DOC_KIND, &scope).map_err(store_error)?;
    let jobs: Vec<IngestionJob> = ingestor
        .jobs()
        .map_err(store_error)?
        .into_iter()
        .filter(|j| {
            j.knowledge_base_id == ds.knowledge_base_id && j.data_source_id == ds.data_source_id
        })
        .collect();
    let keys: Vec<String> = jobs.iter().map(IngestionJob::key_id).collect();
    let mut writes: Vec<Write<'_>> = keys
        .iter()
        .map(|k| {
            Write::Delete(Key {
                kind: JOB_KIND,
                id: k,
                version: CURRENT,
            })
        })
        .collect();
    writes.push(Write::Delete(Key {
        kind: DS_KIND,
        id: &scope,
        version: CURRENT,
    }));
    store.apply(&writes).map_err(store_error)
}

/// Removes a data source's chunks from the knowledge base's vector store.
async fn purge_vectors(
    ingestor: &Ingestor,
    kb: &KnowledgeBase,
    ds: &DataSource,
) -> std::result::Result<(), BedrockError> {
    let states: Vec<(String, DocumentState)> = ingestor
        .store()
        .versions(DOC_KIND, &ds.scope())
        .map_err(store_error)?;
    if states.is_empty() {
        return Ok(());
    }
    let (_, vectors) = ingestor.loaded_now(kb).await?;
    for (key, _) in states {
        vectors
            .delete_document(document_id(&ds.data_source_id, &key))
            .await
            .map_err(|e| BedrockError::internal(format!("The index failed: {e}")))?;
    }
    Ok(())
}

// ---- data sources ----

pub async fn create_data_source(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let kb = caller_kb(&state, &caller, label(&labels, 0))?;
    let req: DataSourceRequest = from_json(&body)?;
    req.validate()?;
    let client_token = req.client_token.clone();
    let token = Token::new(
        ingestor.store(),
        &caller.account,
        "CreateDataSource",
        client_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay(ErrorCode::Conflict)? {
        return Ok(json_body(&response));
    }
    let ds = DataSource::new(&kb.knowledge_base_id, req);
    put_ds(ingestor, &ds)?;
    let response = json!({ "dataSource": ds });
    token.remember(&response)?;
    Ok(json_body(&response))
}

pub async fn get_data_source(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
) -> Result<Response> {
    let ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    Ok(json_body(&json!({ "dataSource": ds })))
}

pub async fn list_data_sources(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let kb = caller_kb(&state, &caller, label(&labels, 0))?;
    let page = PageRequest::parse(&body)?;
    let all: Vec<Value> = ingestor
        .store()
        .list::<DataSource>(DS_KIND, CURRENT)
        .map_err(store_error)?
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d.knowledge_base_id == kb.knowledge_base_id)
        .map(|d| d.summary())
        .collect();
    page.respond("dataSourceSummaries", &all)
}

pub async fn update_data_source(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let mut ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let req: DataSourceRequest = from_json(&body)?;
    let (source, chunking) = req.validate()?;
    if std::mem::discriminant(&source) != std::mem::discriminant(&ds.source()?) {
        return Err(BedrockError::validation(
            "dataSourceConfiguration.type cannot change after a data source is created.",
        )
        .into());
    }
    if chunking != ds.chunking()? {
        return Err(BedrockError::validation(
            "vectorIngestionConfiguration.chunkingConfiguration cannot change after a data source is created.",
        )
        .into());
    }
    ds.name = req.name;
    ds.description = req.description;
    ds.data_source_configuration = req.data_source_configuration;
    if let Some(p) = req.data_deletion_policy {
        ds.data_deletion_policy = p;
    }
    ds.server_side_encryption_configuration = req.server_side_encryption_configuration;
    ds.updated_at = now();
    put_ds(ingestor, &ds)?;
    Ok(json_body(&json!({ "dataSource": ds })))
}

pub async fn delete_data_source(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let kb = caller_kb(&state, &caller, label(&labels, 0))?;
    let ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    refuse_while_running(
        ingestor,
        &ds.knowledge_base_id,
        Some(&ds.data_source_id),
        "stop it before deleting the data source.",
    )?;
    if ds.data_deletion_policy == "DELETE" {
        purge_vectors(ingestor, &kb, &ds).await?;
    }
    forget_data_source(ingestor, &ds)?;
    Ok(accepted(&json!({
        "knowledgeBaseId": ds.knowledge_base_id,
        "dataSourceId": ds.data_source_id,
        "status": "DELETING",
    })))
}

// ---- ingestion jobs ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartJobRequest {
    client_token: Option<String>,
    description: Option<String>,
}

pub async fn start_ingestion_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let kb = caller_kb(&state, &caller, label(&labels, 0))?;
    let ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let req: StartJobRequest = if body.is_empty() {
        StartJobRequest {
            client_token: None,
            description: None,
        }
    } else {
        from_json(&body)?
    };
    let token = Token::new(
        ingestor.store(),
        &caller.account,
        "StartIngestionJob",
        req.client_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay(ErrorCode::Conflict)? {
        return Ok(accepted(&response));
    }
    if ds.source()? == SourceKind::Custom {
        return Err(BedrockError::validation(format!(
            "Data source {} is CUSTOM: it has no source to sync. Add its documents with IngestKnowledgeBaseDocuments.",
            ds.data_source_id
        ))
        .into());
    }
    if kb.status != "ACTIVE" {
        return Err(BedrockError::new(
            ErrorCode::Conflict,
            format!(
                "Knowledge base {} is {}; ingestion can start once it is ACTIVE.",
                kb.knowledge_base_id, kb.status
            ),
        )
        .into());
    }
    refuse_while_running(
        ingestor,
        &ds.knowledge_base_id,
        Some(&ds.data_source_id),
        "only one job runs per data source at a time. Wait for it to finish or stop it.",
    )?;
    if let Some(d) = &req.description {
        if d.chars().count() > 200 {
            return Err(BedrockError::constraint(
                "description",
                d,
                "Member must have length less than or equal to 200",
            )
            .into());
        }
    }
    let job = IngestionJob::new(&ds, req.description);
    ingestor.submit(&job).map_err(store_error)?;
    let response = json!({ "ingestionJob": job });
    token.remember(&response)?;
    Ok(accepted(&response))
}

fn job_key(labels: &Labels) -> std::result::Result<String, BedrockError> {
    let (kb, ds, job) = (label(labels, 0), label(labels, 1), label(labels, 2));
    check_id("ingestionJobId", job)?;
    Ok(format!("{kb}/{ds}/{job}"))
}

fn job_not_found(labels: &Labels) -> BedrockError {
    BedrockError::not_found(format!(
        "Ingestion job with id {} does not exist.",
        label(labels, 2)
    ))
}

pub async fn get_ingestion_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let job = ingestor
        .job(&job_key(&labels)?)
        .map_err(store_error)?
        .ok_or_else(|| job_not_found(&labels))?;
    Ok(json_body(&json!({ "ingestionJob": job })))
}

pub async fn stop_ingestion_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let key = job_key(&labels)?;
    let current = ingestor
        .job(&key)
        .map_err(store_error)?
        .ok_or_else(|| job_not_found(&labels))?;
    if current.status.is_terminal() {
        return Err(BedrockError::new(
            ErrorCode::Conflict,
            format!(
                "Ingestion job {} is already {} and cannot be stopped.",
                current.ingestion_job_id,
                current.status.as_str()
            ),
        )
        .into());
    }
    let job = ingestor
        .stop(&key)
        .map_err(store_error)?
        .ok_or_else(|| job_not_found(&labels))?;
    Ok(accepted(&json!({ "ingestionJob": job })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListJobsRequest {
    max_results: Option<i64>,
    next_token: Option<String>,
    filters: Option<Vec<JobFilter>>,
    sort_by: Option<JobSort>,
}

#[derive(Debug, Deserialize)]
struct JobFilter {
    attribute: String,
    operator: String,
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct JobSort {
    attribute: String,
    order: String,
}

pub async fn list_ingestion_jobs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let req: ListJobsRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ListJobsRequest::default()
    } else {
        from_json(&body)?
    };
    let mut statuses: Option<Vec<String>> = None;
    for (i, f) in req.filters.iter().flatten().enumerate() {
        if f.attribute != "STATUS" {
            return Err(BedrockError::constraint(
                &format!("filters.{}.member.attribute", i + 1),
                &f.attribute,
                "Member must satisfy enum value set: [STATUS]",
            )
            .into());
        }
        if f.operator != "EQ" {
            return Err(BedrockError::constraint(
                &format!("filters.{}.member.operator", i + 1),
                &f.operator,
                "Member must satisfy enum value set: [EQ]",
            )
            .into());
        }
        if let Some(bad) = f
            .values
            .iter()
            .find(|v| !JobStatus::ALL.contains(&v.as_str()))
        {
            return Err(BedrockError::validation(format!(
                "filters: {bad} is not an ingestion job status; use one of {}.",
                JobStatus::ALL.join(", ")
            ))
            .into());
        }
        statuses = Some(f.values.clone());
    }
    let mut jobs: Vec<IngestionJob> = ingestor
        .jobs()
        .map_err(store_error)?
        .into_iter()
        .filter(|j| {
            j.knowledge_base_id == ds.knowledge_base_id
                && j.data_source_id == ds.data_source_id
                && statuses
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s == j.status.as_str()))
        })
        .collect();
    if let Some(sort) = &req.sort_by {
        let descending = match sort.order.as_str() {
            "ASCENDING" => false,
            "DESCENDING" => true,
            other => {
                return Err(BedrockError::constraint(
                    "sortBy.order",
                    other,
                    "Member must satisfy enum value set: [ASCENDING, DESCENDING]",
                )
                .into())
            }
        };
        match sort.attribute.as_str() {
            "STARTED_AT" => jobs.sort_by(|a, b| a.started_at.cmp(&b.started_at)),
            "STATUS" => jobs.sort_by(|a, b| a.status.as_str().cmp(b.status.as_str())),
            other => {
                return Err(BedrockError::constraint(
                    "sortBy.attribute",
                    other,
                    "Member must satisfy enum value set: [STATUS, STARTED_AT]",
                )
                .into())
            }
        }
        if descending {
            jobs.reverse();
        }
    }
    let summaries: Vec<Value> = jobs.iter().map(IngestionJob::summary).collect();
    let page = PageRequest {
        max_results: req.max_results,
        next_token: req.next_token,
    };
    page.respond("ingestionJobSummaries", &summaries)
}

// ---- documents ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IngestDocumentsRequest {
    client_token: Option<String>,
    documents: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DocumentIdentifiersRequest {
    document_identifiers: Vec<Value>,
}

fn check_count(member: &str, n: usize) -> std::result::Result<(), BedrockError> {
    if (1..=MAX_DOCUMENTS).contains(&n) {
        Ok(())
    } else {
        Err(BedrockError::constraint(
            member,
            format!("{n} items"),
            &format!("Member must have length between 1 and {MAX_DOCUMENTS}"),
        ))
    }
}

pub async fn ingest_documents(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let kb = caller_kb(&state, &caller, label(&labels, 0))?;
    let ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let req: IngestDocumentsRequest = from_json(&body)?;
    check_count("documents", req.documents.len())?;
    let token = Token::new(
        ingestor.store(),
        &caller.account,
        "IngestKnowledgeBaseDocuments",
        req.client_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay(ErrorCode::Validation)? {
        return Ok(accepted(&response));
    }
    if kb.status != "ACTIVE" {
        return Err(BedrockError::validation(format!(
            "Knowledge base {} is {}; documents can be ingested once it is ACTIVE.",
            kb.knowledge_base_id, kb.status
        ))
        .into());
    }
    let docs = req
        .documents
        .iter()
        .enumerate()
        .map(|(i, d)| parse_document(d, &format!("documents[{i}]"), &ds))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let details = ingestor.queue_documents(&ds, docs).map_err(store_error)?;
    let response = json!({ "documentDetails": details });
    token.remember(&response)?;
    Ok(accepted(&response))
}

pub async fn list_documents(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let page = PageRequest::parse(&body)?;
    let all = ingestor.document_details(&ds).map_err(store_error)?;
    page.respond("documentDetails", &all)
}

fn identifiers(
    req: &DocumentIdentifiersRequest,
    ds: &DataSource,
) -> std::result::Result<Vec<(String, Value)>, BedrockError> {
    check_count("documentIdentifiers", req.document_identifiers.len())?;
    req.document_identifiers
        .iter()
        .enumerate()
        .map(|(i, d)| identify(d, &format!("documentIdentifiers[{i}]"), ds))
        .collect()
}

pub async fn get_documents(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let req: DocumentIdentifiersRequest = from_json(&body)?;
    let keys = identifiers(&req, &ds)?;
    let details = ingestor.documents_by_key(&ds, &keys).map_err(store_error)?;
    Ok(json_body(&json!({ "documentDetails": details })))
}

pub async fn delete_documents(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    labels: Labels,
    body: Bytes,
) -> Result<Response> {
    let ingestor = ingestor(&state)?;
    let kb = caller_kb(&state, &caller, label(&labels, 0))?;
    let ds = caller_ds(&state, &caller, label(&labels, 0), label(&labels, 1))?;
    let req: DocumentIdentifiersRequest = from_json(&body)?;
    let keys = identifiers(&req, &ds)?;
    let details = ingestor
        .delete_documents(&kb, &ds, &keys)
        .await
        .map_err(|e| match e {
            IngestError::Bedrock(b) => b,
            IngestError::Store(s) => store_error(s),
        })?;
    Ok(accepted(&json!({ "documentDetails": details })))
}
