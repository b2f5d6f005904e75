//! Guardrails as Bedrock defines them: a configuration, validated field by field,
//! and the evaluation of each policy over text. Nothing here does I/O; the policies
//! that need sentence embeddings (denied topics, content filters, contextual
//! grounding) ask the caller's [`Embedder`] for them.

pub mod assess;
pub mod calibration;
pub mod config;
pub mod pii;
pub mod screen;
pub mod sentences;
pub mod words;

use std::future::Future;

pub use assess::{Compiled, Content, Evaluation, OutputScope, Qualifier};
pub use config::{Definition, GuardrailRequest, Source};

#[derive(Debug, thiserror::Error)]
pub enum GuardrailError {
    /// A configuration or request member is invalid; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("A guardrail can have at most 200 tags.")]
    TooManyTags,
    /// The embedding model failed or is not available.
    #[error("the embedding model failed: {0}")]
    Embedding(String),
}

/// Sentence embeddings for the policies that compare meanings. Vectors need not be
/// normalised; they are, here, before any comparison.
pub trait Embedder: Sync {
    fn embed(
        &self,
        texts: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Vec<f32>>, String>> + Send;

    /// Screen vectors (see [`screen`]) for `texts`, or `None` when there is no static
    /// table (yet): then every window goes to the model.
    fn screen(&self, _texts: &[&str]) -> Option<screen::Screened> {
        None
    }
}

/// Cosine similarity of two unit vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = dot(&v, &v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
