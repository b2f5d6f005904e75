//! SEMANTIC chunking, after LangChain's SemanticChunker (which Bedrock's
//! documentation describes):
//!
//! 1. split the text into sentences (a terminator followed by whitespace, or a line break);
//! 2. for each sentence, a group of it and `bufferSize` neighbours on each side;
//! 3. embed the groups and take the cosine distance between consecutive groups;
//! 4. cut after sentence `i` where distance `i` is above the
//!    `breakpointPercentileThreshold` percentile of all distances (linear
//!    interpolation, as numpy's `percentile`);
//! 5. a chunk over `maxTokens` is cut into fixed windows (no overlap,
//!    preferring sentence ends), so no chunk exceeds `maxTokens`.

use crate::{
    byte_range, text, windows, ChunkError, SemanticChunkingConfiguration, SentenceEmbedder, Span,
};

/// Groups sent to the embedder per call, to bound each call's memory.
const EMBED_BATCH: usize = 64;

pub(crate) fn chunk(
    doc: &str,
    spans: &[(usize, usize)],
    c: &SemanticChunkingConfiguration,
    emb: &dyn SentenceEmbedder,
    max_chunks: usize,
) -> Result<Vec<Span>, ChunkError> {
    let sentences = text::sentences(doc);
    let segments = if sentences.len() < 2 {
        sentences
    } else {
        let buffer = usize::try_from(c.buffer_size).unwrap_or(0);
        let groups: Vec<String> = (0..sentences.len())
            .map(|i| {
                let first = sentences[i.saturating_sub(buffer)].0;
                let last = sentences[(i + buffer).min(sentences.len() - 1)].1;
                doc[first..last].to_string()
            })
            .collect();
        let vectors = embed_all(emb, &groups)?;
        let distances: Vec<f64> = vectors
            .windows(2)
            .map(|w| cosine_distance(&w[0], &w[1]))
            .collect();
        let threshold = percentile(&distances, c.breakpoint_percentile_threshold as f64);
        let mut segments = Vec::new();
        let mut first = 0;
        for (i, d) in distances.iter().enumerate() {
            if *d > threshold {
                segments.push((sentences[first].0, sentences[i].1));
                first = i + 1;
            }
        }
        segments.push((sentences[first].0, sentences[sentences.len() - 1].1));
        segments
    };
    let max = usize::try_from(c.max_tokens).unwrap_or(1).max(1);
    let mut out = Vec::new();
    for (a, b) in segments {
        // The tokens starting inside this segment.
        let lo = spans.partition_point(|s| s.0 < a);
        let hi = spans.partition_point(|s| s.0 < b);
        if hi - lo <= max {
            push(&mut out, a..b, max_chunks)?;
            continue;
        }
        let left = max_chunks.saturating_sub(out.len());
        let parts = windows(doc, spans, lo..hi, max, 0, left)
            .ok_or(ChunkError::TooManyChunks { limit: max_chunks })?;
        for w in parts {
            push(&mut out, byte_range(spans, w), max_chunks)?;
        }
    }
    Ok(out)
}

fn push(out: &mut Vec<Span>, range: Span, limit: usize) -> Result<(), ChunkError> {
    if out.len() >= limit {
        return Err(ChunkError::TooManyChunks { limit });
    }
    out.push(range);
    Ok(())
}

fn embed_all(emb: &dyn SentenceEmbedder, groups: &[String]) -> Result<Vec<Vec<f32>>, ChunkError> {
    let mut vectors = Vec::with_capacity(groups.len());
    for batch in groups.chunks(EMBED_BATCH) {
        let got = emb.embed(batch).map_err(ChunkError::Embedding)?;
        if got.len() != batch.len() {
            return Err(ChunkError::Embedding(format!(
                "the embedder returned {} vectors for {} sentence groups",
                got.len(),
                batch.len()
            )));
        }
        vectors.extend(got);
    }
    let dim = vectors.first().map_or(0, Vec::len);
    if dim == 0 || vectors.iter().any(|v| v.len() != dim) {
        return Err(ChunkError::Embedding(
            "the embedder returned empty vectors or vectors of different lengths".into(),
        ));
    }
    Ok(vectors)
}

/// 1 - cosine similarity; 0 when either vector has no direction (or is not finite).
pub(crate) fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let d = 1.0 - dot / (na.sqrt() * nb.sqrt());
    if d.is_finite() {
        d
    } else {
        0.0
    }
}

/// The `p`th percentile (0..=100) with linear interpolation between ranks.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::INFINITY;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!((percentile(&v, 95.0) - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 90.0), 7.0);
    }

    #[test]
    fn cosine() {
        assert!((cosine_distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!(cosine_distance(&[1.0, 1.0], &[2.0, 2.0]).abs() < 1e-12);
        assert_eq!(cosine_distance(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
