//! The middleware that sees each runtime invocation whole: the request body (already
//! buffered, within its size limit, by authentication), and the response. A JSON
//! response is complete when the handler returns, so reading it back costs nothing;
//! an event stream is teed, each chunk passed on as it comes and decoded on the side,
//! and its record is queued when the stream ends or the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use basalt_eventstream::decode_message;
use basalt_proto::BedrockError;
use base64::Engine as _;
use futures::Stream;
use serde_json::Value;
use time::OffsetDateTime;

use super::record::{DataKind, Invocation};
use super::{Active, InvocationLogging, RequestId};
use crate::auth::Caller;
use crate::edge::{error_response, ERROR_TYPE};
use crate::AppState;

/// Most stream payload kept for `outputBodyJson`; a longer stream's body is cut there.
const MAX_STREAM_BODY_BYTES: usize = 8 << 20;
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
const INPUT_TOKENS: &str = "x-amzn-bedrock-input-token-count";
const OUTPUT_TOKENS: &str = "x-amzn-bedrock-output-token-count";

/// The runtime operation a matched route serves, if it is one that is logged.
fn operation(route: &str) -> Option<&'static str> {
    match route {
        "/model/{model_id}/invoke" => Some("InvokeModel"),
        "/model/{model_id}/invoke-with-response-stream" => Some("InvokeModelWithResponseStream"),
        "/model/{model_id}/converse" => Some("Converse"),
        "/model/{model_id}/converse-stream" => Some("ConverseStream"),
        _ => None,
    }
}

/// Which delivery flag covers a model's bodies: the catalog's body format decides
/// (imported-model and provisioned ARNs included); an ID it cannot resolve is text.
fn data_kind(state: &AppState, model_id: &str) -> DataKind {
    match state.catalog.resolve(model_id) {
        Ok(entry) if entry.format.is_embedding() => DataKind::Embedding,
        Ok(entry) if entry.format.is_image() => DataKind::Image,
        _ => DataKind::Text,
    }
}

/// The caller, of `account`, as an IAM ARN. Only the access key ID (never a secret or
/// a token) is read.
fn identity_arn(state: &AppState, account: &str, headers: &HeaderMap) -> String {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.starts_with("Bearer ") {
        return format!("arn:aws:iam::{account}:user/BedrockAPIKey");
    }
    let key_id = auth
        .split_once("Credential=")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or("");
    if key_id == state.keys.root().access_key_id {
        format!("arn:aws:iam::{account}:root")
    } else {
        format!("arn:aws:iam::{account}:user/{key_id}")
    }
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// Converse's `usage` (in the response body or the stream's metadata event).
fn usage_tokens(v: &Value) -> (Option<u64>, Option<u64>) {
    let usage = &v["usage"];
    (
        usage["inputTokens"].as_u64(),
        usage["outputTokens"].as_u64(),
    )
}

/// Logs the invocation when a logging configuration is in force for the caller's region.
pub async fn capture(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(logging) = state.invocation_logging.clone() else {
        return next.run(request).await;
    };
    let Some(operation) = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| operation(p.as_str()))
    else {
        return next.run(request).await;
    };
    let (region, account) = match request.extensions().get::<Caller>() {
        Some(c) => (c.region.clone(), c.account.clone()),
        None => return next.run(request).await,
    };
    let Some(active) = logging.active(&account, &region) else {
        return next.run(request).await;
    };
    let timestamp = OffsetDateTime::now_utc();
    let (mut parts, body) = request.into_parts();
    let model_id = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(name, _)| *name == "model_id")
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_default();
    // Authentication buffered the body within its limit, so this only takes it back.
    let bytes = match axum::body::to_bytes(body, crate::auth::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&BedrockError::validation(format!(
                "Could not read the request body: {e}"
            )))
        }
    };
    let kind = data_kind(&state, &model_id);
    let with_bodies = active.config.delivers(kind);
    let mut invocation = Invocation {
        timestamp,
        identity_arn: identity_arn(&state, &account, &parts.headers),
        account_id: account,
        region,
        request_id: parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        operation: operation.to_string(),
        model_id,
        input_content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string(),
        input_body: if with_bodies {
            serde_json::from_slice(&bytes).ok()
        } else {
            None
        },
        input_tokens: None,
        output_content_type: None,
        output_body: None,
        output_tokens: None,
        error_code: None,
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;

    let headers = response.headers();
    invocation.input_tokens = header_number(headers, INPUT_TOKENS);
    invocation.output_tokens = header_number(headers, OUTPUT_TOKENS);
    if let Some(code) = headers.get(ERROR_TYPE).and_then(|v| v.to_str().ok()) {
        invocation.error_code = Some(code.to_string());
        logging.submit(&active, &invocation, with_bodies);
        return response;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type.starts_with(EVENT_STREAM) {
        // InvokeModelWithResponseStream names the chunks' type in its own header.
        invocation.output_content_type = Some(
            headers
                .get("x-amzn-bedrock-content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string(),
        );
        let (parts, body) = response.into_parts();
        let tee = Tee {
            inner: body.into_data_stream(),
            buf: Vec::new(),
            undecodable: false,
            provider_chunks: operation == "InvokeModelWithResponseStream",
            collect: with_bodies,
            kept: 0,
            events: Vec::new(),
            pending: Some(Pending {
                logging,
                active,
                invocation,
                with_bodies,
            }),
        };
        return Response::from_parts(parts, Body::from_stream(tee));
    }
    invocation.output_content_type = Some(content_type);
    let (parts, body) = response.into_parts();
    let out = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            invocation.error_code = Some("InternalServerException".into());
            logging.submit(&active, &invocation, with_bodies);
            return error_response(&BedrockError::internal(format!(
                "Could not read the response body: {e}"
            )));
        }
    };
    if with_bodies || invocation.input_tokens.is_none() {
        if let Ok(value) = serde_json::from_slice::<Value>(&out) {
            if invocation.input_tokens.is_none() {
                (invocation.input_tokens, invocation.output_tokens) = usage_tokens(&value);
            }
            if with_bodies {
                invocation.output_body = Some(value);
            }
        }
    }
    logging.submit(&active, &invocation, with_bodies);
    Response::from_parts(parts, Body::from(out))
}

