//! SigV4 verification for every request but `/health`. The whole body is read
//! here (bounded) because the signature covers its hash; handlers then get the
//! buffered bytes. Once the caller is known, its key's policy (if it has one) is
//! asked whether the operation may run on its resource, as IAM would be.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use basalt_policy::Decision;
use basalt_proto::{BedrockError, ErrorCode};
use basalt_sigv4::{RequestParts, SigV4Error, VerifyOptions};
use futures::StreamExt;

use crate::authorization::{self, Scope};
use crate::edge::error_response;
use crate::keys::Access;
use crate::{operations, AppState};

/// Largest request body (InvokeModel's documented limit).
pub const MAX_BODY_BYTES: usize = 25_000_000;
/// Bytes read past the limit before answering, so the client sees the error rather
/// than a reset connection; a larger body gets the connection closed.
const DRAIN_LIMIT: usize = 4 * MAX_BODY_BYTES;

/// The region of callers that authenticate with an API key.
const BEARER_REGION: &str = "us-east-1";

/// What handlers need from the signature: the region the caller signed for, and the
/// account its key belongs to, which owns every resource it creates and is the only
/// one whose resources it sees.
#[derive(Debug, Clone)]
pub struct Caller {
    pub region: String,
    pub account: String,
}

/// The key a request was made with, and what it may do.
struct Identity {
    /// The access key ID or API key ID.
    key_id: String,
    access: Access,
}

pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let (caller, identity) = match verify(&state, &parts, &bytes) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    if let Err(e) = authorize(&state, &mut parts, &bytes, &caller, &identity).await {
        return error_response(&e);
    }
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

/// Refuses the request with AccessDeniedException unless the key's policy allows it.
async fn authorize(
    state: &AppState,
    parts: &mut Parts,
    body: &[u8],
    caller: &Caller,
    identity: &Identity,
) -> Result<(), BedrockError> {
    let policy = match &identity.access {
        Access::Unrestricted => return Ok(()),
        Access::Policy(policy) => Some(policy),
        Access::Unreadable(reason) => {
            tracing::warn!(key = %identity.key_id, %reason, "the key's stored policy is not valid; refusing its requests");
            None
        }
    };
    // Unknown paths are answered UnknownOperation, as they are for any signed request.
    let Some(route) = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
    else {
        return Ok(());
    };
    let params = RawPathParams::from_request_parts(parts, &()).await.ok();
    let labels: Vec<(&str, &str)> = params.iter().flat_map(|p| p.iter()).collect();
    let scope = Scope {
        region: &caller.region,
        account: &caller.account,
        catalog: &state.catalog,
    };
    let checks = match operations::name(parts.method.as_str(), &route) {
        Some(operation) => authorization::checks(operation, &labels, body, &scope),
        // A route without an operation name (a method it does not serve): only a
        // policy that allows every bedrock action lets it through to its answer.
        None => vec![authorization::Check {
            action: format!("{}:{}", basalt_policy::SERVICE, parts.method),
            resource: "*".into(),
        }],
    };
    let refused = checks.into_iter().find_map(|check| {
        let decision = policy.map_or(Decision::ImplicitDeny, |p| {
            p.evaluate(&check.action, &check.resource)
        });
        (decision != Decision::Allow).then_some((check, decision))
    });
    let Some((check, decision)) = refused else {
        return Ok(());
    };
    tracing::info!(key = %identity.key_id, action = %check.action, resource = %check.resource, ?decision, "refused by the key's policy");
    let principal = format!("arn:aws:iam::{}:user/{}", caller.account, identity.key_id);
    Err(BedrockError::new(
        ErrorCode::AccessDenied,
        basalt_policy::denial_message(&principal, &check.action, &check.resource, decision),
    ))
}

fn verify(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
) -> Result<(Caller, Identity), BedrockError> {
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
        let record = keys.verify(token.trim())?;
        // A bearer token names no region; ARNs made for the caller use the default.
        return Ok((
            Caller {
                region: BEARER_REGION.to_string(),
                account: record
                    .account_id
                    .clone()
                    .unwrap_or_else(|| state.account_id.clone()),
            },
            Identity {
                access: record.access(),
                key_id: record.id,
            },
        ));
    }
    let auth = basalt_sigv4::parse_authorization(auth).map_err(|e| sig_error(&e))?;
    let key = state
        .keys
        .lookup(&auth.access_key_id)
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
        &key.secret,
        time::OffsetDateTime::now_utc(),
        &VerifyOptions::default(),
    )
    .map_err(|e| sig_error(&e))?;
    Ok((
        Caller {
            region: auth.region,
            account: key.account.unwrap_or_else(|| state.account_id.clone()),
        },
        Identity {
            key_id: auth.access_key_id,
            access: key.access,
        },
    ))
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
