//! Knowledge bases, as bedrock-agent and bedrock-agent-runtime define them.
//!
//! - [`resources`]: the KnowledgeBase, DataSource and IngestionJob documents and the
//!   validation of the requests that create them.
//! - [`source`]: what a data source holds: S3 objects (through `basalt-objects`) with
//!   their `.metadata.json` sidecars.
//! - [`ingestion`]: the durable runner that parses, chunks, embeds and indexes.
//! - [`documents`]: the documents API (IngestKnowledgeBaseDocuments and friends),
//!   queued durably and indexed by the same runner.
//! - [`retrieval`]: Retrieve's request and result shapes over the index.
//! - [`grounding`]: RetrieveAndGenerate's prompt and the citations that tie the
//!   answer's spans to what was retrieved.
//!
//! Models stay outside: the server hands in an [`Embedder`].

pub mod documents;
pub mod grounding;
pub mod ingestion;
pub mod resources;
pub mod retrieval;
pub mod source;
pub mod vectors;

use std::sync::Arc;

/// An embedding model as knowledge bases use it. Blocking: callers run it on a
/// blocking thread.
pub trait Embedder: Send + Sync {
    /// Vectors fitted to the knowledge base's width and L2-normalised.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
    /// Width of the vectors [`Embedder::embed`] returns.
    fn dimensions(&self) -> usize;
    /// Byte ranges of the tokens of `text`, in the model's own tokenizer.
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)>;
}

/// Finds the embedding model a knowledge base names.
pub trait Embedders: Send + Sync {
    /// `Ok(None)` while the model is still loading.
    fn embedder(
        &self,
        model_arn: &str,
        dimensions: Option<usize>,
    ) -> Result<Option<Arc<dyn Embedder>>, basalt_proto::BedrockError>;
}

/// Adapts an [`Embedder`] to the chunker's two traits.
pub(crate) struct ChunkerModel<'a>(pub &'a dyn Embedder);

impl basalt_chunking::Tokenizer for ChunkerModel<'_> {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        self.0.token_spans(text)
    }
}

impl basalt_chunking::SentenceEmbedder for ChunkerModel<'_> {
    fn embed(&self, sentences: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed(sentences)
    }
}
