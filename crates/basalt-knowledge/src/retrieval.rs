//! Retrieve's request settings and result shapes: `retrievalConfiguration` becomes
//! a search of the index, and each hit a KnowledgeBaseRetrievalResult.

use basalt_index::{Filter, Hit, SearchType, SOURCE_URI_KEY};
use basalt_proto::BedrockError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::{ChunkerModel, Embedder};

pub const DEFAULT_RESULTS: usize = 5;
const MAX_RESULTS: usize = 100;
/// Longest query Bedrock accepts is 1,000 characters for text retrieval; we allow more
/// but still bound it.
pub const MAX_QUERY_CHARS: usize = 20_000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub number_of_results: usize,
    pub search_type: SearchType,
    pub filter: Option<Filter>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            number_of_results: DEFAULT_RESULTS,
            search_type: SearchType::Semantic,
            filter: None,
        }
    }
}

/// Reads `retrievalConfiguration` (`path` names it in error messages).
pub fn parse_settings(config: Option<&Value>, path: &str) -> Result<Settings, BedrockError> {
    let mut settings = Settings::default();
    let Some(config) = config else {
        return Ok(settings);
    };
    let Some(vector) = config.get("vectorSearchConfiguration") else {
        return Ok(settings);
    };
    let at = format!("{path}.vectorSearchConfiguration");
    if let Some(n) = vector.get("numberOfResults") {
        settings.number_of_results = match n.as_u64() {
            Some(n @ 1..=100) => n as usize,
            _ => {
                return Err(BedrockError::constraint(
                    &format!("{at}.numberOfResults"),
                    n,
                    &format!("Member must have value between 1 and {MAX_RESULTS}"),
                ))
            }
        };
    }
    if let Some(t) = vector.get("overrideSearchType") {
        settings.search_type = match t.as_str() {
            Some("SEMANTIC") => SearchType::Semantic,
            Some("HYBRID") => SearchType::Hybrid,
            _ => {
                return Err(BedrockError::constraint(
                    &format!("{at}.overrideSearchType"),
                    t,
                    "Member must satisfy enum value set: [HYBRID, SEMANTIC]",
                ))
            }
        };
    }
    if let Some(f) = vector.get("filter") {
        settings.filter = Some(
            Filter::parse_at(f, &format!("{at}.filter"))
                .map_err(|e| BedrockError::validation(e.to_string()))?,
        );
    }
    for unsupported in ["rerankingConfiguration", "implicitFilterConfiguration"] {
        if vector.get(unsupported).is_some() {
            return Err(BedrockError::validation(format!(
                "{at}.{unsupported} needs a model this server does not have; remove it."
            )));
        }
    }
    Ok(settings)
}

/// The query text of `retrievalQuery` or `input`.
pub fn query_text(query: &Value, path: &str) -> Result<String, BedrockError> {
    if query.get("type").and_then(Value::as_str) == Some("IMAGE") {
        return Err(BedrockError::validation(format!(
            "{path}.type IMAGE needs a multimodal embedding model; this server retrieves by text."
        )));
    }
    let text = query
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| BedrockError::validation(format!("{path}.text is required.")))?;
    if text.trim().is_empty() {
        return Err(BedrockError::constraint(
            &format!("{path}.text"),
            text,
            "Member must have length greater than or equal to 1",
        ));
    }
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(BedrockError::validation(format!(
            "{path}.text is longer than {MAX_QUERY_CHARS} characters."
        )));
    }
    Ok(text.to_string())
}

/// Where a hit came from: an S3 object, or a CUSTOM document id.
pub fn location(hit: &Hit) -> Value {
    let source = hit
        .metadata
        .get(SOURCE_URI_KEY)
        .and_then(Value::as_str)
        .unwrap_or("");
    if source.starts_with("s3://") {
        json!({"type": "S3", "s3Location": {"uri": source}})
    } else {
        json!({"type": "CUSTOM", "customDocumentLocation": {"id": source}})
    }
}

/// A KnowledgeBaseRetrievalResult.
pub fn result(hit: &Hit) -> Value {
    json!({
        "content": {"type": "TEXT", "text": hit.text},
        "location": location(hit),
        "score": hit.score,
        "metadata": hit.metadata,
    })
}

/// A RetrievedReference, as citations carry them.
pub fn reference(hit: &Hit) -> Value {
    json!({
        "content": {"type": "TEXT", "text": hit.text},
        "location": location(hit),
        "metadata": hit.metadata,
    })
}

/// Retrieve's `nextToken`: the offset of the next page.
pub fn next_token(offset: usize) -> String {
    STANDARD.encode(format!("offset:{offset}"))
}

pub fn parse_token(token: Option<&str>) -> Result<usize, BedrockError> {
    let Some(token) = token else { return Ok(0) };
    STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| BedrockError::validation("The nextToken is not one this server issued."))
}

