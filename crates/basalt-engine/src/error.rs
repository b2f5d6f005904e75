//! Engine failures. The server maps each to the Bedrock error a client expects.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The admission queue is full.
    #[error("the model is busy: {queued} requests are already queued")]
    Busy { queued: usize },
    /// Reservations would leave no decode slot shared.
    #[error("{wanted} decode slots were asked to be reserved, but only {reservable} can be")]
    NoCapacity { wanted: usize, reservable: usize },
    /// The prompt does not fit the context window.
    #[error("the input is {tokens} tokens, but the model's context window is {window} tokens")]
    InputTooLong { tokens: usize, window: u32 },
    #[error("could not load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    /// The request asks for something the model cannot do (a size, a step count).
    #[error("{0}")]
    InvalidRequest(String),
    /// The inference thread failed while running a request.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The inference thread has stopped; the server must be restarted.
    #[error("the inference worker has stopped")]
    WorkerGone,
}
