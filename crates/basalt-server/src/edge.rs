//! The edge between typed failures and HTTP: every error leaves through
//! [`error_response`], with the status, `x-amzn-ErrorType` and JSON body that
//! AWS would send. Engine errors are mapped here too.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use basalt_engine::EngineError;
use basalt_proto::{BedrockError, ErrorCode};

pub const ERROR_TYPE: &str = "x-amzn-errortype";
pub const REQUEST_ID: &str = "x-amzn-requestid";

pub fn error_response(err: &BedrockError) -> Response {
    let status =
        StatusCode::from_u16(err.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(code = err.code.shape_name(), message = %err.message, "request failed");
    } else {
        tracing::debug!(code = err.code.shape_name(), message = %err.message, "request refused");
    }
    let mut resp = (status, err.body()).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(ERROR_TYPE, HeaderValue::from_static(err.code.shape_name()));
    resp
}

/// Wraps [`BedrockError`] so handlers can return `Result<_, ApiError>`.
#[derive(Debug)]
pub struct ApiError(pub BedrockError);

impl From<BedrockError> for ApiError {
    fn from(e: BedrockError) -> Self {
        Self(e)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self(engine_error(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// A percent-decoded path label (`{modelId}` and friends). axum's own `Path`
/// answers a label that does not decode to UTF-8 with plain text; this answers
/// with a ValidationException.
pub struct Label(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Label {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(label)| Self(label))
            .map_err(|e| {
                ApiError(BedrockError::validation(format!(
                    "The request path is invalid: {}.",
                    e.body_text()
                )))
            })
    }
}

/// Every path label of a route, percent-decoded, in path order.
pub struct Labels(pub Vec<String>);

impl<S: Send + Sync> FromRequestParts<S> for Labels {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Path(labels)| Self(labels.into_iter().map(|(_, v)| v).collect()))
            .map_err(|e| {
                ApiError(BedrockError::validation(format!(
                    "The request path is invalid: {}.",
                    e.body_text()
                )))
            })
    }
}

pub fn engine_error(e: EngineError) -> BedrockError {
    match e {
        EngineError::Busy { .. } => BedrockError::new(
            ErrorCode::Throttling,
            "Too many requests, please wait before trying again.",
        ),
        EngineError::InvalidRequest(message) => BedrockError::validation(message),
        EngineError::NoCapacity { wanted, reservable } => BedrockError::new(
            ErrorCode::ServiceQuotaExceeded,
            format!(
                "This server's model can reserve {reservable} model units in all (one decode slot each, and one slot always stays on demand); {wanted} were asked for. Lower modelUnits, delete another provisioned throughput for this model, or raise --batch-slots."
            ),
        ),
        EngineError::InputTooLong { tokens, window } => BedrockError::validation(format!(
            "Input is too long for requested model: the prompt is {tokens} tokens and the model's context window is {window} tokens."
        )),
        EngineError::Template(t) => BedrockError::validation(format!(
            "The conversation could not be formatted for this model: {t}"
        )),
        EngineError::Load { .. } | EngineError::WorkerGone => BedrockError::new(
            ErrorCode::ServiceUnavailable,
            format!("The model is unavailable: {e}. Check the server log."),
        ),
        EngineError::Inference(reason) => BedrockError::new(
            ErrorCode::ModelError,
            format!("The model failed while processing the request: {reason}"),
        ),
    }
}

/// A query string as a map, or ValidationException saying what is wrong with it.
pub fn query_map(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, BedrockError> {
    query.map(|Query(q)| q).map_err(|e| {
        BedrockError::validation(format!("The query string is invalid: {}.", e.body_text()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_engine_is_throttling_429() {
        let r = error_response(&engine_error(EngineError::Busy { queued: 1 }));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[ERROR_TYPE], "ThrottlingException");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn long_input_is_validation() {
        let e = engine_error(EngineError::InputTooLong {
            tokens: 9000,
            window: 8192,
        });
        assert_eq!(e.code, ErrorCode::Validation);
        assert!(e
            .message
            .starts_with("Input is too long for requested model"));
    }
}
