//! Batch inference's control plane: CreateModelInvocationJob,
//! GetModelInvocationJob, ListModelInvocationJobs and StopModelInvocationJob. The
//! jobs themselves run in [`basalt_batch::Runner`], fed by the engine.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use basalt_batch::job::{job_arn, new_job_id, parse_identifier, parse_timestamp};
use basalt_batch::runner::BatchError;
use basalt_batch::{CreateJobRequest, InvocationType, Job, JobStatus, Runner};
use basalt_proto::{from_json, BedrockError, ErrorCode};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::edge::{query_map, ApiError, Label};
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
        BatchError::Store(e) => BedrockError::internal(format!("The job store failed: {e}")),
    }
}

fn not_found(identifier: &str) -> BedrockError {
    BedrockError::not_found(format!(
        "The model invocation job {identifier} was not found. Check the job identifier and try again."
    ))
}

pub async fn create_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let req: CreateJobRequest = from_json(&body)?;
    let valid = req.validate()?;
    let store = runner.store();
    if let Some(t) = &req.client_request_token {
        let seen = store
            .idempotent_response(CREATE, t)
            .map_err(|e| BedrockError::internal(format!("The job store failed: {e}")))?;
        if let Some((seen, response)) = seen {
            if seen.as_bytes() == body.as_ref() {
                return Ok(json_body(&response));
            }
            return Err(BedrockError::new(
                ErrorCode::Conflict,
                "The clientRequestToken was already used with a different CreateModelInvocationJob request.",
            )
            .into());
        }
    }
    let entry = state.catalog.resolve(&req.model_id)?;
    if valid.invocation_type == InvocationType::Converse && entry.format.is_embedding() {
        return Err(BedrockError::validation(format!(
            "The model {} returns embeddings; a Converse job needs a text model.",
            req.model_id
        ))
        .into());
    }
    let arn = job_arn(&caller.region, &state.account_id, &new_job_id());
    let job = Job::new(
        &req,
        &valid,
        arn,
        req.model_id.clone(),
        OffsetDateTime::now_utc(),
    );
    runner.submit(&job).map_err(batch_error)?;
    let response = json!({ "jobArn": job.job_arn });
    if let Some(t) = &req.client_request_token {
        store
            .remember_response(CREATE, t, &String::from_utf8_lossy(&body), &response)
            .map_err(|e| BedrockError::internal(format!("The job store failed: {e}")))?;
    }
    Ok(json_body(&response))
}

pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let id = parse_identifier(&identifier)?;
    let job = runner
        .get(&id)
        .map_err(batch_error)?
        .ok_or_else(|| not_found(&identifier))?;
    Ok(json_body(&job.public()))
}

pub async fn stop_job(
    State(state): State<Arc<AppState>>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let id = parse_identifier(&identifier)?;
    runner.stop(&id).map_err(|e| match e {
        BatchError::NotFound(_) => not_found(&identifier),
        e => batch_error(e),
    })?;
    Ok(json_body(&json!({})))
}

fn time_filter(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<OffsetDateTime>, BedrockError> {
    query
        .get(name)
        .map(|v| {
            parse_timestamp(v).ok_or_else(|| {
                BedrockError::validation(format!(
                    "{name} must be an ISO 8601 timestamp such as 2026-01-31T12:00:00Z; got {v}."
                ))
            })
        })
        .transpose()
}

fn enum_filter<'a>(
    query: &'a HashMap<String, String>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, BedrockError> {
    match query.get(name) {
        Some(v) if !allowed.contains(&v.as_str()) => Err(BedrockError::constraint(
            name,
            v,
            &format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ),
        )),
        v => Ok(v.map(String::as_str)),
    }
}

pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let query = query_map(query)?;
    let max = match query.get("maxResults") {
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(BedrockError::constraint(
                    "maxResults",
                    m,
                    "Member must have value between 1 and 1000",
                )
                .into())
            }
        },
        None => 1000,
    };
    let start = match query.get("nextToken") {
        Some(t) => t.parse::<usize>().map_err(|_| {
            BedrockError::validation("The nextToken is not one this server issued.")
        })?,
        None => 0,
    };
    let after = time_filter(&query, "submitTimeAfter")?;
    let before = time_filter(&query, "submitTimeBefore")?;
    let statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let status = enum_filter(&query, "statusEquals", &statuses)?;
    enum_filter(&query, "sortBy", &["CreationTime"])?;
    let ascending =
        enum_filter(&query, "sortOrder", &["Ascending", "Descending"])? == Some("Ascending");
    let name = query.get("nameContains");
    let mut jobs: Vec<Job> = runner
        .list()
        .map_err(batch_error)?
        .into_iter()
        .filter(|j| {
            let submitted = parse_timestamp(&j.submit_time);
            status.is_none_or(|s| j.status.as_str() == s)
                && name.is_none_or(|n| j.job_name.contains(n.as_str()))
                && after.is_none_or(|a| submitted.is_some_and(|t| t > a))
                && before.is_none_or(|b| submitted.is_some_and(|t| t < b))
        })
        .collect();
    // Stored in submission order; newest first unless asked otherwise, as Bedrock lists.
    if !ascending {
        jobs.reverse();
    }
    let page: Vec<Value> = jobs.iter().skip(start).take(max).map(Job::public).collect();
    let mut body = json!({ "invocationJobSummaries": page });
    if start + max < jobs.len() {
        body["nextToken"] = json!((start + max).to_string());
    }
    Ok(json_body(&body))
}
