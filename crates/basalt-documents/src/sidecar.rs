//! The `<object>.metadata.json` sidecar Bedrock reads beside each source
//! object: `{"metadataAttributes": {...}}`, each attribute either a plain
//! JSON value (string, number, boolean, list of strings) or the typed form
//! `{"value": {"type": "STRING", "stringValue": "..."}, "includeForEmbedding": true}`.

use serde_json::{Map, Value};

use crate::ParseError;

/// What Bedrock appends to an object key to name its metadata file.
pub const SIDECAR_SUFFIX: &str = ".metadata.json";
/// Bedrock's limit on one metadata file.
pub const MAX_SIDECAR_BYTES: usize = 10 * 1024;

/// Whether an object key is a metadata sidecar (and so not a document).
pub fn is_sidecar(name: &str) -> bool {
    name.len() > SIDECAR_SUFFIX.len() && name.ends_with(SIDECAR_SUFFIX)
}

/// The sidecar key for a document key: `docs/a.pdf` → `docs/a.pdf.metadata.json`.
pub fn sidecar_name(name: &str) -> String {
    format!("{name}{SIDECAR_SUFFIX}")
}

/// Reads a sidecar into plain attribute values: strings, numbers, booleans
/// and arrays of strings. `includeForEmbedding` is not kept.
pub fn parse_sidecar(bytes: &[u8]) -> Result<Map<String, Value>, ParseError> {
    let err = |m: String| ParseError::Sidecar(m);
    if bytes.len() > MAX_SIDECAR_BYTES {
        return Err(err(format!(
            "the file is {} bytes; Bedrock allows at most {MAX_SIDECAR_BYTES} bytes (10 KB) per metadata file",
            bytes.len()
        )));
    }
    let root: Value =
        serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON ({e})")))?;
    let Some(attributes) = root.get("metadataAttributes") else {
        return Err(err(
            "expected a top-level \"metadataAttributes\" object".to_string()
        ));
    };
    let Value::Object(attributes) = attributes else {
        return Err(err("\"metadataAttributes\" must be an object".to_string()));
    };
    let mut out = Map::new();
    for (key, value) in attributes {
        if key.is_empty() {
            return Err(err("an attribute has an empty name".to_string()));
        }
        let value = attribute(value).map_err(|m| err(format!("attribute \"{key}\": {m}")))?;
        out.insert(key.clone(), value);
    }
    Ok(out)
}

fn attribute(v: &Value) -> Result<Value, String> {
    match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(v.clone()),
        Value::Array(items) => string_list(items),
        Value::Null => Err(
            "null is not an attribute value; use a string, number, boolean or list of strings"
                .into(),
        ),
        Value::Object(o) => {
            let Some(Value::Object(typed)) = o.get("value") else {
                return Err("an object value must be {\"value\": {\"type\": ..., ...}, \"includeForEmbedding\": ...}".into());
            };
            if let Some(flag) = o.get("includeForEmbedding") {
                if !flag.is_boolean() {
                    return Err("includeForEmbedding must be true or false".into());
                }
            }
            let ty = typed.get("type").and_then(Value::as_str).unwrap_or("");
            let (member, ok): (&str, fn(&Value) -> bool) = match ty {
                "STRING" => ("stringValue", Value::is_string),
                "NUMBER" => ("numberValue", Value::is_number),
                "BOOLEAN" => ("booleanValue", Value::is_boolean),
                "STRING_LIST" => ("stringListValue", Value::is_array),
                "" => {
                    return Err(
                        "value.type is missing; use STRING, NUMBER, BOOLEAN or STRING_LIST".into(),
                    )
                }
                other => {
                    return Err(format!(
                        "value.type {other:?} is not one of STRING, NUMBER, BOOLEAN, STRING_LIST"
                    ))
                }
            };
            match typed.get(member) {
                Some(Value::Array(items)) if ok(&Value::Array(Vec::new())) => string_list(items),
                Some(x) if ok(x) => Ok(x.clone()),
                Some(_) => Err(format!("value.{member} has the wrong type for {ty}")),
                None => Err(format!("value.type is {ty} but value.{member} is missing")),
            }
        }
    }
}

fn string_list(items: &[Value]) -> Result<Value, String> {
    if items.iter().all(Value::is_string) {
        Ok(Value::Array(items.to_vec()))
    } else {
        Err("a list may hold only strings".into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn plain_and_typed_forms() {
        let plain = br#"{"metadataAttributes": {"genre": "drama", "year": 1990, "tags": ["a","b"], "flag": true}}"#;
        let m = parse_sidecar(plain).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"genre": "drama", "year": 1990, "tags": ["a","b"], "flag": true})
        );
        let typed = json!({"metadataAttributes": {
            "genre": {"value": {"type": "STRING", "stringValue": "drama"}, "includeForEmbedding": true},
            "year": {"value": {"type": "NUMBER", "numberValue": 1990.5}},
            "flag": {"value": {"type": "BOOLEAN", "booleanValue": false}, "includeForEmbedding": false},
            "tags": {"value": {"type": "STRING_LIST", "stringListValue": ["x"]}}
        }});
        let m = parse_sidecar(typed.to_string().as_bytes()).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"genre": "drama", "year": 1990.5, "flag": false, "tags": ["x"]})
        );
    }

    #[test]
    fn errors_name_the_attribute() {
        let cases = [
            (
                json!({"metadataAttributes": {"n": null}}),
                "attribute \"n\": null is not",
            ),
            (
                json!({"metadataAttributes": {"l": [1]}}),
                "attribute \"l\": a list may hold only strings",
            ),
            (
                json!({"metadataAttributes": {"t": {"value": {"type": "DATE"}}}}),
                "attribute \"t\": value.type \"DATE\"",
            ),
            (
                json!({"metadataAttributes": {"t": {"value": {"type": "NUMBER", "stringValue": "1"}}}}),
                "value.numberValue is missing",
            ),
            (
                json!({"metadataAttributes": {"t": {"value": {"type": "STRING_LIST", "stringListValue": "a"}}}}),
                "wrong type",
            ),
            (
                json!({"metadataAttributes": {"t": {"value": {"type": "STRING_LIST", "stringListValue": [true]}}}}),
                "only strings",
            ),
            (
                json!({"metadataAttributes": {"o": {"x": 1}}}),
                "attribute \"o\": an object value",
            ),
            (json!({"attributes": {}}), "metadataAttributes"),
            (json!({"metadataAttributes": []}), "must be an object"),
        ];
        for (doc, want) in cases {
            let e = parse_sidecar(doc.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("metadata file: ") && e.contains(want),
                "{e} / {want}"
            );
        }
        assert!(parse_sidecar(b"{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
    }

    #[test]
    fn size_limit() {
        let big = format!(
            r#"{{"metadataAttributes": {{"k": "{}"}}}}"#,
            "x".repeat(MAX_SIDECAR_BYTES)
        );
        let e = parse_sidecar(big.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("at most 10240 bytes (10 KB)"), "{e}");
    }

    #[test]
    fn names() {
        assert_eq!(sidecar_name("docs/a.pdf"), "docs/a.pdf.metadata.json");
        assert!(is_sidecar("docs/a.pdf.metadata.json"));
        assert!(!is_sidecar("docs/a.pdf"));
        assert!(!is_sidecar(".metadata.json"));
    }
}