struct Pending {
    logging: Arc<InvocationLogging>,
    active: Arc<Active>,
    invocation: Invocation,
    with_bodies: bool,
}

/// Passes a stream's bytes on unchanged while decoding its events for the record.
struct Tee {
    inner: BodyDataStream,
    buf: Vec<u8>,
    undecodable: bool,
    provider_chunks: bool,
    collect: bool,
    kept: usize,
    events: Vec<Value>,
    pending: Option<Pending>,
}

/// An exception event's union member (`modelStreamErrorException`) as its shape name.
fn shape_name(member: &str) -> String {
    let mut chars = member.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

impl Tee {
    fn observe(&mut self, chunk: &[u8]) {
        if self.undecodable || self.pending.is_none() {
            return;
        }
        self.buf.extend_from_slice(chunk);
        loop {
            match decode_message(&self.buf) {
                Ok(Some((message, used))) => {
                    self.buf.drain(..used);
                    self.event(&message);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "invocation logging could not decode a response stream");
                    self.undecodable = true;
                    self.buf = Vec::new();
                    break;
                }
            }
        }
    }

    fn event(&mut self, message: &basalt_eventstream::Message) {
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        let inv = &mut pending.invocation;
        match message.header_str(":message-type") {
            Some("exception") => {
                inv.error_code = message.header_str(":exception-type").map(shape_name);
                return;
            }
            Some("error") => {
                inv.error_code = message.header_str(":error-code").map(str::to_string);
                return;
            }
            _ => {}
        }
        let Ok(payload) = serde_json::from_slice::<Value>(&message.payload) else {
            return;
        };
        let event_type = message.header_str(":event-type").unwrap_or("");
        let logged = if self.provider_chunks {
            let Some(chunk) = payload["bytes"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                return;
            };
            let metrics = &chunk[basalt_providers::INVOCATION_METRICS];
            if let Some(n) = metrics["inputTokenCount"].as_u64() {
                inv.input_tokens = Some(n);
            }
            if let Some(n) = metrics["outputTokenCount"].as_u64() {
                inv.output_tokens = Some(n);
            }
            chunk
        } else {
            if event_type == "metadata" {
                let (input, output) = usage_tokens(&payload);
                inv.input_tokens = input.or(inv.input_tokens);
                inv.output_tokens = output.or(inv.output_tokens);
            }
            let mut event = serde_json::Map::new();
            event.insert(event_type.to_string(), payload);
            Value::Object(event)
        };
        if self.collect {
            let size = message.payload.len();
            if self.kept + size <= MAX_STREAM_BODY_BYTES {
                self.kept += size;
                self.events.push(logged);
            }
        }
    }

    fn finish(&mut self) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        if self.collect {
            pending.invocation.output_body = Some(Value::Array(std::mem::take(&mut self.events)));
        }
        pending
            .logging
            .submit(&pending.active, &pending.invocation, pending.with_bodies);
    }
}

impl Stream for Tee {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.observe(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

impl Drop for Tee {
    // A client that leaves mid-stream still gets its invocation logged.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_four_runtime_routes_are_logged() {
        assert_eq!(operation("/model/{model_id}/invoke"), Some("InvokeModel"));
        assert_eq!(
            operation("/model/{model_id}/converse-stream"),
            Some("ConverseStream")
        );
        assert_eq!(operation("/model/{model_id}/count-tokens"), None);
        assert_eq!(operation("/guardrails"), None);
    }

    #[test]
    fn exception_members_become_shape_names() {
        assert_eq!(
            shape_name("modelStreamErrorException"),
            "ModelStreamErrorException"
        );
        assert_eq!(shape_name(""), "");
    }
}
