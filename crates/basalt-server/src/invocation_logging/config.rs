//! LoggingConfig, as PutModelInvocationLoggingConfiguration takes it and
//! GetModelInvocationLoggingConfiguration returns it, and its validation.

use basalt_objects::S3Uri;
use basalt_proto::BedrockError;
use serde::{Deserialize, Serialize};

use super::record::DataKind;

const MAX_LOG_GROUP_LEN: usize = 512;
const MAX_ROLE_ARN_LEN: usize = 2048;
const MAX_KEY_PREFIX_LEN: usize = 1024;
const ROLE_ARN_PATTERN: &str = "arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+";
/// CloudWatch Logs' own rule for log group names.
const LOG_GROUP_PATTERN: &str = "[\\.\\-_/#A-Za-z0-9]+";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudWatchConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_data_delivery_s3_config: Option<S3Config>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch_config: Option<CloudWatchConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_config: Option<S3Config>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_data_delivery_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_data_delivery_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_data_delivery_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_data_delivery_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_data_delivery_enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutRequest {
    pub logging_config: Option<LoggingConfig>,
}

/// Where the records of one configuration go, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destinations {
    /// (bucket, key prefix)
    pub s3: Option<(String, String)>,
    pub log_group: Option<String>,
}

impl LoggingConfig {
    /// Whether bodies of this kind of model are delivered (absent means no).
    pub fn delivers(&self, kind: DataKind) -> bool {
        let flag = match kind {
            DataKind::Text => self.text_data_delivery_enabled,
            DataKind::Embedding => self.embedding_data_delivery_enabled,
            DataKind::Image => self.image_data_delivery_enabled,
        };
        flag.unwrap_or(false)
    }

    /// Checks every member against the service model's constraints (and the local
    /// rules that keep names inside the data directory), naming the member that fails.
    pub fn validate(&self) -> Result<Destinations, BedrockError> {
        let s3 = match &self.s3_config {
            Some(c) => Some(check_s3(c, "loggingConfig.s3Config")?),
            None => None,
        };
        let log_group = match &self.cloud_watch_config {
            Some(c) => Some(check_cloud_watch(c)?),
            None => None,
        };
        if s3.is_none() && log_group.is_none() {
            return Err(BedrockError::validation(
                "1 validation error detected: loggingConfig must name a destination: \
                 cloudWatchConfig, s3Config, or both.",
            ));
        }
        Ok(Destinations { s3, log_group })
    }
}

fn check_s3(c: &S3Config, at: &str) -> Result<(String, String), BedrockError> {
    let field = format!("{at}.bucketName");
    let bucket = c
        .bucket_name
        .as_deref()
        .ok_or_else(|| BedrockError::missing(&field))?;
    if !(3..=63).contains(&bucket.len()) {
        return Err(BedrockError::constraint(
            &field,
            bucket,
            "Member must have length between 3 and 63",
        ));
    }
    S3Uri::parse(&format!("s3://{bucket}/")).map_err(|e| {
        BedrockError::constraint(
            &field,
            bucket,
            &format!("Member must be a valid S3 bucket name ({e})"),
        )
    })?;
    let prefix = c.key_prefix.clone().unwrap_or_default();
    let field = format!("{at}.keyPrefix");
    if prefix.len() > MAX_KEY_PREFIX_LEN {
        return Err(BedrockError::constraint(
            &field,
            &prefix,
            "Member must have length less than or equal to 1024",
        ));
    }
    if !prefix.is_empty() {
        S3Uri::parse(&format!("s3://{bucket}/{}/", prefix.trim_end_matches('/'))).map_err(|e| {
            BedrockError::constraint(
                &field,
                &prefix,
                &format!("Member must be a valid S3 key prefix ({e})"),
            )
        })?;
    }
    Ok((bucket.to_string(), prefix.trim_end_matches('/').to_string()))
}

