//! The bedrock-agent resources: KnowledgeBase, DataSource and IngestionJob, the
//! requests that create and update them, and their validation against botocore's
//! constraints. Documents are stored as the JSON that Get returns.

use std::sync::LazyLock;

use basalt_chunking::ChunkingConfig;
use basalt_objects::S3Uri;
use basalt_proto::BedrockError;
use rand::Rng;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const KB_KIND: &str = "knowledge-base";
pub const DS_KIND: &str = "kb-data-source";
pub const JOB_KIND: &str = "kb-ingestion-job";
/// Versions of a document row: one per resource.
pub const CURRENT: &str = "current";

static NAME: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)]
    Regex::new(r"^([0-9a-zA-Z][_-]?){1,100}$").unwrap()
});
static ROLE_ARN: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)]
    Regex::new(r"^arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+$").unwrap()
});
static ID: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)]
    Regex::new(r"^[0-9a-zA-Z]{10}$").unwrap()
});

const MAX_DESCRIPTION: usize = 200;

pub fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// A 10-character identifier, as Bedrock gives knowledge bases, data sources and jobs.
pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks a path label that names a knowledge base, data source or job.
pub fn check_id(member: &str, id: &str) -> Result<(), BedrockError> {
    if ID.is_match(id) {
        Ok(())
    } else {
        Err(BedrockError::constraint(
            member,
            id,
            "Member must satisfy regular expression pattern: [0-9a-zA-Z]{10}",
        ))
    }
}

fn check_name(name: &str) -> Result<(), BedrockError> {
    if NAME.is_match(name) {
        Ok(())
    } else {
        Err(BedrockError::constraint(
            "name",
            name,
            "Member must satisfy regular expression pattern: ([0-9a-zA-Z][_-]?){1,100}",
        ))
    }
}

fn check_description(description: Option<&str>) -> Result<(), BedrockError> {
    match description {
        Some(d) if d.is_empty() || d.chars().count() > MAX_DESCRIPTION => {
            Err(BedrockError::constraint(
                "description",
                d,
                "Member must have length between 1 and 200",
            ))
        }
        _ => Ok(()),
    }
}

/// Where a knowledge base keeps its vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// The embedded index in the data directory (no storageConfiguration, or S3_VECTORS).
    Embedded,
    /// PostgreSQL with pgvector (RDS), reached through the server's configuration.
    Rds(RdsConfiguration),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RdsConfiguration {
    pub resource_arn: String,
    pub credentials_secret_arn: String,
    pub database_name: String,
    pub table_name: String,
    pub field_mapping: Value,
}

const STORAGE_TYPES: [&str; 8] = [
    "OPENSEARCH_SERVERLESS",
    "PINECONE",
    "REDIS_ENTERPRISE_CLOUD",
    "RDS",
    "MONGO_DB_ATLAS",
    "NEPTUNE_ANALYTICS",
    "OPENSEARCH_MANAGED_CLUSTER",
    "S3_VECTORS",
];

pub fn parse_storage(config: Option<&Value>) -> Result<Storage, BedrockError> {
    let Some(config) = config else {
        return Ok(Storage::Embedded);
    };
    let kind = config.get("type").and_then(Value::as_str).ok_or_else(|| {
        BedrockError::validation("storageConfiguration.type is required.".to_string())
    })?;
    match kind {
        "S3_VECTORS" => Ok(Storage::Embedded),
        "RDS" => {
            let rds = config.get("rdsConfiguration").ok_or_else(|| {
                BedrockError::validation(
                    "storageConfiguration.rdsConfiguration is required when type is RDS.",
                )
            })?;
            serde_json::from_value(rds.clone())
                .map(Storage::Rds)
                .map_err(|e| {
                    BedrockError::validation(format!(
                        "storageConfiguration.rdsConfiguration: {e}"
                    ))
                })
        }
        other if STORAGE_TYPES.contains(&other) => Err(BedrockError::validation(format!(
            "storageConfiguration.type {other} is not supported by this server. Use S3_VECTORS \
             (or omit storageConfiguration) for the embedded index, or RDS for PostgreSQL with pgvector."
        ))),
        other => Err(BedrockError::constraint(
            "storageConfiguration.type",
            other,
            &format!(
                "Member must satisfy enum value set: [{}]",
                STORAGE_TYPES.join(", ")
            ),
        )),
    }
}

