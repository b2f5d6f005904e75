//! A model invocation job: the request that creates it, its validation against
//! botocore's constraints, and the stored document that GetModelInvocationJob
//! returns.

use std::sync::LazyLock;

use basalt_objects::S3Uri;
use basalt_proto::BedrockError;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Hours a job may run when the request does not say (Bedrock's default).
pub const DEFAULT_TIMEOUT_HOURS: u32 = 24;
const MIN_TIMEOUT_HOURS: u32 = 24;
const MAX_TIMEOUT_HOURS: u32 = 168;
const MAX_TAGS: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    Submitted,
    Validating,
    Scheduled,
    InProgress,
    Completed,
    PartiallyCompleted,
    Failed,
    Stopping,
    Stopped,
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 10] = [
        Self::Submitted,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::Stopping,
        Self::Stopped,
        Self::PartiallyCompleted,
        Self::Expired,
        Self::Validating,
        Self::Scheduled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "Submitted",
            Self::Validating => "Validating",
            Self::Scheduled => "Scheduled",
            Self::InProgress => "InProgress",
            Self::Completed => "Completed",
            Self::PartiallyCompleted => "PartiallyCompleted",
            Self::Failed => "Failed",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
            Self::Expired => "Expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// No further transition happens from here.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::PartiallyCompleted
                | Self::Failed
                | Self::Stopped
                | Self::Expired
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum InvocationType {
    /// Each record's modelInput is the model family's InvokeModel body.
    #[default]
    InvokeModel,
    /// Each record's modelInput is a Converse request body.
    Converse,
}

/// CreateModelInvocationJob's body.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateJobRequest {
    pub job_name: String,
    pub role_arn: String,
    pub client_request_token: Option<String>,
    pub model_id: String,
    pub model_invocation_type: Option<String>,
    pub input_data_config: Value,
    pub output_data_config: Value,
    pub vpc_config: Option<Value>,
    pub timeout_duration_in_hours: Option<i64>,
    #[serde(default)]
    pub tags: Vec<Value>,
}

/// What validation derives from the request: the places and settings it names.
#[derive(Clone, Debug)]
pub struct ValidRequest {
    pub input: S3Uri,
    pub output: S3Uri,
    pub invocation_type: InvocationType,
    pub timeout_hours: u32,
}

fn pattern(re: &str) -> Regex {
    // The patterns are literals below; a typo is a bug caught by the unit tests.
    Regex::new(&format!("^(?:{re})$")).unwrap_or_else(|e| panic!("bad pattern {re}: {e}"))
}

static JOB_NAME: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}"));
static ROLE_ARN: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+"));
static TOKEN: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}"));
static S3_URI: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?",
    )
});
static JOB_IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"((arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?[a-z0-9]{12})",
    )
});

fn check_len(path: &str, value: &str, min: usize, max: usize) -> Result<(), BedrockError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(BedrockError::constraint(
            path,
            value,
            &format!("Member must have length between {min} and {max}"),
        ));
    }
    Ok(())
}

fn check_pattern(path: &str, value: &str, re: &Regex) -> Result<(), BedrockError> {
    if !re.is_match(value) {
        let shown = re
            .as_str()
            .trim_start_matches("^(?:")
            .trim_end_matches(")$");
        return Err(BedrockError::constraint(
            path,
            value,
            &format!("Member must satisfy regular expression pattern: {shown}"),
        ));
    }
    Ok(())
}

/// The one S3 member of a data config union, e.g. `inputDataConfig.s3InputDataConfig`.
fn s3_member<'a>(config: &'a Value, path: &str, member: &str) -> Result<&'a Value, BedrockError> {
    let Some(map) = config.as_object() else {
        return Err(BedrockError::validation(format!(
            "{path} must be an object with the member {member}."
        )));
    };
    if map.len() != 1 || !map.contains_key(member) {
        let given: Vec<&str> = map.keys().map(String::as_str).collect();
        return Err(BedrockError::validation(format!(
            "{path} must set exactly one member, {member}; it sets [{}].",
            given.join(", ")
        )));
    }
    Ok(&map[member])
}

