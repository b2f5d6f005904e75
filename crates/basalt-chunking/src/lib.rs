//! Knowledge-base chunking: Bedrock's FIXED_SIZE, NONE, HIERARCHICAL and
//! SEMANTIC strategies.
//!
//! Tokens are the embedding model's: the caller passes a [`Tokenizer`] that
//! reports each token's byte span. A chunk's text is always a slice of the
//! document (from its first token's start to its last token's end), never
//! rewritten.
//!
//! FIXED_SIZE windows hold at most `maxTokens` tokens and successive windows
//! share exactly `round(maxTokens * overlapPercentage / 100)` tokens (at most
//! `maxTokens - 1`). A window that does not reach the end of the document is
//! shortened to end at a paragraph break, or failing that at a sentence end
//! or line break, when one lies in its last 20% of tokens (and shortening
//! keeps it longer than the overlap, so the overlap stays exact).
//!
//! HIERARCHICAL makes parent windows of the first level's `maxTokens`, then
//! cuts each parent into child windows of the second level's; both levels
//! overlap by `overlapTokens` (at most the level's `maxTokens - 1`). Children
//! are what is searched; [`Chunk::parent`] indexes [`Chunked::parents`].
//!
//! SEMANTIC follows LangChain's SemanticChunker, as Bedrock describes it:
//! see [`semantic`].

// Tests unwrap freely; the lib target (checked without cfg(test)) still may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod semantic;
mod text;

pub use config::{
    ChunkingConfig, ChunkingStrategy, FixedSizeChunkingConfiguration,
    HierarchicalChunkingConfiguration, HierarchicalChunkingLevelConfiguration,
    SemanticChunkingConfiguration, MAX_TOKENS_LIMIT,
};
pub use text::SimpleTokenizer;

/// Most chunks one document may make (children, for HIERARCHICAL).
pub const MAX_CHUNKS_PER_DOCUMENT: usize = 100_000;

/// The embedding model's tokenizer.
pub trait Tokenizer {
    /// Byte offsets `(start, end)` in `text` of each token, in order, with
    /// no special tokens. Spans may overlap or repeat (byte-level BPE splits
    /// one character into several tokens); spans out of range or off a
    /// character boundary are clamped and widened, not trusted.
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)>;
}

/// Embeds sentences for SEMANTIC chunking (blocking).
pub trait SentenceEmbedder {
    /// One vector per input, all of the same length.
    fn embed(&self, sentences: &[String]) -> Result<Vec<Vec<f32>>, String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub text: String,
    /// Index into [`Chunked::parents`] (HIERARCHICAL only).
    pub parent: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunked {
    /// Parent chunks' text (HIERARCHICAL only; empty otherwise).
    pub parents: Vec<String>,
    /// The chunks to embed and search, in document order.
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("{0}")]
    InvalidConfig(String),
    #[error("SEMANTIC chunking needs a sentence embedder")]
    NoEmbedder,
    #[error("embedding sentences for SEMANTIC chunking failed: {0}")]
    Embedding(String),
    #[error("the document makes more than {limit} chunks; split it into smaller documents or raise maxTokens")]
    TooManyChunks { limit: usize },
}

/// Chunks a document's text. Empty or whitespace-only text makes no chunks.
pub fn chunk(
    text: &str,
    config: &ChunkingConfig,
    tok: &dyn Tokenizer,
    emb: Option<&dyn SentenceEmbedder>,
) -> Result<Chunked, ChunkError> {
    chunk_with_limit(text, config, tok, emb, MAX_CHUNKS_PER_DOCUMENT)
}

/// [`chunk`] with a chosen cap on the number of chunks.
pub fn chunk_with_limit(
    text: &str,
    config: &ChunkingConfig,
    tok: &dyn Tokenizer,
    emb: Option<&dyn SentenceEmbedder>,
    max_chunks: usize,
) -> Result<Chunked, ChunkError> {
    let plan = plan(text, config, tok, emb, max_chunks)?;
    Ok(Chunked {
        parents: plan
            .parents
            .into_iter()
            .map(|r| text[r].to_string())
            .collect(),
        chunks: plan
            .chunks
            .into_iter()
            .map(|(r, parent)| Chunk {
                text: text[r].to_string(),
                parent,
            })
            .collect(),
    })
}

pub(crate) type Span = std::ops::Range<usize>;

/// Chunks as byte ranges of the document.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub parents: Vec<Span>,
    pub chunks: Vec<(Span, Option<usize>)>,
}

