//! Retrieve's request settings and result shapes: `retrievalConfiguration` becomes
//! a search of the index, and each hit a KnowledgeBaseRetrievalResult.

use basalt_index::{Filter, Hit, SearchType, SOURCE_URI_KEY};
use basalt_proto::BedrockError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_parse() {
        let s = parse_settings(None, "retrievalConfiguration").expect("default");
        assert_eq!(s.number_of_results, 5);
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
