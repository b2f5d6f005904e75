//! One invocation as a record of Bedrock's model-invocation-log schema
//! (`ModelInvocationLog` 1.0), and where records land: the S3 key layout Bedrock
//! delivers under and the local file that stands in for a CloudWatch log group.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use time::OffsetDateTime;

pub const SCHEMA_TYPE: &str = "ModelInvocationLog";
pub const SCHEMA_VERSION: &str = "1.0";
/// The log stream Bedrock writes to inside the configured log group.
pub const LOG_STREAM: &str = "aws/bedrock/modelinvocations";

/// Which `*DataDeliveryEnabled` flag governs a model's bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    Text,
    Embedding,
    Image,
}

/// What was captured of one runtime invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub timestamp: OffsetDateTime,
    pub account_id: String,
    pub identity_arn: String,
    pub region: String,
    pub request_id: String,
    pub operation: String,
    pub model_id: String,
    pub input_content_type: String,
    pub input_body: Option<Value>,
    pub input_tokens: Option<u64>,
    pub output_content_type: Option<String>,
    pub output_body: Option<Value>,
    pub output_tokens: Option<u64>,
    /// The Bedrock error shape name, when the invocation failed.
    pub error_code: Option<String>,
}

/// `2026-12-02T15:04:05Z`, as Bedrock writes the record's timestamp.
pub fn timestamp(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Invocation {
    /// The record, with the bodies only when `with_bodies` (the model kind's delivery flag).
    pub fn record(&self, with_bodies: bool) -> Value {
        let mut input = Map::new();
        input.insert(
            "inputContentType".into(),
            Value::from(self.input_content_type.as_str()),
        );
        if with_bodies {
            if let Some(body) = &self.input_body {
                input.insert("inputBodyJson".into(), body.clone());
            }
        }
        if let Some(n) = self.input_tokens {
            input.insert("inputTokenCount".into(), Value::from(n));
        }
        let mut output = Map::new();
        if let Some(ct) = &self.output_content_type {
            output.insert("outputContentType".into(), Value::from(ct.as_str()));
        }
        if with_bodies {
            if let Some(body) = &self.output_body {
                output.insert("outputBodyJson".into(), body.clone());
            }
        }
        if let Some(n) = self.output_tokens {
            output.insert("outputTokenCount".into(), Value::from(n));
        }
        let mut record = Map::new();
        record.insert("schemaType".into(), Value::from(SCHEMA_TYPE));
        record.insert("schemaVersion".into(), Value::from(SCHEMA_VERSION));
        record.insert("timestamp".into(), Value::from(timestamp(self.timestamp)));
        record.insert("accountId".into(), Value::from(self.account_id.as_str()));
        let mut identity = Map::new();
        identity.insert("arn".into(), Value::from(self.identity_arn.as_str()));
        record.insert("identity".into(), Value::Object(identity));
        record.insert("region".into(), Value::from(self.region.as_str()));
        record.insert("requestId".into(), Value::from(self.request_id.as_str()));
        record.insert("operation".into(), Value::from(self.operation.as_str()));
        record.insert("modelId".into(), Value::from(self.model_id.as_str()));
        record.insert("input".into(), Value::Object(input));
        record.insert("output".into(), Value::Object(output));
        if let Some(code) = &self.error_code {
            record.insert("errorCode".into(), Value::from(code.as_str()));
        }
        Value::Object(record)
    }
}

/// The folder of an hour's log objects: `[<prefix>/]AWSLogs/<account>/BedrockModelInvocationLogs/<region>/yyyy/mm/dd/hh/`.
pub fn s3_folder(key_prefix: &str, account_id: &str, region: &str, at: OffsetDateTime) -> String {
    let prefix = key_prefix.trim_end_matches('/');
    let lead = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    format!(
        "{lead}AWSLogs/{account_id}/BedrockModelInvocationLogs/{region}/{:04}/{:02}/{:02}/{:02}/",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour()
    )
}

/// One delivered object's name: delivery time to the millisecond, then a random tag.
pub fn s3_object_name(delivered: OffsetDateTime, tag: &str) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z_{tag}.json.gz",
        delivered.year(),
        u8::from(delivered.month()),
        delivered.day(),
        delivered.hour(),
        delivered.minute(),
        delivered.second(),
        delivered.millisecond()
    )
}

