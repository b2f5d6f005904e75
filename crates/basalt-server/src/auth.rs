//! SigV4 verification for every request but `/health`. The whole body is read
//! here (bounded) because the signature covers its hash; handlers then get the
//! buffered bytes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use basalt_proto::{BedrockError, ErrorCode};
use basalt_sigv4::{RequestParts, SigV4Error, VerifyOptions};
use futures::StreamExt;

use crate::edge::error_response;
use crate::AppState;

/// Largest request body (InvokeModel's documented limit).
pub const MAX_BODY_BYTES: usize = 25_000_000;
/// Bytes read past the limit before answering, so the client sees the error rather
/// than a reset connection; a larger body gets the connection closed.
const DRAIN_LIMIT: usize = 4 * MAX_BODY_BYTES;

/// The region of callers that authenticate with an API key.
const BEARER_REGION: &str = "us-east-1";

/// What handlers need from the signature: the region the caller signed for.
#[derive(Debug, Clone)]
pub struct Caller {
    pub region: String,
}

pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let caller = match verify(&state, &parts, &bytes) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(caller);
    next.run(request).await
}

async fn read_body(body: Body) -> Result<Bytes, BedrockError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            BedrockError::validation(format!("Could not read the request body: {e}"))
        })?;
        seen += chunk.len();
        if seen <= MAX_BODY_BYTES {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(BedrockError::constraint(
            "body",
            format!("{seen} bytes"),
            &format!("Member must have length less than or equal to {MAX_BODY_BYTES}"),
        ));
    }
    Ok(Bytes::from(buf))
}

fn verify(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<Caller, BedrockError> {
    let auth = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| sig_error(&SigV4Error::Missing))?
        .to_str()
        .map_err(|_| {
            sig_error(&SigV4Error::Malformed(
                "the Authorization header is not ASCII".into(),
            ))
        })?;
    if let Some(token) = auth.strip_prefix("Bearer ") {
        let keys = state.api_keys.as_ref().ok_or_else(|| {
            BedrockError::new(
                ErrorCode::UnrecognizedClient,
                "This server has no API keys; sign requests with SigV4 access keys.",
            )
        })?;
        keys.verify(token.trim())?;
        // A bearer token names no region; ARNs made for the caller use the default.
        return Ok(Caller {
            region: BEARER_REGION.to_string(),
        });
    }
    let auth = basalt_sigv4::parse_authorization(auth).map_err(|e| sig_error(&e))?;
    let secret = state
        .keys
        .secret_for(&auth.access_key_id)
        .ok_or_else(|| sig_error(&SigV4Error::UnknownAccessKey))?;
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let req = RequestParts {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body,
    };
    basalt_sigv4::verify(
        &req,
        &auth,
        &secret,
        time::OffsetDateTime::now_utc(),
        &VerifyOptions::default(),
    )
    .map_err(|e| sig_error(&e))?;
    Ok(Caller {
        region: auth.region,
    })
}

fn sig_error(e: &SigV4Error) -> BedrockError {
    let (kind, message) = e.aws_error();
    let code = match kind {
        "UnrecognizedClientException" => ErrorCode::UnrecognizedClient,
        "IncompleteSignatureException" => ErrorCode::IncompleteSignature,
        "MissingAuthenticationTokenException" => ErrorCode::MissingAuthenticationToken,
        _ => ErrorCode::InvalidSignature,
    };
    BedrockError::new(code, message)
}
