//! The vector store behind one knowledge base: the embedded index in the data
//! directory, or PostgreSQL with pgvector (`storageConfiguration.type = RDS`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use basalt_index::{Chunk, EmbeddedIndex, Hit, IndexError, SearchRequest};
use basalt_pgvector::{PgVectorStore, RdsMapping};
use basalt_proto::BedrockError;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::ingestion::index_dir;
use crate::resources::{KnowledgeBase, RdsConfiguration, Storage};

/// How `rdsConfiguration` reaches a database: each `resourceArn` names a server
/// (libpq `host=... port=...`), each `credentialsSecretArn` a user and password,
/// as Secrets Manager holds them for RDS.
#[derive(Clone, Default)]
pub struct RdsConnections {
    clusters: HashMap<String, String>,
    secrets: HashMap<String, Secret>,
}

#[derive(Clone, Deserialize)]
struct Secret {
    username: String,
    password: String,
}

impl fmt::Debug for RdsConnections {
    // Passwords stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdsConnections")
            .field("clusters", &self.clusters)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A libpq connection-string value, quoted.
fn libpq_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl RdsConnections {
    /// From `BASALT_RDS_CLUSTERS` (`{"<resourceArn>": "host=... port=..."}`) and
    /// `BASALT_SECRETS` (`{"<secretArn>": {"username": ..., "password": ...}}`).
    pub fn parse(clusters: Option<&str>, secrets: Option<&str>) -> Result<Self, String> {
        let clusters = match clusters {
            Some(s) => serde_json::from_str(s)
                .map_err(|e| format!("BASALT_RDS_CLUSTERS is not a JSON object of strings: {e}"))?,
            None => HashMap::new(),
        };
        let secrets = match secrets {
            Some(s) => serde_json::from_str(s).map_err(|e| {
                format!("BASALT_SECRETS is not a JSON object of {{username, password}}: {e}")
            })?,
            None => HashMap::new(),
        };
        Ok(Self { clusters, secrets })
    }

    /// The connection string for `config`, or a ValidationException that says what
    /// to configure.
    pub fn connection_string(&self, config: &RdsConfiguration) -> Result<String, BedrockError> {
        let server = self.clusters.get(&config.resource_arn).ok_or_else(|| {
            BedrockError::validation(format!(
                "storageConfiguration.rdsConfiguration.resourceArn {} is not a database this server knows; \
                 add it to BASALT_RDS_CLUSTERS.",
                config.resource_arn
            ))
        })?;
        let secret = self.secrets.get(&config.credentials_secret_arn).ok_or_else(|| {
            BedrockError::validation(format!(
                "storageConfiguration.rdsConfiguration.credentialsSecretArn {} is not a secret this server knows; \
                 add it to BASALT_SECRETS.",
                config.credentials_secret_arn
            ))
        })?;
        Ok(format!(
            "{server} user={} password={} dbname={}",
            libpq_value(&secret.username),
            libpq_value(&secret.password),
            libpq_value(&config.database_name)
        ))
    }
}

/// The table and columns of an `rdsConfiguration`.
pub fn rds_mapping(config: &RdsConfiguration) -> Result<RdsMapping, BedrockError> {
    serde_json::from_value(json!({
        "tableName": config.table_name,
        "fieldMapping": config.field_mapping,
    }))
    .map_err(|e| BedrockError::validation(format!("storageConfiguration.rdsConfiguration: {e}")))
}

/// The open vector store of each knowledge base, opened on first use.
pub struct VectorStores {
    data_dir: PathBuf,
    rds: RdsConnections,
    open: Mutex<HashMap<String, VectorStore>>,
}

impl VectorStores {
    pub fn new(data_dir: &Path, rds: RdsConnections) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            rds,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Checks, before a knowledge base is created, that its storage can be reached
    /// through this server's configuration.
    pub fn check(&self, storage: &Storage) -> Result<(), BedrockError> {
        match storage {
            Storage::Embedded => Ok(()),
            Storage::Rds(c) => {
                self.rds.connection_string(c)?;
                rds_mapping(c).map(|_| ())
            }
        }
    }