fn s3_uri(config: &Value, path: &str) -> Result<S3Uri, BedrockError> {
    let uri_path = format!("{path}.s3Uri");
    let Some(uri) = config.get("s3Uri").and_then(Value::as_str) else {
        return Err(BedrockError::validation(format!(
            "{uri_path} is required and must be a string."
        )));
    };
    check_len(&uri_path, uri, 1, 1024)?;
    check_pattern(&uri_path, uri, &S3_URI)?;
    S3Uri::parse(uri).map_err(|e| BedrockError::validation(format!("{uri_path}: {e}")))
}

impl CreateJobRequest {
    /// Checks every member as botocore's model constrains it; the model ID itself is
    /// the server's to resolve.
    pub fn validate(&self) -> Result<ValidRequest, BedrockError> {
        check_len("jobName", &self.job_name, 1, 63)?;
        check_pattern("jobName", &self.job_name, &JOB_NAME)?;
        check_len("roleArn", &self.role_arn, 0, 2048)?;
        check_pattern("roleArn", &self.role_arn, &ROLE_ARN)?;
        if let Some(t) = &self.client_request_token {
            check_len("clientRequestToken", t, 1, 256)?;
            check_pattern("clientRequestToken", t, &TOKEN)?;
        }
        check_len("modelId", &self.model_id, 1, 2048)?;
        let invocation_type = match self.model_invocation_type.as_deref() {
            None | Some("InvokeModel") => InvocationType::InvokeModel,
            Some("Converse") => InvocationType::Converse,
            Some(other) => {
                return Err(BedrockError::constraint(
                    "modelInvocationType",
                    other,
                    "Member must satisfy enum value set: [InvokeModel, Converse]",
                ))
            }
        };
        let input = s3_member(
            &self.input_data_config,
            "inputDataConfig",
            "s3InputDataConfig",
        )?;
        if let Some(format) = input.get("s3InputFormat") {
            if format.as_str() != Some("JSONL") {
                return Err(BedrockError::constraint(
                    "inputDataConfig.s3InputDataConfig.s3InputFormat",
                    format,
                    "Member must satisfy enum value set: [JSONL]",
                ));
            }
        }
        let input = s3_uri(input, "inputDataConfig.s3InputDataConfig")?;
        let output = s3_member(
            &self.output_data_config,
            "outputDataConfig",
            "s3OutputDataConfig",
        )?;
        let output = s3_uri(output, "outputDataConfig.s3OutputDataConfig")?;
        let timeout_hours = match self.timeout_duration_in_hours {
            None => DEFAULT_TIMEOUT_HOURS,
            Some(h)
                if (i64::from(MIN_TIMEOUT_HOURS)..=i64::from(MAX_TIMEOUT_HOURS)).contains(&h) =>
            {
                h as u32
            }
            Some(h) => {
                return Err(BedrockError::constraint(
                    "timeoutDurationInHours",
                    h,
                    &format!(
                        "Member must have value between {MIN_TIMEOUT_HOURS} and {MAX_TIMEOUT_HOURS}"
                    ),
                ))
            }
        };
        if self.tags.len() > MAX_TAGS {
            return Err(BedrockError::validation(format!(
                "A job takes at most {MAX_TAGS} tags; this request has {}.",
                self.tags.len()
            )));
        }
        Ok(ValidRequest {
            input,
            output,
            invocation_type,
            timeout_hours,
        })
    }
}

/// The job ID in a job identifier: the 12-character ID or the job's ARN.
pub fn parse_identifier(identifier: &str) -> Result<String, BedrockError> {
    check_pattern("jobIdentifier", identifier, &JOB_IDENTIFIER)?;
    Ok(identifier
        .rsplit_once('/')
        .map_or(identifier, |(_, id)| id)
        .to_string())
}

/// `name` inside the folder `dir` names, whether or not `dir` ends in '/'.
pub fn under(dir: &S3Uri, name: &str) -> S3Uri {
    let mut key = dir.key.clone();
    if !key.is_empty() && !key.ends_with('/') {
        key.push('/');
    }
    key.push_str(name);
    S3Uri {
        bucket: dir.bucket.clone(),
        key,
    }
}

