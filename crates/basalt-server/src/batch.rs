//! Batch inference's control plane: CreateModelInvocationJob,
//! GetModelInvocationJob, ListModelInvocationJobs and StopModelInvocationJob. The
//! jobs themselves run in [`basalt_batch::Runner`], fed by the engine.
//!
//! A job belongs to the account its ARN names (the caller's, when it was created);
//! to every other account it does not exist. The ARN is the record of ownership, so
//! jobs stored before keys had accounts stay the server account's without a migration.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use basalt_batch::job::{job_arn, new_job_id, parse_identifier, parse_timestamp};
use basalt_batch::runner::BatchError;
use basalt_batch::{
    CreateJobRequest, InvocationType, Job, JobStatus, JobStore, JobStoreError, Runner,
};
use basalt_proto::{from_json, BedrockError, ErrorCode};
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::edge::{ApiError, Label};
use crate::listing::ListQuery;
use crate::record_invoker::EngineInvoker;
use crate::runtime::json_body;
use crate::AppState;

pub type BatchRunner = Runner<EngineInvoker>;

const CREATE: &str = "CreateModelInvocationJob";

fn runner(state: &AppState) -> Result<&Arc<BatchRunner>, BedrockError> {
    state.batch.as_ref().ok_or_else(|| {
        BedrockError::new(
            ErrorCode::ServiceUnavailable,
            "Batch inference needs a data directory; this server was started without one.",
        )
    })
}

fn batch_error(e: BatchError) -> BedrockError {
    match e {
        BatchError::NotFound(id) => not_found(&id),
        BatchError::Conflict(m) => BedrockError::new(ErrorCode::Conflict, m),
        BatchError::Store(e) => store_error(e),
    }
}

fn store_error(e: JobStoreError) -> BedrockError {
    BedrockError::internal(format!("The job store failed: {e}"))
}

/// `clientRequestToken` on a create call, kept in the job store so that every
/// node sharing it gives a repeated request the first answer. The async twin of
/// `idempotency::Token` (the job store may be PostgreSQL); both decide with
/// `idempotency::replayed`.
pub(crate) struct JobToken<'a> {
    store: &'a dyn JobStore,
    operation: &'a str,
    /// Scoped to the caller's account (see `idempotency::scoped`).
    token: Option<String>,
    body: &'a [u8],
}

impl<'a> JobToken<'a> {
    pub(crate) fn new(
        store: &'a dyn JobStore,
        account: &str,
        operation: &'a str,
        token: Option<&str>,
        body: &'a [u8],
    ) -> Self {
        Self {
            store,
            operation,
            token: token.map(|t| crate::idempotency::scoped(account, t)),
            body,
        }
    }

    /// The answer first given to this same request; the token reused with a
    /// different request gets ConflictException.
    pub(crate) async fn replay(&self) -> Result<Option<serde_json::Value>, BedrockError> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let seen = self
            .store
            .idempotent_response(self.operation, token)
            .await
            .map_err(store_error)?;
        crate::idempotency::replayed(seen, self.body, self.operation, ErrorCode::Conflict)
    }

    pub(crate) async fn remember(&self, response: &serde_json::Value) -> Result<(), BedrockError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        self.store
            .remember_response(
                self.operation,
                token,
                String::from_utf8_lossy(self.body).into_owned(),
                response.clone(),
            )
            .await
            .map_err(store_error)
    }
}

fn not_found(identifier: &str) -> BedrockError {
    BedrockError::not_found(format!(
        "The model invocation job {identifier} was not found. Check the job identifier and try again."
    ))
}

/// Whether `account` owns a resource with this ARN (one naming no account is the
/// server's).
pub(crate) fn owned(state: &AppState, account: &str, arn: &str) -> bool {
    crate::authorization::arn_account(arn).unwrap_or(&state.account_id) == account
}

/// The caller's job that an identifier names, or ResourceNotFound.
async fn caller_job(
    state: &AppState,
    caller: &Caller,
    identifier: &str,
) -> Result<Job, BedrockError> {
    let runner = runner(state)?;
    let id = parse_identifier(identifier)?;
    if crate::authorization::other_account(identifier, &caller.account) {
        return Err(not_found(identifier));
    }
    runner
        .get(&id)
        .await
        .map_err(batch_error)?
        .filter(|job| owned(state, &caller.account, &job.job_arn))
        .ok_or_else(|| not_found(identifier))
}

pub async fn create_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let req: CreateJobRequest = from_json(&body)?;
    let valid = req.validate()?;
    let token = JobToken::new(
        runner.store().as_ref(),
        &caller.account,
        CREATE,
        req.client_request_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay().await? {
        return Ok(json_body(&response));
    }
    let entry = state.catalog.resolve(&req.model_id)?;
    if valid.invocation_type == InvocationType::Converse && entry.format.is_embedding() {
        return Err(BedrockError::validation(format!(
            "The model {} returns embeddings; a Converse job needs a text model.",
            req.model_id
        ))
        .into());
    }
    let arn = job_arn(&caller.region, &caller.account, &new_job_id());
    let job = Job::new(
        &req,
        &valid,
        arn,
        req.model_id.clone(),
        OffsetDateTime::now_utc(),
    );
    runner.submit(&job).await.map_err(batch_error)?;
    let response = json!({ "jobArn": job.job_arn });
    token.remember(&response).await?;
    Ok(json_body(&response))
}

pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let job = caller_job(&state, &caller, &identifier).await?;
    Ok(json_body(&job.public()))
}

pub async fn stop_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    caller_job(&state, &caller, &identifier).await?;
    let id = parse_identifier(&identifier)?;
    runner.stop(&id).await.map_err(|e| match e {
        BatchError::NotFound(_) => not_found(&identifier),
        e => batch_error(e),
    })?;
    Ok(json_body(&json!({})))
}

pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let query = ListQuery::parse(query)?;
    let page = query.page(1000)?;
    let window = query.window("submitTimeAfter", "submitTimeBefore")?;
    let statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let status = query.one_of("statusEquals", &statuses)?;
    query.one_of("sortBy", &["CreationTime"])?;
    let name = query.get("nameContains");
    let mut jobs: Vec<Job> = runner
        .list()
        .await
        .map_err(batch_error)?
        .into_iter()
        .filter(|j| {
            owned(&state, &caller.account, &j.job_arn)
                && status.is_none_or(|s| j.status.as_str() == s)
                && name.is_none_or(|n| j.job_name.contains(n))
                && window.contains(parse_timestamp(&j.submit_time))
        })
        .collect();
    // Stored in submission order.
    if query.descending()? {
        jobs.reverse();
    }
    Ok(json_body(&page.body(
        "invocationJobSummaries",
        &jobs,
        Job::public,
    )))
}