    pub async fn open(
        &self,
        kb: &KnowledgeBase,
        dimensions: usize,
    ) -> Result<VectorStore, BedrockError> {
        let mut open = self.open.lock().await;
        if let Some(store) = open.get(&kb.knowledge_base_id) {
            return Ok(store.clone());
        }
        let store = match kb.storage()? {
            Storage::Embedded => {
                let dir = index_dir(&self.data_dir, &kb.knowledge_base_id);
                let opened = tokio::task::spawn_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    EmbeddedIndex::open(&dir, dimensions)
                })
                .await
                .map_err(|e| BedrockError::internal(format!("the index task failed: {e}")))?;
                VectorStore::Embedded(Arc::new(opened.map_err(|e| {
                    BedrockError::internal(format!(
                        "Cannot open the index of {}: {e}",
                        kb.knowledge_base_id
                    ))
                })?))
            }
            Storage::Rds(config) => {
                let conn = self.rds.connection_string(&config)?;
                let store = PgVectorStore::connect(&conn, rds_mapping(&config)?, dimensions)
                    .await
                    .map_err(|e| {
                        BedrockError::validation(format!(
                            "The vector database {} ({}) is not usable: {e}",
                            config.resource_arn, config.table_name
                        ))
                    })?;
                VectorStore::Postgres(Arc::new(store))
            }
        };
        open.insert(kb.knowledge_base_id.clone(), store.clone());
        Ok(store)
    }

    /// Forgets a deleted knowledge base and removes its embedded index. An RDS table
    /// is the user's, and stays.
    pub async fn remove(&self, knowledge_base_id: &str) {
        self.open.lock().await.remove(knowledge_base_id);
        let dir = index_dir(&self.data_dir, knowledge_base_id);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

#[derive(Clone)]
pub enum VectorStore {
    Embedded(Arc<EmbeddedIndex>),
    Postgres(Arc<PgVectorStore>),
}

impl VectorStore {
    /// Replaces the chunks of each document, all in one commit.
    pub async fn upsert_documents(
        &self,
        documents: Vec<(String, Vec<Chunk>)>,
    ) -> Result<(), IndexError> {
        if documents.is_empty() {
            return Ok(());
        }
        match self {
            Self::Embedded(index) => {
                let index = Arc::clone(index);
                blocking(move || index.upsert_documents(documents)).await
            }
            Self::Postgres(pg) => pg.upsert_documents(documents).await,
        }
    }

    pub async fn delete_document(&self, document_id: String) -> Result<(), IndexError> {
        match self {
            Self::Embedded(index) => {
                let index = Arc::clone(index);
                blocking(move || index.delete_document(&document_id).map(|_| ())).await
            }
            Self::Postgres(pg) => pg.delete_document(&document_id).await.map(|_| ()),
        }
    }

    pub async fn search(&self, request: SearchRequest) -> Result<Vec<Hit>, IndexError> {
        match self {
            Self::Embedded(index) => {
                let index = Arc::clone(index);
                blocking(move || index.search(&request)).await
            }
            Self::Postgres(pg) => pg.search(&request).await,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IndexError> + Send + 'static,
) -> Result<T, IndexError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IndexError::Backend(format!("the index task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rds() -> RdsConfiguration {
        RdsConfiguration {
            resource_arn: "arn:aws:rds:us-east-1:123456789012:cluster:kb".into(),
            credentials_secret_arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:kb"
                .into(),
            database_name: "postgres".into(),
            table_name: "bedrock_integration.kb".into(),
            field_mapping: json!({"primaryKeyField": "id", "vectorField": "embedding",
                "textField": "chunks", "metadataField": "metadata"}),
        }
    }

    #[test]
    fn connection_strings_come_from_the_configuration() {
        let c = RdsConnections::parse(
            Some(r#"{"arn:aws:rds:us-east-1:123456789012:cluster:kb": "host=127.0.0.1 port=5433"}"#),
            Some(r#"{"arn:aws:secretsmanager:us-east-1:123456789012:secret:kb": {"username": "u", "password": "p'q"}}"#),
        )
        .expect("parses");
        assert_eq!(
            c.connection_string(&rds()).expect("known"),
            r"host=127.0.0.1 port=5433 user='u' password='p\'q' dbname='postgres'"
        );
        assert!(!format!("{c:?}").contains("p'q"), "no password in Debug");
        let e = RdsConnections::default()
            .connection_string(&rds())
            .expect_err("unknown");
        assert!(e.message.contains("BASALT_RDS_CLUSTERS"));
        assert_eq!(rds_mapping(&rds()).expect("maps").vector_field, "embedding");
    }
}
