//! Event-stream responses: messages produced by a task, framed with
//! basalt-eventstream and flushed one by one. When the client goes away the
//! body is dropped, the channel closes, and the producing task stops, which in
//! turn releases the generation.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use basalt_eventstream::{event_message, exception_message, Message};
use basalt_proto::BedrockError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// The sending half handed to the producing task.
pub struct EventSender {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
}

impl EventSender {
    /// Sends one event; false when the client has gone.
    pub async fn event(&self, event_type: &str, payload: &serde_json::Value) -> bool {
        self.send(event_message(event_type, payload.to_string()))
            .await
    }

    /// Sends an in-stream exception under its union member name.
    pub async fn exception(&self, err: &BedrockError) -> bool {
        tracing::warn!(code = err.code.shape_name(), message = %err.message, "stream failed");
        let member = err
            .code
            .stream_member()
            .unwrap_or("internalServerException");
        self.send(exception_message(member, err.body())).await
    }

    async fn send(&self, message: Message) -> bool {
        match message.encode() {
            Ok(bytes) => self.tx.send(Ok(bytes)).await.is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "event too large to encode");
                false
            }
        }
    }
}

/// A 200 response whose body is fed by the returned sender.
pub fn response() -> (Response, EventSender) {
    // A small buffer: events are produced at token speed, and back-pressure keeps
    // memory bounded if the client reads slowly.
    let (tx, rx) = mpsc::channel(32);
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    (resp, EventSender { tx })
}
