//! Async invoke (bedrock-runtime StartAsyncInvoke): one model input, run in the
//! background, its response written to `<s3Uri>/<invocationId>/output.json`. The
//! invocation is a stored document like a batch job, so a restart finishes it.

use basalt_objects::S3Uri;
use basalt_proto::BedrockError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::job::{timestamp, under};

/// The object each invocation writes under its own folder.
pub const OUTPUT_NAME: &str = "output.json";
const MAX_TAGS: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AsyncStatus {
    InProgress,
    Completed,
    Failed,
}

impl AsyncStatus {
    pub const ALL: [AsyncStatus; 3] = [Self::InProgress, Self::Completed, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
        }
    }
}

/// StartAsyncInvoke's body.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    pub client_request_token: Option<String>,
    pub model_id: String,
    pub model_input: Value,
    pub output_data_config: Value,
    #[serde(default)]
    pub tags: Vec<Value>,
}

impl StartRequest {
    /// Checks the members botocore constrains; returns the output folder.
    pub fn validate(&self) -> Result<S3Uri, BedrockError> {
        if let Some(t) = &self.client_request_token {
            if t.is_empty() || t.len() > 256 || !t.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
                return Err(BedrockError::constraint(
                    "clientRequestToken",
                    t,
                    "Member must have length between 1 and 256 and satisfy regular expression pattern: [!-~]*",
                ));
            }
        }
        if !self.model_input.is_object() {
            return Err(BedrockError::validation(
                "modelInput must be a JSON object: the model's InvokeModel body.",
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(BedrockError::validation(format!(
                "An invocation takes at most {MAX_TAGS} tags; this request has {}.",
                self.tags.len()
            )));
        }
        let members = self.output_data_config.as_object();
        let Some(config) = members
            .filter(|m| m.len() == 1)
            .and_then(|m| m.get("s3OutputDataConfig"))
        else {
            return Err(BedrockError::validation(
                "outputDataConfig must set exactly one member, s3OutputDataConfig.",
            ));
        };
        let Some(uri) = config.get("s3Uri").and_then(Value::as_str) else {
            return Err(BedrockError::validation(
                "outputDataConfig.s3OutputDataConfig.s3Uri is required and must be a string.",
            ));
        };
        if uri.len() > 1024 {
            return Err(BedrockError::constraint(
                "outputDataConfig.s3OutputDataConfig.s3Uri",
                uri,
                "Member must have length between 1 and 1024",
            ));
        }
        S3Uri::parse(uri).map_err(|e| {
            BedrockError::validation(format!("outputDataConfig.s3OutputDataConfig.s3Uri: {e}"))
        })
    }
}

/// An invocation as stored, and as GetAsyncInvoke returns it (less private members).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncInvocation {
    pub invocation_arn: String,
    pub model_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
    pub status: AsyncStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    pub submit_time: String,
    pub last_modified_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub output_data_config: Value,
    /// Private: the model ID as the request gave it, and its input.
    #[serde(rename = "_modelId")]
    pub model_id: String,
    #[serde(rename = "_modelInput")]
    pub model_input: Value,
    /// Private: where the response goes.
    #[serde(rename = "_output")]
    pub output: String,
    /// Private: the node running it, while it runs.
    #[serde(default, rename = "_lease", skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::job::Lease>,
}

impl AsyncInvocation {
    pub fn new(
        request: &StartRequest,
        folder: &S3Uri,
        arn: String,
        model_arn: String,
        now: OffsetDateTime,
    ) -> Self {
        let id = arn.rsplit('/').next().unwrap_or_default().to_string();
        Self {
            invocation_arn: arn,
            model_arn,
            client_request_token: request.client_request_token.clone(),
            status: AsyncStatus::InProgress,
            failure_message: None,
            submit_time: timestamp(now),
            last_modified_time: timestamp(now),
            end_time: None,
            output_data_config: request.output_data_config.clone(),
            model_id: request.model_id.clone(),
            model_input: request.model_input.clone(),
            output: under(folder, &format!("{id}/{OUTPUT_NAME}")).to_string(),
            lease: None,
        }
    }

    pub fn id(&self) -> &str {
        self.invocation_arn.rsplit('/').next().unwrap_or_default()
    }

    pub fn public(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.retain(|k, _| !k.starts_with('_'));
        }
        v
    }

    pub fn finish(&mut self, failure: Option<String>, now: OffsetDateTime) {
        self.status = if failure.is_some() {
            AsyncStatus::Failed
        } else {
            AsyncStatus::Completed
        };
        self.failure_message = failure;
        self.last_modified_time = timestamp(now);
        self.end_time = Some(timestamp(now));
        self.lease = None;
    }
}

pub fn invocation_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:bedrock:{region}:{account}:async-invoke/{id}")
}

/// The invocation ID in an invocation ARN.
pub fn parse_arn(arn: &str) -> Result<String, BedrockError> {
    let id = arn
        .split_once(":async-invoke/")
        .filter(|(prefix, _)| prefix.starts_with("arn:aws"))
        .map(|(_, id)| id)
        .filter(|id| {
            id.len() == 12
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    id.map(str::to_string).ok_or_else(|| {
        BedrockError::constraint(
            "invocationArn",
            arn,
            "Member must satisfy regular expression pattern: arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:async-invoke/[a-z0-9]{12}",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body: Value) -> StartRequest {
        serde_json::from_value(body).expect("parses")
    }

    #[test]
    fn the_output_goes_under_the_invocation_id() {
        let req = request(json!({
            "modelId": "amazon.titan-embed-text-v2:0",
            "modelInput": {"inputText": "hi"},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/async"}}
        }));
        let folder = req.validate().expect("valid");
        let arn = invocation_arn("us-east-1", "123456789012", "abcdef123456");
        let inv = AsyncInvocation::new(
            &req,
            &folder,
            arn.clone(),
            "m".into(),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(inv.output, "s3://out-bucket/async/abcdef123456/output.json");
        assert_eq!(parse_arn(&arn).expect("arn"), "abcdef123456");
        let public = inv.public();
        assert!(public.get("_modelInput").is_none());
        assert_eq!(public["status"], "InProgress");
    }

    #[test]
    fn bad_requests_and_arns_are_refused() {
        let bad = [
            json!({"modelId": "m", "modelInput": "text", "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/"}}}),
            json!({"modelId": "m", "modelInput": {}, "outputDataConfig": {}}),
            json!({"modelId": "m", "modelInput": {}, "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "http://x"}}}),
        ];
        for body in bad {
            assert!(request(body.clone()).validate().is_err(), "{body}");
        }
        assert!(parse_arn("abcdef123456").is_err());
        assert!(parse_arn("arn:aws:bedrock:us-east-1:123456789012:async-invoke/ABC").is_err());
    }
}