pub(crate) fn plan(
    text: &str,
    config: &ChunkingConfig,
    tok: &dyn Tokenizer,
    emb: Option<&dyn SentenceEmbedder>,
    max_chunks: usize,
) -> Result<Plan, ChunkError> {
    config.validate().map_err(ChunkError::InvalidConfig)?;
    let mut out = Plan::default();
    let lead = text.len() - text.trim_start().len();
    let whole = lead..lead + text.trim().len();
    if whole.is_empty() {
        return Ok(out);
    }
    if config.chunking_strategy == ChunkingStrategy::None || max_chunks == 0 {
        if max_chunks == 0 {
            return Err(ChunkError::TooManyChunks { limit: max_chunks });
        }
        out.chunks.push((whole, None));
        return Ok(out);
    }
    let spans = text::sanitize(text, tok.token_spans(text));
    if spans.is_empty() {
        // The tokenizer saw nothing in non-blank text; keep the text rather than lose it.
        out.chunks.push((whole, None));
        return Ok(out);
    }
    let too_many = || ChunkError::TooManyChunks { limit: max_chunks };
    match config.chunking_strategy {
        ChunkingStrategy::None => {}
        ChunkingStrategy::FixedSize => {
            let c = config
                .fixed_size_chunking_configuration
                .as_ref()
                .ok_or_else(unchecked)?;
            let max = to_usize(c.max_tokens);
            let overlap =
                (c.max_tokens as f64 * c.overlap_percentage as f64 / 100.0).round() as usize;
            let windows = windows(text, &spans, 0..spans.len(), max, overlap, max_chunks)
                .ok_or_else(too_many)?;
            out.chunks = windows
                .into_iter()
                .map(|w| (byte_range(&spans, w), None))
                .collect();
        }
        ChunkingStrategy::Hierarchical => {
            let c = config
                .hierarchical_chunking_configuration
                .as_ref()
                .ok_or_else(unchecked)?;
            let [parent_level, child_level] = c.level_configurations.as_slice() else {
                return Err(unchecked());
            };
            let parent_max = to_usize(parent_level.max_tokens);
            let child_max = to_usize(child_level.max_tokens);
            let overlap = to_usize(c.overlap_tokens);
            let parents = windows(
                text,
                &spans,
                0..spans.len(),
                parent_max,
                overlap,
                max_chunks,
            )
            .ok_or_else(too_many)?;
            for (p, parent) in parents.into_iter().enumerate() {
                out.parents.push(byte_range(&spans, parent.clone()));
                let left = max_chunks.saturating_sub(out.chunks.len());
                let children =
                    windows(text, &spans, parent, child_max, overlap, left).ok_or_else(too_many)?;
                out.chunks.extend(
                    children
                        .into_iter()
                        .map(|w| (byte_range(&spans, w), Some(p))),
                );
            }
        }
        ChunkingStrategy::Semantic => {
            let c = config
                .semantic_chunking_configuration
                .as_ref()
                .ok_or_else(unchecked)?;
            let emb = emb.ok_or(ChunkError::NoEmbedder)?;
            out.chunks = semantic::chunk(text, &spans, c, emb, max_chunks)?
                .into_iter()
                .map(|r| (r, None))
                .collect();
        }
    }
    Ok(out)
}

/// What validate() already refused; never reached.
fn unchecked() -> ChunkError {
    ChunkError::InvalidConfig(
        "the chunking configuration does not match its chunkingStrategy".to_string(),
    )
}

fn to_usize(v: i64) -> usize {
    usize::try_from(v).unwrap_or(1).max(1)
}

/// The bytes a window of tokens covers: first token's start to the furthest end.
pub(crate) fn byte_range(spans: &[(usize, usize)], w: Span) -> Span {
    let start = spans[w.start].0;
    let end = spans[w].iter().map(|s| s.1).max().unwrap_or(start);
    start..end
}

/// Cuts the tokens `range` into windows of at most `max` tokens sharing
/// `overlap` tokens (capped at `max - 1`), each shortened to a paragraph or
/// sentence end in its last 20% when one lies there. `None` past `limit` windows.
pub(crate) fn windows(
    text: &str,
    spans: &[(usize, usize)],
    range: Span,
    max: usize,
    overlap: usize,
    limit: usize,
) -> Option<Vec<Span>> {
    let max = max.max(1);
    let overlap = overlap.min(max - 1);
    let tail = max.div_ceil(5); // the last 20% of a window
    let mut out = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let mut end = (start + max).min(range.end);
        if end < range.end {
            // Candidate ends: after token k-1 for k in [lo, end]; a later, stronger boundary wins.
            let lo = (end - tail).max(start + overlap + 1);
            let mut best = (0u8, end);
            for k in lo..=end {
                let score = text::boundary_after(text, spans, k - 1);
                if score > 0 && score >= best.0 {
                    best = (score, k);
                }
            }
            if best.0 > 0 {
                end = best.1;
            }
        }
        if out.len() >= limit {
            return None;
        }
        out.push(start..end);
        if end >= range.end {
            break;
        }
        start = end - overlap; // > start, as end - start > overlap
    }
    Some(out)
}

#[cfg(test)]
mod tests;