pub fn new_job_id() -> String {
    const SET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| SET[rng.random_range(0..SET.len())] as char)
        .collect()
}

pub fn job_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:bedrock:{region}:{account}:model-invocation-job/{id}")
}

pub fn timestamp(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// One input file of a job, found during validation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputFile {
    pub uri: String,
    /// The output object's name: the input's file name plus `.out`.
    pub output_name: String,
    pub records: u64,
}

/// A job as stored, and as GetModelInvocationJob returns it (less the private members).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub job_arn: String,
    pub job_name: String,
    pub model_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
    pub role_arn: String,
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub submit_time: String,
    pub last_modified_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub input_data_config: Value,
    pub output_data_config: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_config: Option<Value>,
    pub timeout_duration_in_hours: u32,
    pub job_expiration_time: String,
    pub model_invocation_type: InvocationType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_record_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processed_record_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_record_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_record_count: Option<u64>,
    /// Private: the input files, once validation has listed them.
    #[serde(default, rename = "_inputs", skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputFile>,
    /// Private: the output prefix the job writes under (`<outputUri>/<jobId>/`).
    #[serde(default, rename = "_outputPrefix")]
    pub output_prefix: String,
    /// Private: the records are listed in the store as waiting (false for jobs
    /// validated before records were claimed; they are listed when they run).
    #[serde(default, rename = "_seeded")]
    pub seeded: bool,
    /// Private: the node validating the job or writing its outputs, while it does.
    #[serde(default, rename = "_lease", skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Private: why the job must fail (an input became unreadable), for every node.
    #[serde(default, rename = "_failure", skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One node's hold on a document's exclusive step, until `until` (ms since the epoch).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    pub until: i64,
}

impl Lease {
    /// Whether `node` may take the step now: no one holds it, `node` does, or the
    /// holder's lease has lapsed.
    pub fn open_to(lease: Option<&Lease>, node: &str, now_ms: i64) -> bool {
        lease.is_none_or(|l| l.node == node || l.until <= now_ms)
    }
}

impl Job {
    pub fn new(
        request: &CreateJobRequest,
        valid: &ValidRequest,
        arn: String,
        model_id: String,
        now: OffsetDateTime,
    ) -> Self {
        let id = arn.rsplit('/').next().unwrap_or_default();
        let expires = now + time::Duration::hours(i64::from(valid.timeout_hours));
        let output_prefix = under(&valid.output, &format!("{id}/"));
        Self {
            job_arn: arn.clone(),
            job_name: request.job_name.clone(),
            model_id,
            client_request_token: request.client_request_token.clone(),
            role_arn: request.role_arn.clone(),
            status: JobStatus::Submitted,
            message: None,
            submit_time: timestamp(now),
            last_modified_time: timestamp(now),
            end_time: None,
            input_data_config: request.input_data_config.clone(),
            output_data_config: request.output_data_config.clone(),
            vpc_config: request.vpc_config.clone(),
            timeout_duration_in_hours: valid.timeout_hours,
            job_expiration_time: timestamp(expires),
            model_invocation_type: valid.invocation_type,
            total_record_count: None,
            processed_record_count: None,
            success_record_count: None,
            error_record_count: None,
            inputs: Vec::new(),
            output_prefix: output_prefix.to_string(),
            seeded: false,
            lease: None,
            failure: None,
        }
    }

    pub fn id(&self) -> &str {
        self.job_arn.rsplit('/').next().unwrap_or_default()
    }