fn check_cloud_watch(c: &CloudWatchConfig) -> Result<String, BedrockError> {
    const AT: &str = "loggingConfig.cloudWatchConfig";
    let field = format!("{AT}.logGroupName");
    let group = c
        .log_group_name
        .as_deref()
        .ok_or_else(|| BedrockError::missing(&field))?;
    if group.is_empty() || group.len() > MAX_LOG_GROUP_LEN {
        return Err(BedrockError::constraint(
            &field,
            group,
            "Member must have length between 1 and 512",
        ));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._-/#".contains(&b);
    let bad_segment = group.split('/').any(|s| s == "." || s == "..");
    if !group.bytes().all(allowed) || bad_segment || group.trim_matches('/').is_empty() {
        return Err(BedrockError::constraint(
            &field,
            group,
            &format!(
                "Member must satisfy regular expression pattern: {LOG_GROUP_PATTERN} \
                 (with no '.' or '..' path segment)"
            ),
        ));
    }
    let field = format!("{AT}.roleArn");
    let role = c
        .role_arn
        .as_deref()
        .ok_or_else(|| BedrockError::missing(&field))?;
    if role.len() > MAX_ROLE_ARN_LEN {
        return Err(BedrockError::constraint(
            &field,
            role,
            "Member must have length less than or equal to 2048",
        ));
    }
    if !valid_role_arn(role) {
        return Err(BedrockError::constraint(
            &field,
            role,
            &format!("Member must satisfy regular expression pattern: {ROLE_ARN_PATTERN}"),
        ));
    }
    if let Some(large) = &c.large_data_delivery_s3_config {
        check_s3(large, &format!("{AT}.largeDataDeliveryS3Config"))?;
    }
    Ok(group.to_string())
}

/// `arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+`
fn valid_role_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:aws") else {
        return false;
    };
    let rest = match rest.strip_prefix('-') {
        Some(r) => match r.split_once(':') {
            Some((partition, after)) if !partition.is_empty() => after,
            _ => return false,
        },
        None => match rest.strip_prefix(':') {
            Some(r) => r,
            None => return false,
        },
    };
    let Some(rest) = rest.strip_prefix("iam::") else {
        return false;
    };
    let Some((account, resource)) = rest.split_once(':') else {
        return false;
    };
    let account_ok =
        account.is_empty() || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
    account_ok && resource.len() > "role/".len() && resource.starts_with("role/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> LoggingConfig {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn role_arns_follow_the_pattern() {
        assert!(valid_role_arn("arn:aws:iam::123456789012:role/Logs"));
        assert!(valid_role_arn("arn:aws-cn:iam::123456789012:role/a/b"));
        assert!(valid_role_arn("arn:aws:iam:::role/x"));
        assert!(!valid_role_arn("arn:aws:iam::123:role/x"));
        assert!(!valid_role_arn("arn:aws:iam::123456789012:user/x"));
        assert!(!valid_role_arn("arn:aws:iam::123456789012:role/"));
        assert!(!valid_role_arn("role/x"));
    }

    #[test]
    fn validation_names_the_failing_member() {
        let short = parse(serde_json::json!({"s3Config": {"bucketName": "ab"}}));
        let e = short.validate().expect_err("too short");
        assert!(
            e.message.contains("'loggingConfig.s3Config.bucketName'"),
            "{}",
            e.message
        );
        let role = parse(serde_json::json!({
            "cloudWatchConfig": {"logGroupName": "g", "roleArn": "nope"}
        }));
        let e = role.validate().expect_err("bad role");
        assert!(e.message.contains("roleArn"), "{}", e.message);
        let escape = parse(serde_json::json!({
            "cloudWatchConfig": {"logGroupName": "a/../b", "roleArn": "arn:aws:iam::123456789012:role/r"}
        }));
        let e = escape.validate().expect_err("dot-dot");
        assert!(e.message.contains("logGroupName"), "{}", e.message);
        let none = parse(serde_json::json!({"textDataDeliveryEnabled": true}));
        assert!(none.validate().is_err());
    }

    #[test]
    fn destinations_come_back_normalised() {
        let c = parse(serde_json::json!({
            "s3Config": {"bucketName": "logs-bucket", "keyPrefix": "team/"},
            "cloudWatchConfig": {"logGroupName": "/aws/bedrock", "roleArn": "arn:aws:iam::123456789012:role/r"},
            "textDataDeliveryEnabled": true
        }));
        let d = c.validate().expect("valid");
        assert_eq!(d.s3, Some(("logs-bucket".into(), "team".into())));
        assert_eq!(d.log_group.as_deref(), Some("/aws/bedrock"));
        assert!(c.delivers(DataKind::Text));
        assert!(!c.delivers(DataKind::Embedding));
    }
}