/// The embedding model and width a VECTOR knowledge base uses.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingSpec {
    pub model_arn: String,
    pub dimensions: Option<usize>,
}

pub fn parse_embedding(config: &Value) -> Result<EmbeddingSpec, BedrockError> {
    let kind = config.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "VECTOR" {
        return Err(BedrockError::validation(format!(
            "knowledgeBaseConfiguration.type {kind:?} is not supported by this server; use VECTOR."
        )));
    }
    let vector = config
        .get("vectorKnowledgeBaseConfiguration")
        .ok_or_else(|| {
            BedrockError::validation(
                "knowledgeBaseConfiguration.vectorKnowledgeBaseConfiguration is required when type is VECTOR.",
            )
        })?;
    let model_arn = vector
        .get("embeddingModelArn")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            BedrockError::validation(
                "knowledgeBaseConfiguration.vectorKnowledgeBaseConfiguration.embeddingModelArn is required.",
            )
        })?
        .to_string();
    let model_config = vector
        .get("embeddingModelConfiguration")
        .and_then(|c| c.get("bedrockEmbeddingModelConfiguration"));
    let dimensions = match model_config.and_then(|c| c.get("dimensions")) {
        None | Some(Value::Null) => None,
        Some(d) => match d.as_u64() {
            Some(n @ 1..=4096) => Some(n as usize),
            _ => {
                return Err(BedrockError::constraint(
                    "knowledgeBaseConfiguration.vectorKnowledgeBaseConfiguration.embeddingModelConfiguration.bedrockEmbeddingModelConfiguration.dimensions",
                    d,
                    "Member must have value between 1 and 4096",
                ))
            }
        },
    };
    if let Some(t) = model_config
        .and_then(|c| c.get("embeddingDataType"))
        .and_then(Value::as_str)
    {
        if t != "FLOAT32" {
            return Err(BedrockError::validation(format!(
                "embeddingDataType {t} is not supported by this server; use FLOAT32."
            )));
        }
    }
    Ok(EmbeddingSpec {
        model_arn,
        dimensions,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeBaseRequest {
    pub client_token: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub role_arn: String,
    pub knowledge_base_configuration: Value,
    pub storage_configuration: Option<Value>,
    pub metadata_configurations: Option<Value>,
}

impl KnowledgeBaseRequest {
    /// Checks every member; returns what the knowledge base will need at run time.
    pub fn validate(&self) -> Result<(EmbeddingSpec, Storage), BedrockError> {
        check_name(&self.name)?;
        check_description(self.description.as_deref())?;
        if !ROLE_ARN.is_match(&self.role_arn) || self.role_arn.len() > 2048 {
            return Err(BedrockError::constraint(
                "roleArn",
                &self.role_arn,
                "Member must satisfy regular expression pattern: arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+",
            ));
        }
        let embedding = parse_embedding(&self.knowledge_base_configuration)?;
        let storage = parse_storage(self.storage_configuration.as_ref())?;
        Ok((embedding, storage))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeBase {
    pub knowledge_base_id: String,
    pub name: String,
    pub knowledge_base_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub role_arn: String,
    pub knowledge_base_configuration: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_configuration: Option<Value>,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_configurations: Option<Value>,
}

impl KnowledgeBase {
    pub fn new(req: KnowledgeBaseRequest, region: &str, account: &str) -> Self {
        let id = new_id();
        let at = now();
        Self {
            knowledge_base_arn: format!("arn:aws:bedrock:{region}:{account}:knowledge-base/{id}"),
            knowledge_base_id: id,
            name: req.name,
            description: req.description,
            role_arn: req.role_arn,
            knowledge_base_configuration: req.knowledge_base_configuration,
            storage_configuration: req.storage_configuration,
            status: "CREATING".into(),
            created_at: at.clone(),
            updated_at: at,
            failure_reasons: Vec::new(),
            metadata_configurations: req.metadata_configurations,
        }
    }

    pub fn embedding(&self) -> Result<EmbeddingSpec, BedrockError> {
        parse_embedding(&self.knowledge_base_configuration)
    }

    pub fn storage(&self) -> Result<Storage, BedrockError> {
        parse_storage(self.storage_configuration.as_ref())
    }

    pub fn summary(&self) -> Value {
        let mut s = json!({
            "knowledgeBaseId": self.knowledge_base_id,
            "name": self.name,
            "status": self.status,
            "updatedAt": self.updated_at,
        });
        if let Some(d) = &self.description {
            s["description"] = json!(d);
        }
        s
    }
}

/// An S3 data source's bucket and prefixes.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Source {
    pub bucket: String,
    pub inclusion_prefixes: Vec<String>,
}

impl S3Source {
    /// The URIs to list: one per inclusion prefix, or the whole bucket.
    pub fn roots(&self) -> Vec<S3Uri> {
        if self.inclusion_prefixes.is_empty() {
            return vec![S3Uri {
                bucket: self.bucket.clone(),
                key: String::new(),
            }];
        }
        self.inclusion_prefixes
            .iter()
            .map(|p| S3Uri {
                bucket: self.bucket.clone(),
                key: p.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    S3(S3Source),
    Custom,
}

pub fn parse_source(config: &Value) -> Result<SourceKind, BedrockError> {
    let kind = config.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "CUSTOM" => Ok(SourceKind::Custom),
        "S3" => {
            let s3 = config.get("s3Configuration").ok_or_else(|| {
                BedrockError::validation(
                    "dataSourceConfiguration.s3Configuration is required when type is S3.",
                )
            })?;
            let arn = s3
                .get("bucketArn")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    BedrockError::validation(
                        "dataSourceConfiguration.s3Configuration.bucketArn is required.",
                    )
                })?;
            let bucket = arn
                .strip_prefix("arn:aws:s3:::")
                .filter(|b| !b.is_empty() && !b.contains('/'))
                .ok_or_else(|| {
                    BedrockError::constraint(
                        "dataSourceConfiguration.s3Configuration.bucketArn",
                        arn,
                        "Member must satisfy regular expression pattern: arn:aws(|-cn|-us-gov):s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
                    )
                })?;
            let prefixes = match s3.get("inclusionPrefixes") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) if items.len() <= 1 => items
                    .iter()
                    .map(|p| {
                        p.as_str().map(str::to_string).ok_or_else(|| {
                            BedrockError::validation(
                                "dataSourceConfiguration.s3Configuration.inclusionPrefixes must be strings.",
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(BedrockError::validation(
                        "dataSourceConfiguration.s3Configuration.inclusionPrefixes holds at most 1 prefix.",
                    ))
                }
            };
            Ok(SourceKind::S3(S3Source {
                bucket: bucket.to_string(),
                inclusion_prefixes: prefixes,
            }))
        }
        other => Err(BedrockError::validation(format!(
            "dataSourceConfiguration.type {other:?} is not supported by this server; use S3 or CUSTOM."
        ))),
    }
}

/// The chunking a data source asks for (FIXED_SIZE 300/20 when absent).
pub fn parse_chunking(vector_ingestion: Option<&Value>) -> Result<ChunkingConfig, BedrockError> {
    let Some(chunking) = vector_ingestion.and_then(|v| v.get("chunkingConfiguration")) else {
        return Ok(ChunkingConfig::default());
    };
    let config: ChunkingConfig = serde_json::from_value(chunking.clone()).map_err(|e| {
        BedrockError::validation(format!(
            "vectorIngestionConfiguration.chunkingConfiguration: {e}"
        ))
    })?;
    config.validate().map_err(BedrockError::validation)?;
    Ok(config)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceRequest {
    pub client_token: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub data_source_configuration: Value,
    pub data_deletion_policy: Option<String>,
    pub server_side_encryption_configuration: Option<Value>,
    pub vector_ingestion_configuration: Option<Value>,
}

impl DataSourceRequest {
    pub fn validate(&self) -> Result<(SourceKind, ChunkingConfig), BedrockError> {
        check_name(&self.name)?;
        check_description(self.description.as_deref())?;
        if let Some(p) = &self.data_deletion_policy {
            if p != "RETAIN" && p != "DELETE" {
                return Err(BedrockError::constraint(
                    "dataDeletionPolicy",
                    p,
                    "Member must satisfy enum value set: [RETAIN, DELETE]",
                ));
            }
        }
        if let Some(parsing) = self
            .vector_ingestion_configuration
            .as_ref()
            .and_then(|v| v.get("parsingConfiguration"))
        {
            return Err(BedrockError::validation(format!(
                "vectorIngestionConfiguration.parsingConfiguration ({}) needs a foundation model to parse documents; \
                 this server parses documents itself, so omit it.",
                parsing.get("parsingStrategy").and_then(Value::as_str).unwrap_or("?")
            )));
        }
        let source = parse_source(&self.data_source_configuration)?;
        let chunking = parse_chunking(self.vector_ingestion_configuration.as_ref())?;
        Ok((source, chunking))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    pub knowledge_base_id: String,
    pub data_source_id: String,
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub data_source_configuration: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_side_encryption_configuration: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_ingestion_configuration: Option<Value>,
    pub data_deletion_policy: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_reasons: Vec<String>,
}

impl DataSource {
    pub fn new(knowledge_base_id: &str, req: DataSourceRequest) -> Self {
        let at = now();
        Self {
            knowledge_base_id: knowledge_base_id.to_string(),
            data_source_id: new_id(),
            name: req.name,
            status: "AVAILABLE".into(),
            description: req.description,
            data_source_configuration: req.data_source_configuration,
            server_side_encryption_configuration: req.server_side_encryption_configuration,
            vector_ingestion_configuration: req.vector_ingestion_configuration,
            data_deletion_policy: req.data_deletion_policy.unwrap_or_else(|| "DELETE".into()),
            created_at: at.clone(),
            updated_at: at,
            failure_reasons: Vec::new(),
        }
    }

    pub fn source(&self) -> Result<SourceKind, BedrockError> {
        parse_source(&self.data_source_configuration)
    }

    pub fn chunking(&self) -> Result<ChunkingConfig, BedrockError> {
        parse_chunking(self.vector_ingestion_configuration.as_ref())
    }

    /// The store id under which this data source's rows live.
    pub fn scope(&self) -> String {
        format!("{}/{}", self.knowledge_base_id, self.data_source_id)
    }

    pub fn summary(&self) -> Value {
        let mut s = json!({
            "knowledgeBaseId": self.knowledge_base_id,
            "dataSourceId": self.data_source_id,
            "name": self.name,
            "status": self.status,
            "updatedAt": self.updated_at,
        });
        if let Some(d) = &self.description {
            s["description"] = json!(d);
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Starting,
    InProgress,
    Complete,
    Failed,
    Stopping,
    Stopped,
}

impl JobStatus {
    pub const ALL: [&'static str; 6] = [
        "STARTING",
        "IN_PROGRESS",
        "COMPLETE",
        "FAILED",
        "STOPPING",
        "STOPPED",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "STARTING",
            Self::InProgress => "IN_PROGRESS",
            Self::Complete => "COMPLETE",
            Self::Failed => "FAILED",
            Self::Stopping => "STOPPING",
            Self::Stopped => "STOPPED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Complete | Self::Failed | Self::Stopped)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    pub number_of_documents_scanned: u64,
    pub number_of_metadata_documents_scanned: u64,
    pub number_of_new_documents_indexed: u64,
    pub number_of_modified_documents_indexed: u64,
    pub number_of_metadata_documents_modified: u64,
    pub number_of_documents_deleted: u64,
    pub number_of_documents_failed: u64,
    pub number_of_documents_skipped: u64,
}

/// Failure reasons kept per job; the rest are counted only.
pub const MAX_FAILURE_REASONS: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestionJob {
    pub knowledge_base_id: String,
    pub data_source_id: String,
    pub ingestion_job_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: JobStatus,
    pub statistics: Statistics,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_reasons: Vec<String>,
    pub started_at: String,
    pub updated_at: String,
}

impl IngestionJob {
    pub fn new(data_source: &DataSource, description: Option<String>) -> Self {
        let at = now();
        Self {
            knowledge_base_id: data_source.knowledge_base_id.clone(),
            data_source_id: data_source.data_source_id.clone(),
            ingestion_job_id: new_id(),
            description,
            status: JobStatus::Starting,
            statistics: Statistics::default(),
            failure_reasons: Vec::new(),
            started_at: at.clone(),
            updated_at: at,
        }
    }

    /// The store id of this job's row.
    pub fn key_id(&self) -> String {
        format!(
            "{}/{}/{}",
            self.knowledge_base_id, self.data_source_id, self.ingestion_job_id
        )
    }

    /// What ListIngestionJobs returns for it (no failureReasons).
    pub fn summary(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("failureReasons");
        }
        v
    }

    pub fn fail_reason(&mut self, reason: String) {
        if self.failure_reasons.len() < MAX_FAILURE_REASONS {
            self.failure_reasons.push(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kb_request(config: Value, storage: Option<Value>) -> KnowledgeBaseRequest {
        KnowledgeBaseRequest {
            client_token: None,
            name: "docs-kb".into(),
            description: None,
            role_arn: "arn:aws:iam::123456789012:role/kb".into(),
            knowledge_base_configuration: config,
            storage_configuration: storage,
            metadata_configurations: None,
        }
    }

    fn vector(model: &str) -> Value {
        json!({"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": model,
            "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"dimensions": 256}}}})
    }

    #[test]
    fn embedded_storage_is_the_default_and_s3_vectors() {
        let (emb, storage) = kb_request(vector("arn:m"), None).validate().expect("valid");
        assert_eq!(emb.dimensions, Some(256));
        assert_eq!(storage, Storage::Embedded);
        let (_, storage) = kb_request(vector("arn:m"), Some(json!({"type": "S3_VECTORS"})))
            .validate()
            .expect("valid");
        assert_eq!(storage, Storage::Embedded);
    }

    #[test]
    fn unsupported_storage_names_what_is_supported() {
        let err = kb_request(
            vector("arn:m"),
            Some(json!({"type": "PINECONE", "pineconeConfiguration": {}})),
        )
        .validate()
        .expect_err("refused");
        assert!(err.message.contains("S3_VECTORS") && err.message.contains("RDS"));
        let err = kb_request(vector("arn:m"), Some(json!({"type": "NOPE"})))
            .validate()
            .expect_err("refused");
        assert!(err.message.contains("enum value set"), "{}", err.message);
    }

    #[test]
    fn rds_storage_parses_its_mapping() {
        let rds = json!({"type": "RDS", "rdsConfiguration": {"resourceArn": "arn:aws:rds:us-east-1:1:cluster:c",
            "credentialsSecretArn": "arn:s", "databaseName": "kb", "tableName": "bedrock.kb",
            "fieldMapping": {"primaryKeyField": "id", "vectorField": "embedding", "textField": "chunks", "metadataField": "metadata"}}});
        let (_, storage) = kb_request(vector("arn:m"), Some(rds))
            .validate()
            .expect("valid");
        let Storage::Rds(c) = storage else {
            panic!("not RDS")
        };
        assert_eq!(c.table_name, "bedrock.kb");
    }

    #[test]
    fn bad_names_roles_and_types_are_refused() {
        let mut r = kb_request(vector("arn:m"), None);
        r.name = "bad name!".into();
        assert!(r.validate().expect_err("name").message.contains("name"));
        let mut r = kb_request(vector("arn:m"), None);
        r.role_arn = "role".into();
        assert!(r.validate().expect_err("role").message.contains("roleArn"));
        let r = kb_request(json!({"type": "KENDRA"}), None);
        assert!(r.validate().expect_err("type").message.contains("VECTOR"));
    }

    #[test]
    fn s3_sources_take_a_bucket_arn_and_one_prefix() {
        let s = parse_source(&json!({"type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::docs", "inclusionPrefixes": ["a/"]}}))
            .expect("valid");
        assert_eq!(
            s,
            SourceKind::S3(S3Source {
                bucket: "docs".into(),
                inclusion_prefixes: vec!["a/".into()]
            })
        );
        assert!(parse_source(
            &json!({"type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::"}})
        )
        .is_err());
        assert!(parse_source(&json!({"type": "WEB"}))
            .expect_err("web")
            .message
            .contains("S3 or CUSTOM"));
        assert_eq!(
            parse_source(&json!({"type": "CUSTOM"})).expect("custom"),
            SourceKind::Custom
        );
    }

    #[test]
    fn ids_are_ten_characters() {
        let id = new_id();
        assert!(check_id("knowledgeBaseId", &id).is_ok());
        assert!(check_id("knowledgeBaseId", "short").is_err());
    }
}
