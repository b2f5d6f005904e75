//! The JSONL record format: input lines `{"recordId", "modelInput"}`, output lines
//! with `modelOutput` or `error`, and the job's `manifest.json.out`.

use serde::Serialize;
use serde_json::{json, Map, Value};

/// Longest input line read (Bedrock's per-record size limit is 1 MB of JSON; the
/// margin leaves room for an inline image).
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Characters in a generated recordId, as Bedrock generates them.
const RECORD_ID_LEN: usize = 11;

/// Why one record produced no output; written as the line's `error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// The HTTP status InvokeModel would have answered with.
    pub code: u16,
    pub message: String,
}

impl RecordError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            message: message.into(),
        }
    }
}

/// One non-blank input line.
#[derive(Clone, Debug, PartialEq)]
pub struct InputRecord {
    /// Zero-based line number in the file (stable across restarts).
    pub line: u64,
    pub record_id: String,
    /// The line's modelInput, or what could be read of it for a bad line.
    pub model_input: Value,
    /// Set when the line can't be run at all.
    pub invalid: Option<RecordError>,
}

/// A recordId for a record that has none: 11 upper-case letters and digits.
pub fn generate_record_id() -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..RECORD_ID_LEN)
        .map(|_| SET[rng.random_range(0..SET.len())] as char)
        .collect()
}

fn read_line(line: u64, raw: &[u8]) -> InputRecord {
    let bad = |record_id: String, model_input: Value, message: String| InputRecord {
        line,
        record_id,
        model_input,
        invalid: Some(RecordError::invalid(message)),
    };
    if raw.len() > MAX_RECORD_BYTES {
        return bad(
            generate_record_id(),
            Value::Null,
            format!(
                "The record is {} bytes; a record may be at most {MAX_RECORD_BYTES}.",
                raw.len()
            ),
        );
    }
    let value: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => {
            return bad(
                generate_record_id(),
                Value::String(String::from_utf8_lossy(raw).into_owned()),
                format!("The record is not valid JSON: {e}."),
            )
        }
    };
    let Value::Object(mut map) = value else {
        return bad(
            generate_record_id(),
            value,
            "The record must be a JSON object with recordId and modelInput.".into(),
        );
    };
    // Other members (a per-record modelId, for one) are ignored, as Bedrock ignores them.
    let record_id = match map.remove("recordId") {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::Number(n)) => n.to_string(),
        _ => generate_record_id(),
    };
    match map.remove("modelInput") {
        Some(Value::Object(input)) => InputRecord {
            line,
            record_id,
            model_input: Value::Object(input),
            invalid: None,
        },
        Some(other) => bad(
            record_id,
            other,
            "modelInput must be a JSON object: the model's InvokeModel body.".into(),
        ),
        None => bad(
            record_id,
            Value::Null,
            "The record has no modelInput.".into(),
        ),
    }
}

/// Every non-blank line of a JSONL file, in order.
pub fn parse(bytes: &[u8]) -> Vec<InputRecord> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, raw)| {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let blank = raw.iter().all(u8::is_ascii_whitespace);
            (!blank).then(|| read_line(i as u64, raw))
        })
        .collect()
}

/// The output line for a record: its input, then `modelOutput` or `error`.
pub fn output_line(record: &InputRecord, result: Result<&Value, &RecordError>) -> String {
    let mut line = Map::new();
    line.insert("recordId".into(), json!(record.record_id));
    line.insert("modelInput".into(), record.model_input.clone());
    match result {
        Ok(output) => line.insert("modelOutput".into(), output.clone()),
        Err(e) => line.insert(
            "error".into(),
            json!({"errorCode": e.code, "errorMessage": e.message}),
        ),
    };
    Value::Object(line).to_string()
}

/// The job summary written beside the outputs as `manifest.json.out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub total_record_count: u64,
    pub processed_record_count: u64,
    pub success_record_count: u64,
    pub error_record_count: u64,
    pub input_token_count: u64,
    pub output_token_count: u64,
}

/// The output object's name for an input object's key: its file name plus `.out`.
pub fn output_name(input_key: &str) -> String {
    let name = input_key.rsplit('/').next().unwrap_or(input_key);
    format!("{name}.out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_ids_kept_or_generated_and_bad_lines_marked() {
        let input = concat!(
            "{\"recordId\": \"1\", \"modelInput\": {\"inputText\": \"a\"}}\n",
            "\n",
            "{\"modelInput\": {\"inputText\": \"b\"}, \"modelId\": \"amazon.titan-text-express-v1\"}\r\n",
            "not json\n",
            "{\"recordId\": \"4\"}\n",
            "{\"recordId\": 5, \"modelInput\": \"text\"}",
        );
        let records = parse(input.as_bytes());
        let lines: Vec<u64> = records.iter().map(|r| r.line).collect();
        assert_eq!(
            lines,
            [0, 2, 3, 4, 5],
            "blank lines are skipped, numbers kept"
        );
        assert_eq!(records[0].record_id, "1");
        assert!(records[0].invalid.is_none());
        assert_eq!(records[1].record_id.len(), RECORD_ID_LEN);
        assert!(records[1]
            .record_id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert!(
            records[1].invalid.is_none(),
            "a per-record modelId is accepted"
        );
        assert!(records[2]
            .invalid
            .as_ref()
            .is_some_and(|e| e.message.contains("not valid JSON")));
        assert_eq!(records[2].model_input, json!("not json"));
        assert!(records[3]
            .invalid
            .as_ref()
            .is_some_and(|e| e.message.contains("no modelInput")));
        assert_eq!(records[4].record_id, "5");
        assert!(records[4].invalid.is_some());
    }

    #[test]
    fn output_lines_carry_output_or_error() {
        let record = &parse(b"{\"recordId\": \"r\", \"modelInput\": {\"inputText\": \"hi\"}}")[0];
        let ok: Value =
            serde_json::from_str(&output_line(record, Ok(&json!({"results": []})))).expect("json");
        assert_eq!(
            ok,
            json!({"recordId": "r", "modelInput": {"inputText": "hi"}, "modelOutput": {"results": []}})
        );
        let err: Value = serde_json::from_str(&output_line(
            record,
            Err(&RecordError::invalid("bad request")),
        ))
        .expect("json");
        assert_eq!(
            err["error"],
            json!({"errorCode": 400, "errorMessage": "bad request"})
        );
        assert!(err.get("modelOutput").is_none());
    }

    #[test]
    fn output_names_and_manifest_fields() {
        assert_eq!(output_name("in/records.jsonl"), "records.jsonl.out");
        assert_eq!(output_name("records.jsonl"), "records.jsonl.out");
        let m = serde_json::to_value(Manifest::default()).expect("json");
        let keys: Vec<&str> = m
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "totalRecordCount",
                "processedRecordCount",
                "successRecordCount",
                "errorRecordCount",
                "inputTokenCount",
                "outputTokenCount"
            ]
        );
    }

    #[test]
    fn an_oversized_line_is_an_error_record_not_a_failed_job() {
        let mut big = b"{\"recordId\": \"x\", \"modelInput\": {\"inputText\": \"".to_vec();
        big.resize(MAX_RECORD_BYTES + 10, b'a');
        big.extend_from_slice(b"\"}}");
        let records = parse(&big);
        assert_eq!(records.len(), 1);
        assert!(records[0]
            .invalid
            .as_ref()
            .is_some_and(|e| e.message.contains("at most")));
    }
}