/// The JSON-lines file standing in for a CloudWatch log group's stream, one per UTC day:
/// `<data-dir>/logs/<logGroupName>/aws/bedrock/modelinvocations/yyyy-mm-dd.jsonl`.
/// The group name was validated at configuration time to have no `.`/`..` segments.
pub fn cloudwatch_file(data_dir: &Path, log_group: &str, at: OffsetDateTime) -> PathBuf {
    let mut path = data_dir.join("logs");
    for segment in log_group.split('/').filter(|s| !s.is_empty()) {
        path.push(segment);
    }
    path.push(LOG_STREAM);
    path.push(format!(
        "{:04}-{:02}-{:02}.jsonl",
        at.year(),
        u8::from(at.month()),
        at.day()
    ));
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn invocation() -> Invocation {
        Invocation {
            timestamp: datetime!(2026-12-02 09:05:07.123 UTC),
            account_id: "123456789012".into(),
            identity_arn: "arn:aws:iam::123456789012:root".into(),
            region: "us-east-1".into(),
            request_id: "req-1".into(),
            operation: "Converse".into(),
            model_id: "anthropic.claude-3-haiku-20240307-v1:0".into(),
            input_content_type: "application/json".into(),
            input_body: Some(json!({"messages": []})),
            input_tokens: Some(12),
            output_content_type: Some("application/json".into()),
            output_body: Some(json!({"stopReason": "end_turn"})),
            output_tokens: Some(5),
            error_code: None,
        }
    }

    #[test]
    fn record_has_bedrocks_fields_in_order() {
        let r = invocation().record(true);
        let keys: Vec<&str> = r
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "schemaType",
                "schemaVersion",
                "timestamp",
                "accountId",
                "identity",
                "region",
                "requestId",
                "operation",
                "modelId",
                "input",
                "output"
            ]
        );
        assert_eq!(r["schemaType"], "ModelInvocationLog");
        assert_eq!(r["schemaVersion"], "1.0");
        assert_eq!(r["timestamp"], "2026-12-02T09:05:07Z");
        assert_eq!(r["identity"]["arn"], "arn:aws:iam::123456789012:root");
        assert_eq!(r["input"]["inputBodyJson"], json!({"messages": []}));
        assert_eq!(r["input"]["inputTokenCount"], 12);
        assert_eq!(r["output"]["outputBodyJson"]["stopReason"], "end_turn");
        assert_eq!(r["output"]["outputTokenCount"], 5);
    }

    #[test]
    fn bodies_are_left_out_unless_delivered() {
        let r = invocation().record(false);
        assert!(r["input"].get("inputBodyJson").is_none());
        assert!(r["output"].get("outputBodyJson").is_none());
        assert_eq!(r["input"]["inputTokenCount"], 12);
        assert_eq!(r["output"]["outputContentType"], "application/json");
    }

    #[test]
    fn a_failure_carries_its_error_code() {
        let mut inv = invocation();
        inv.error_code = Some("ValidationException".into());
        inv.output_body = None;
        inv.output_tokens = None;
        let r = inv.record(true);
        assert_eq!(r["errorCode"], "ValidationException");
        assert!(r["output"].get("outputTokenCount").is_none());
    }

    #[test]
    fn s3_keys_follow_bedrocks_layout() {
        let at = datetime!(2026-03-04 05:06:07.089 UTC);
        assert_eq!(
            s3_folder("", "123456789012", "us-east-1", at),
            "AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/2026/03/04/05/"
        );
        assert_eq!(
            s3_folder("team/logs/", "123456789012", "eu-west-1", at),
            "team/logs/AWSLogs/123456789012/BedrockModelInvocationLogs/eu-west-1/2026/03/04/05/"
        );
        assert_eq!(
            s3_object_name(at, "0a1b2c3d4e5f6071"),
            "20260304T050607089Z_0a1b2c3d4e5f6071.json.gz"
        );
    }

    #[test]
    fn cloudwatch_groups_are_folders_under_logs() {
        let at = datetime!(2026-03-04 05:06:07 UTC);
        let path = cloudwatch_file(Path::new("/data"), "/aws/bedrock/invocations", at);
        assert_eq!(
            path,
            Path::new(
                "/data/logs/aws/bedrock/invocations/aws/bedrock/modelinvocations/2026-03-04.jsonl"
            )
        );
    }
}