/// EXTERNAL_SOURCES: parses and chunks the documents (identifier, bytes, content
/// type), and ranks the chunks against the query in memory, best first.
pub fn rank_external(
    documents: &[(String, Vec<u8>, Option<String>)],
    query: &str,
    model: &dyn Embedder,
) -> Result<Vec<Hit>, BedrockError> {
    let tokenizer = ChunkerModel(model);
    let mut chunks: Vec<(String, String)> = Vec::new();
    for (identifier, bytes, content_type) in documents {
        let text = basalt_documents::parse(bytes, identifier, content_type.as_deref())
            // The parser's message already names the document.
            .map_err(|e| BedrockError::validation(e.to_string()))?
            .text;
        let chunked = basalt_chunking::chunk(
            &text,
            &basalt_chunking::ChunkingConfig::default(),
            &tokenizer,
            None,
        )
        .map_err(|e| BedrockError::validation(format!("{identifier}: {e}")))?;
        chunks.extend(
            chunked
                .chunks
                .into_iter()
                .map(|c| (identifier.clone(), c.text)),
        );
    }
    let mut texts: Vec<String> = vec![query.to_string()];
    texts.extend(chunks.iter().map(|(_, t)| t.clone()));
    let vectors = model.embed(&texts).map_err(|e| {
        BedrockError::new(
            basalt_proto::ErrorCode::DependencyFailed,
            format!("The embedding model failed: {e}"),
        )
    })?;
    let Some((q, rest)) = vectors.split_first() else {
        return Ok(Vec::new());
    };
    let mut hits: Vec<Hit> = chunks
        .into_iter()
        .zip(rest)
        .enumerate()
        .map(|(i, ((identifier, text), v))| {
            let cos: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
            let mut metadata = Map::new();
            metadata.insert(SOURCE_URI_KEY.into(), json!(identifier));
            Hit {
                chunk_id: i.to_string(),
                document_id: identifier,
                text,
                metadata,
                score: f64::from((1.0 + cos) / 2.0).clamp(0.0, 1.0),
            }
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(DEFAULT_RESULTS);
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_parse() {
        let s = parse_settings(None, "retrievalConfiguration").expect("default");
        assert_eq!(s.number_of_results, 5);
        assert_eq!(s.search_type, SearchType::Semantic, "Bedrock's default");
        let s = parse_settings(
            Some(&json!({"vectorSearchConfiguration": {"numberOfResults": 3, "overrideSearchType": "HYBRID",
                "filter": {"equals": {"key": "genre", "value": "faq"}}}})),
            "retrievalConfiguration",
        )
        .expect("parsed");
        assert_eq!(s.number_of_results, 3);
        assert_eq!(s.search_type, SearchType::Hybrid);
        assert!(s.filter.is_some());
    }

    #[test]
    fn bad_settings_name_the_member() {
        let e = parse_settings(
            Some(&json!({"vectorSearchConfiguration": {"numberOfResults": 0}})),
            "retrievalConfiguration",
        )
        .expect_err("refused");
        assert!(e
            .message
            .contains("retrievalConfiguration.vectorSearchConfiguration.numberOfResults"));
        let e = parse_settings(
            Some(&json!({"vectorSearchConfiguration": {"filter": {"andAll": [{"equals": {"key": "a", "value": 1}}]}}})),
            "retrievalConfiguration",
        )
        .expect_err("refused");
        assert!(
            e.message
                .contains("retrievalConfiguration.vectorSearchConfiguration.filter.andAll"),
            "{}",
            e.message
        );
    }

    /// Word-count vectors over a tiny vocabulary: stands in for the embedding model.
    struct Words;

    impl Embedder for Words {
        fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
            const VOCAB: [&str; 4] = ["mascot", "lobster", "tax", "invoice"];
            Ok(texts
                .iter()
                .map(|t| {
                    let t = t.to_lowercase();
                    let v: Vec<f32> = VOCAB
                        .iter()
                        .map(|w| t.matches(w).count() as f32 + 0.01)
                        .collect();
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    v.iter().map(|x| x / n).collect()
                })
                .collect())
        }
        fn dimensions(&self) -> usize {
            4
        }
        fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
            basalt_chunking::Tokenizer::token_spans(&basalt_chunking::SimpleTokenizer, text)
        }
    }

    #[test]
    fn external_sources_rank_their_chunks_and_name_bad_documents() {
        let docs = vec![
            (
                "tax.txt".to_string(),
                b"Send the tax invoice by March.".to_vec(),
                None,
            ),
            (
                "mascot.txt".to_string(),
                b"The mascot is a lobster.".to_vec(),
                Some("text/plain".to_string()),
            ),
        ];
        let hits = rank_external(&docs, "who is the mascot lobster", &Words).expect("ranks");
        assert_eq!(hits[0].document_id, "mascot.txt");
        assert_eq!(hits[0].metadata[SOURCE_URI_KEY], "mascot.txt");
        assert!(hits[0].score > hits[1].score && (0.0..=1.0).contains(&hits[1].score));
        let bad = vec![("sheet.xlsx".to_string(), b"x".to_vec(), None)];
        let e = rank_external(&bad, "q", &Words).expect_err("refused");
        assert!(e.message.contains("sheet.xlsx"), "{}", e.message);
    }

    #[test]
    fn tokens_round_trip_and_refuse_forgeries() {
        assert_eq!(parse_token(Some(&next_token(15))).expect("ours"), 15);
        assert!(parse_token(Some("garbage")).is_err());
        assert_eq!(parse_token(None).expect("none"), 0);
    }

    #[test]
    fn locations_follow_the_source() {
        let mut hit = Hit {
            chunk_id: "c".into(),
            document_id: "d".into(),
            text: "t".into(),
            metadata: serde_json::Map::new(),
            score: 0.5,
        };
        hit.metadata
            .insert(SOURCE_URI_KEY.into(), json!("s3://docs/a.txt"));
        assert_eq!(location(&hit)["s3Location"]["uri"], "s3://docs/a.txt");
        hit.metadata.insert(SOURCE_URI_KEY.into(), json!("doc-7"));
        assert_eq!(location(&hit)["customDocumentLocation"]["id"], "doc-7");
    }
}
