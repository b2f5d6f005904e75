//! A knowledge base's search index. The types here are shared by every vector
//! store Basalt can write to: the embedded one in this crate (BM25 over the
//! chunk text, approximate nearest neighbours over the vectors, persisted in a
//! directory) and PostgreSQL with pgvector (`basalt-pgvector`).

pub mod filter;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use filter::{CompareOp, Filter, FilterError};

/// Metadata keys Bedrock adds to every chunk; filters may name them too.
pub const SOURCE_URI_KEY: &str = "x-amz-bedrock-kb-source-uri";
pub const CHUNK_ID_KEY: &str = "x-amz-bedrock-kb-chunk-id";
pub const DATA_SOURCE_ID_KEY: &str = "x-amz-bedrock-kb-data-source-id";

/// One indexed chunk. `document_id` groups the chunks of one source document,
/// so that a changed or deleted document is replaced as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Unique within the index.
    pub chunk_id: String,
    pub document_id: String,
    /// The text searched (BM25) and embedded.
    pub text: String,
    /// What a hit returns as `content.text`; differs from `text` for hierarchical
    /// chunking, where children are searched and their parent is returned.
    pub return_text: Option<String>,
    pub vector: Vec<f32>,
    /// User attributes plus the `x-amz-bedrock-kb-*` keys. Values are JSON
    /// strings, numbers, booleans or arrays of strings.
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchType {
    Semantic,
    Hybrid,
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    /// The query text, used by HYBRID for the BM25 side.
    pub text: String,
    pub search_type: SearchType,
    pub filter: Option<Filter>,
    /// Results wanted, after skipping `offset` (pagination).
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub chunk_id: String,
    pub document_id: String,
    /// `return_text` when the chunk has one, else `text`.
    pub text: String,
    pub metadata: Map<String, Value>,
    /// In [0, 1]; higher is better.
    pub score: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("a vector has {got} dimensions but the index holds {expected}")]
    Dimensions { expected: usize, got: usize },
    #[error("the index at {path} is unreadable: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("index I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Backend(String),
}