    /// The public document: the stored one less the private members.
    pub fn public(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.retain(|k, _| !k.starts_with('_'));
        }
        v
    }

    pub fn input_uri(&self) -> Option<&str> {
        self.input_data_config
            .pointer("/s3InputDataConfig/s3Uri")
            .and_then(Value::as_str)
    }

    /// Moves to `status`, stamping the modification (and the end, if terminal).
    pub fn set_status(&mut self, status: JobStatus, now: OffsetDateTime) {
        self.status = status;
        self.last_modified_time = timestamp(now);
        if status.is_terminal() {
            self.end_time = Some(timestamp(now));
        }
    }

    pub fn expired(&self, now: OffsetDateTime) -> bool {
        parse_timestamp(&self.job_expiration_time).is_some_and(|t| now >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body: Value) -> CreateJobRequest {
        serde_json::from_value(body).expect("parses")
    }

    fn good() -> Value {
        json!({
            "jobName": "batch-job-1700000000",
            "roleArn": "arn:aws:iam::123456789012:role/BedrockBatch",
            "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://in-bucket/records.jsonl"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/results/"}}
        })
    }

    #[test]
    fn a_good_request_validates_with_defaults() {
        let v = request(good()).validate().expect("valid");
        assert_eq!(v.input.to_string(), "s3://in-bucket/records.jsonl");
        assert_eq!(v.timeout_hours, DEFAULT_TIMEOUT_HOURS);
        assert_eq!(v.invocation_type, InvocationType::InvokeModel);
    }

    #[test]
    fn each_bad_member_is_named() {
        let cases = [
            ("/jobName", json!("bad name!"), "jobName"),
            ("/roleArn", json!("role"), "roleArn"),
            (
                "/timeoutDurationInHours",
                json!(12),
                "timeoutDurationInHours",
            ),
            (
                "/modelInvocationType",
                json!("Stream"),
                "modelInvocationType",
            ),
            (
                "/inputDataConfig",
                json!({"s3InputDataConfig": {"s3Uri": "http://x/y"}}),
                "inputDataConfig.s3InputDataConfig.s3Uri",
            ),
            (
                "/inputDataConfig",
                json!({"s3InputDataConfig": {"s3Uri": "s3://in-bucket/a.jsonl", "s3InputFormat": "CSV"}}),
                "s3InputFormat",
            ),
            ("/outputDataConfig", json!({}), "s3OutputDataConfig"),
        ];
        for (pointer, value, named) in cases {
            let mut body = good();
            body[&pointer[1..]] = value;
            let e = request(body).validate().expect_err(named);
            assert!(e.message.contains(named), "{named}: {}", e.message);
        }
    }

    #[test]
    fn identifiers_are_ids_or_arns() {
        assert_eq!(
            parse_identifier("abcdef123456").expect("id"),
            "abcdef123456"
        );
        assert_eq!(
            parse_identifier(
                "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdef123456"
            )
            .expect("arn"),
            "abcdef123456"
        );
        assert!(parse_identifier("abc").is_err());
        assert!(
            parse_identifier("arn:aws:bedrock:us-east-1:1:model-invocation-job/abcdef123456")
                .is_err()
        );
    }

    #[test]
    fn the_output_goes_under_the_job_id_and_private_members_stay_private() {
        let req = request(good());
        let valid = req.validate().expect("valid");
        let arn = job_arn("us-east-1", "123456789012", "abcdef123456");
        let mut job = Job::new(
            &req,
            &valid,
            arn,
            req.model_id.clone(),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(job.output_prefix, "s3://out-bucket/results/abcdef123456/");
        assert_eq!(job.job_expiration_time, "1970-01-02T00:00:00Z");
        job.inputs.push(InputFile {
            uri: "s3://in-bucket/records.jsonl".into(),
            output_name: "records.jsonl.out".into(),
            records: 2,
        });
        let public = job.public();
        assert!(public.get("_inputs").is_none() && public.get("_outputPrefix").is_none());
        assert_eq!(public["status"], "Submitted");
        let back: Job =
            serde_json::from_value(serde_json::to_value(&job).expect("ser")).expect("de");
        assert_eq!(back.inputs, job.inputs);
        assert!(!JobStatus::InProgress.is_terminal() && JobStatus::Expired.is_terminal());
        assert_eq!(
            JobStatus::parse("PartiallyCompleted"),
            Some(JobStatus::PartiallyCompleted)
        );
    }
}
