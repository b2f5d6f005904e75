//! Local inference, with no knowledge of Bedrock: prompts in, tokens and
//! vectors out.
//!
//! - [`text`]: llama.cpp generation on one worker thread per model, behind a
//!   bounded admission queue; `scheduler` batches sequences continuously and
//!   reuses KV state of shared prefixes (`prefix_cache`).
//! - [`embed`]: candle BERT sentence embeddings (mean pooling).
//! - [`reservation`]: decode slots held back for provisioned throughput.
//! - [`image`]: Stable Diffusion (basalt-diffusion) behind the same admission queue.
//! - [`sampling`], [`stop`], [`template`]: the pure pieces, unit tested.

pub mod bert;
pub mod embed;
pub mod error;
pub mod image;
mod prefix_cache;
pub mod projection;
pub mod reservation;
pub mod sampling;
mod scheduler;
pub mod stop;
pub mod template;
pub mod text;

pub use basalt_grammar::Grammar;
pub use embed::{Embedded, EmbeddingModel, EmbeddingModelConfig};
pub use error::EngineError;
pub use image::{
    decode_image, Image, ImageDefaults, ImageModel, ImageModelConfig, ImageRequest, InitImage,
    Sampler,
};
pub use reservation::{Lane, Reservations};
pub use sampling::SamplingParams;
pub use template::ChatTurn;
pub use text::{
    GenerateRequest, GenerationEvent, GenerationStream, GenerationSummary, ModelLoad,
    OutputConstraint, StopReason, TextModel, TextModelConfig,
};
