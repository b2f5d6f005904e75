//! Embedding bodies: Titan Text Embeddings v1 and v2, and Cohere Embed. The
//! adapter says which texts to embed and at what width; the engine embeds and
//! fits the vectors; the adapter shapes the response.

use basalt_proto::{from_json, BedrockError};
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest Titan `inputText`, in characters.
pub const MAX_TITAN_CHARS: usize = 50_000;
/// Most Cohere `texts` per call.
pub const MAX_COHERE_TEXTS: usize = 96;
/// Longest Cohere text, in characters.
pub const MAX_COHERE_CHARS: usize = 2048;
/// Titan v1 and Cohere v3 widths that clients store vectors at.
pub const TITAN_V1_DIMENSIONS: usize = 1536;
pub const COHERE_DIMENSIONS: usize = 1024;

/// What to embed and how to shape the answer.
#[derive(Debug, Clone)]
pub struct EmbedInvocation {
    pub texts: Vec<String>,
    /// Output width: the engine pads or projects the model's vectors to it.
    pub dimensions: usize,
    /// L2-normalise after fitting.
    pub normalize: bool,
    responder: Responder,
}

#[derive(Debug, Clone)]
enum Responder {
    TitanV1,
    TitanV2 { binary: bool },
    Cohere { types: Option<Vec<CohereType>> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CohereType {
    Float,
    Int8,
    Uint8,
    Binary,
    Ubinary,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanBody {
    input_text: Option<String>,
    dimensions: Option<i64>,
    normalize: Option<bool>,
    embedding_types: Option<Vec<String>>,
}

fn titan_text(b: &TitanBody) -> Result<String, BedrockError> {
    let text = b
        .input_text
        .clone()
        .ok_or_else(|| BedrockError::missing("inputText"))?;
    if text.is_empty() {
        return Err(BedrockError::constraint(
            "inputText",
            "",
            "Member must have length greater than or equal to 1",
        ));
    }
    if text.chars().count() > MAX_TITAN_CHARS {
        return Err(BedrockError::validation(format!(
            "inputText: at most {MAX_TITAN_CHARS} characters are allowed."
        )));
    }
    Ok(text)
}

pub fn parse_titan_v1(body: &[u8]) -> Result<EmbedInvocation, BedrockError> {
    let b: TitanBody = from_json(body)?;
    Ok(EmbedInvocation {
        texts: vec![titan_text(&b)?],
        dimensions: TITAN_V1_DIMENSIONS,
        normalize: true,
        responder: Responder::TitanV1,
    })
}

pub fn parse_titan_v2(body: &[u8]) -> Result<EmbedInvocation, BedrockError> {
    let b: TitanBody = from_json(body)?;
    let text = titan_text(&b)?;
    let dimensions = match b.dimensions {
        None => 1024,
        Some(d @ (256 | 512 | 1024)) => d as usize,
        Some(d) => {
            return Err(BedrockError::constraint(
                "dimensions",
                d,
                "Member must be one of 256, 512, 1024",
            ))
        }
    };
    let mut binary = false;
    for t in b.embedding_types.iter().flatten() {
        match t.as_str() {
            "float" => {}
            "binary" => binary = true,
            other => {
                return Err(BedrockError::constraint(
                    "embeddingTypes",
                    other,
                    "Member must be one of float, binary",
                ))
            }
        }
    }
    Ok(EmbedInvocation {
        texts: vec![text],
        dimensions,
        normalize: b.normalize.unwrap_or(true),
        responder: Responder::TitanV2 { binary },
    })
}

#[derive(Debug, Deserialize)]
struct CohereBody {
    texts: Option<Vec<String>>,
    images: Option<Value>,
    input_type: Option<String>,
    truncate: Option<String>,
    embedding_types: Option<Vec<CohereType>>,
}

pub fn parse_cohere(body: &[u8], model_id: &str) -> Result<EmbedInvocation, BedrockError> {
    let b: CohereBody = from_json(body)?;
    if b.images.is_some() {
        return Err(crate::images::no_vision(model_id));
    }
    let texts = b.texts.ok_or_else(|| BedrockError::missing("texts"))?;
    if texts.len() > MAX_COHERE_TEXTS {
        return Err(BedrockError::validation(format!(
            "texts: at most {MAX_COHERE_TEXTS} texts are allowed per call; got {}.",
            texts.len()
        )));
    }
    if let Some(i) = texts
        .iter()
        .position(|t| t.chars().count() > MAX_COHERE_CHARS)
    {
        return Err(BedrockError::validation(format!(
            "texts[{i}]: at most {MAX_COHERE_CHARS} characters are allowed."
        )));
    }
    match b.input_type.as_deref() {
        None => return Err(BedrockError::missing("input_type")),
        Some("search_document" | "search_query" | "classification" | "clustering") => {}
        Some(other) => {
            return Err(BedrockError::constraint(
                "input_type",
                other,
                "Member must be one of search_document, search_query, classification, clustering",
            ))
        }
    }
    if let Some(t) = b
        .truncate
        .as_deref()
        .filter(|t| !matches!(*t, "NONE" | "START" | "END"))
    {
        return Err(BedrockError::constraint(
            "truncate",
            t,
            "Member must be one of NONE, START, END",
        ));
    }
    Ok(EmbedInvocation {
        texts,
        dimensions: COHERE_DIMENSIONS,
        normalize: true,
        responder: Responder::Cohere {
            types: b.embedding_types,
        },
    })
}

impl EmbedInvocation {
    /// Shapes fitted vectors (one per text) into the family's body.
    pub fn response(&self, vectors: &[Vec<f32>], token_counts: &[usize]) -> Value {
        let tokens: usize = token_counts.iter().sum();
        match &self.responder {
            Responder::TitanV1 => {
                json!({"embedding": vectors.first(), "inputTextTokenCount": tokens})
            }
            Responder::TitanV2 { binary } => {
                let float = vectors.first().cloned().unwrap_or_default();
                let mut by_type = json!({"float": float});
                if *binary {
                    by_type["binary"] =
                        json!(float.iter().map(|&x| u8::from(x > 0.0)).collect::<Vec<_>>());
                }
                json!({"embedding": float, "inputTextTokenCount": tokens, "embeddingsByType": by_type})
            }
            Responder::Cohere { types } => {
                let id = uuid::Uuid::new_v4().to_string();
                match types {
                    None => {
                        json!({"id": id, "response_type": "embeddings_floats", "texts": self.texts, "embeddings": vectors})
                    }
                    Some(types) => {
                        let mut by_type = serde_json::Map::new();
                        for t in types {
                            let (name, value) = cohere_typed(*t, vectors);
                            by_type.insert(name.to_string(), value);
                        }
                        json!({"id": id, "response_type": "embeddings_by_type", "texts": self.texts, "embeddings": by_type})
                    }
                }
            }
        }
    }
}

/// Cohere's quantised forms of unit vectors.
fn cohere_typed(t: CohereType, vectors: &[Vec<f32>]) -> (&'static str, Value) {
    let int8 = |x: f32| (x * 127.0).round().clamp(-128.0, 127.0) as i32;
    let bits = |v: &Vec<f32>| -> Vec<u8> {
        v.chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |acc, (i, &x)| acc | (u8::from(x > 0.0) << (7 - i)))
            })
            .collect()
    };
    match t {
        CohereType::Float => ("float", json!(vectors)),
        CohereType::Int8 => (
            "int8",
            json!(vectors
                .iter()
                .map(|v| v.iter().map(|&x| int8(x)).collect::<Vec<_>>())
                .collect::<Vec<_>>()),
        ),
        CohereType::Uint8 => (
            "uint8",
            json!(vectors
                .iter()
                .map(|v| v.iter().map(|&x| int8(x) + 128).collect::<Vec<_>>())
                .collect::<Vec<_>>()),
        ),
        CohereType::Binary => (
            "binary",
            json!(vectors
                .iter()
                .map(|v| bits(v)
                    .into_iter()
                    .map(|b| b as i8 as i32)
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()),
        ),
        CohereType::Ubinary => (
            "ubinary",
            json!(vectors.iter().map(bits).collect::<Vec<_>>()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titan_v2_defaults_and_choices() {
        let inv = parse_titan_v2(br#"{"inputText":"hello"}"#).expect("parse");
        assert_eq!((inv.dimensions, inv.normalize), (1024, true));
        let inv = parse_titan_v2(br#"{"inputText":"hello","dimensions":256,"normalize":false,"embeddingTypes":["float","binary"]}"#).expect("parse");
        assert_eq!((inv.dimensions, inv.normalize), (256, false));
        let v = inv.response(&[vec![0.5, -0.5]], &[3]);
        assert_eq!(v["embeddingsByType"]["binary"], json!([1, 0]));
        assert_eq!(v["inputTextTokenCount"], 3);
        assert!(parse_titan_v2(br#"{"inputText":"x","dimensions":300}"#).is_err());
        assert!(parse_titan_v2(br#"{"dimensions":256}"#)
            .expect_err("missing")
            .message
            .contains("inputText"));
    }

    #[test]
    fn cohere_shapes() {
        let inv = parse_cohere(
            br#"{"texts":["a","b"],"input_type":"search_document"}"#,
            "cohere.embed-english-v3",
        )
        .expect("parse");
        let v = inv.response(&[vec![0.1], vec![0.2]], &[3, 3]);
        assert_eq!(v["response_type"], "embeddings_floats");
        assert_eq!(v["embeddings"].as_array().map(Vec::len), Some(2));
        let inv = parse_cohere(br#"{"texts":["a"],"input_type":"search_query","embedding_types":["float","int8","ubinary"]}"#, "cohere.embed-english-v3").expect("parse");
        let v = inv.response(&[vec![1.0, -1.0, 0.0, 0.5, 0.1, 0.1, 0.1, 0.1]], &[3]);
        assert_eq!(v["response_type"], "embeddings_by_type");
        assert_eq!(v["embeddings"]["int8"][0][0], 127);
        assert_eq!(v["embeddings"]["ubinary"][0][0], 0b1001_1111);
        assert!(parse_cohere(br#"{"texts":["a"]}"#, "c")
            .expect_err("input_type")
            .message
            .contains("input_type"));
        let many = serde_json::to_vec(&json!({"texts": vec!["x"; 97], "input_type": "clustering"}))
            .expect("json");
        assert!(parse_cohere(&many, "c").is_err());
    }
}
