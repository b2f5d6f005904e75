//! A knowledge base's search index. The types here are shared by every vector
//! store Basalt can write to: the embedded one in this crate (BM25 over the
//! chunk text, approximate nearest neighbours over the vectors, persisted in a
//! directory) and PostgreSQL with pgvector (`basalt-pgvector`).
//!
//! ## Choices in the embedded index
//!
//! - BM25 is tantivy, with only its `mmap` feature (its one persistent
//!   directory): no doc-store compression, stemmer or stop words. Text is split
//!   on non-alphanumerics, lower-cased and ASCII-folded.
//! - Nearest neighbours are a compact HNSW of our own ([`hnsw`], about 400
//!   lines). The crates looked at did not fit: `hnsw_rs` has no deletion and
//!   pulls in rayon, mmap-rs, bincode 1 and a SIMD distance crate;
//!   `instant-distance` builds once from a fixed set (no inserts, no deletes);
//!   `usearch` and `faiss` bind C++ (a C++ toolchain in every build). Ours
//!   inserts one chunk at a time, deletes by tombstone (compaction rebuilds when
//!   dead vectors outnumber live ones), snapshots its graph next to an
//!   append-only vector file, and takes a filter during the walk.
//! - Up to [`IndexOptions::exact_below`] candidate chunks (5,000) search is an
//!   exact scan, so small knowledge bases and selective filters are exact.
//! - Scores: SEMANTIC is `(1 + cos) / 2`, clamped to [0, 1]: absolute, so a
//!   score means the same across queries. HYBRID is
//!   `0.5 * (1 + cos) / 2 + 0.5 * bm25 / max_bm25` over the union of the top
//!   `max(100, offset + limit)` of each side, where `max_bm25` is the best BM25
//!   score among the chunks the filter passes and every candidate's BM25 and
//!   cosine are computed exactly (a chunk without a query term has BM25 0).
//!   This is the arithmetic-mean combination of OpenSearch's hybrid search,
//!   with the vector side kept absolute rather than min-max normalised. When
//!   no chunk holds a query term, HYBRID ranks as SEMANTIC at half the score.
//! - Ties order by chunk id, and the candidate counts do not depend on the
//!   page below 96 (vectors) or 100 (hybrid) results, so pages are stable.

pub mod embedded;
pub mod filter;
pub mod hnsw;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use embedded::{EmbeddedIndex, IndexOptions};
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

impl SearchRequest {
    /// Checks the limits every store shares; returns `offset + limit`, the number
    /// of ranked results the store must find.
    pub fn checked_want(&self) -> Result<usize, IndexError> {
        if self.text.len() > embedded::MAX_QUERY_BYTES {
            return Err(IndexError::Invalid(format!(
                "the query text is longer than {} bytes",
                embedded::MAX_QUERY_BYTES
            )));
        }
        let want = self.offset.saturating_add(self.limit);
        if want > embedded::MAX_RESULTS {
            return Err(IndexError::Invalid(format!(
                "offset + limit may be at most {}",
                embedded::MAX_RESULTS
            )));
        }
        Ok(want)
    }
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
    /// A request the index refuses: an empty id, a zero vector, a query text
    /// or page past the limits. The message says which.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Backend(String),
}
