//! bedrock-runtime's async invoke: StartAsyncInvoke, GetAsyncInvoke and
//! ListAsyncInvokes. Invocations run in the batch runner (durable, like jobs), and
//! belong, like jobs, to the account their ARN names.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use basalt_batch::async_invoke::{
    invocation_arn, parse_arn, AsyncInvocation, AsyncStatus, StartRequest,
};
use basalt_batch::job::{new_job_id, parse_timestamp};
use basalt_batch::runner::BatchError;
use basalt_proto::{from_json, BedrockError, ErrorCode};
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::batch::{owned, BatchRunner, JobToken};
use crate::edge::{ApiError, Label};
use crate::listing::ListQuery;
use crate::runtime::json_body;
use crate::AppState;

const START: &str = "StartAsyncInvoke";

fn runner(state: &AppState) -> Result<&Arc<BatchRunner>, BedrockError> {
    state.batch.as_ref().ok_or_else(|| {
        BedrockError::new(
            ErrorCode::ServiceUnavailable,
            "Async invoke needs a data directory; this server was started without one.",
        )
    })
}

fn store_error(e: impl std::fmt::Display) -> BedrockError {
    BedrockError::internal(format!("The invocation store failed: {e}"))
}

fn runner_error(e: BatchError) -> BedrockError {
    store_error(e)
}

pub async fn start_async_invoke(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let req: StartRequest = from_json(&body)?;
    let folder = req.validate()?;
    let token = JobToken::new(
        runner.store().as_ref(),
        &caller.account,
        START,
        req.client_request_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay().await? {
        return Ok(json_body(&response));
    }
    let entry = state.catalog.resolve(&req.model_id)?;
    let model_arn = format!(
        "arn:aws:bedrock:{}::foundation-model/{}",
        caller.region, entry.model_id
    );
    let arn = invocation_arn(&caller.region, &caller.account, &new_job_id());
    let invocation = AsyncInvocation::new(&req, &folder, arn, model_arn, OffsetDateTime::now_utc());
    runner
        .submit_async(&invocation)
        .await
        .map_err(runner_error)?;
    let response = json!({ "invocationArn": invocation.invocation_arn });
    token.remember(&response).await?;
    Ok(json_body(&response))
}

pub async fn get_async_invoke(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(arn): Label,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let id = parse_arn(&arn)?;
    // GetAsyncInvoke's model has no ResourceNotFoundException: an unknown ARN is invalid
    // input, and so is another account's.
    let invocation = if crate::authorization::other_account(&arn, &caller.account) {
        None
    } else {
        runner.get_async(&id).await.map_err(runner_error)?
    };
    let invocation = invocation
        .filter(|i| owned(&state, &caller.account, &i.invocation_arn))
        .ok_or_else(|| {
            BedrockError::validation(format!(
                "The async invocation {arn} was not found. Check the invocationArn and try again."
            ))
        })?;
    Ok(json_body(&invocation.public()))
}

pub async fn list_async_invokes(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let runner = runner(&state)?;
    let query = ListQuery::parse(query)?;
    let page = query.page(1000)?;
    let window = query.window("submitTimeAfter", "submitTimeBefore")?;
    let statuses: Vec<&str> = AsyncStatus::ALL.iter().map(|s| s.as_str()).collect();
    let status = query.one_of("statusEquals", &statuses)?;
    query.one_of("sortBy", &["SubmissionTime"])?;
    let mut all: Vec<AsyncInvocation> = runner
        .list_async()
        .await
        .map_err(runner_error)?
        .into_iter()
        .filter(|i| {
            owned(&state, &caller.account, &i.invocation_arn)
                && status.is_none_or(|s| i.status.as_str() == s)
                && window.contains(parse_timestamp(&i.submit_time))
        })
        .collect();
    if query.descending()? {
        all.reverse();
    }
    Ok(json_body(&page.body(
        "asyncInvokeSummaries",
        &all,
        AsyncInvocation::public,
    )))
}
