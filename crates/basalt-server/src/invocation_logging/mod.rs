//! Model invocation logging, as Bedrock's PutModelInvocationLoggingConfiguration
//! configures it: the Put/Get/Delete operations (the configuration is kept per
//! account (the caller's key's) and region in the data directory's database), the capture of every
//! runtime invocation ([`capture::capture`], a middleware around the runtime
//! routes), and delivery ([`delivery`], off the request path).

pub mod capture;
pub mod config;
pub mod delivery;
pub mod record;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::response::Response;
use basalt_objects::{ObjectError, ObjectStorage, S3Uri};
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_store::{Key, Store};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Caller;
use crate::edge::ApiError;
use crate::metrics::InvocationLogCounters;
use crate::runtime::json_body;
use crate::AppState;
use config::{Destinations, LoggingConfig, PutRequest};
use delivery::{Command, Entry, Writer};

const KIND: &str = "model-invocation-logging";
const VERSION: &str = "current";
/// How long shutdown waits for the last records to be written.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// The request ID the server answers with (`x-amzn-RequestId`), for the log record.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A configuration in force, with its validated destinations.
#[derive(Debug)]
pub struct Active {
    pub config: LoggingConfig,
    pub destinations: Destinations,
}

pub struct InvocationLogging {
    store: Arc<Store>,
    objects: ObjectStorage,
    /// By `<account>/<region>`; `None` caches "no configuration".
    active: RwLock<HashMap<String, Option<Arc<Active>>>>,
    tx: mpsc::Sender<Command>,
    counters: InvocationLogCounters,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("the logging configuration store failed: {0}")]
    Store(#[from] basalt_store::StoreError),
    #[error("the stored logging configuration is invalid: {0}")]
    Stored(String),
    #[error("the logging configuration cache was poisoned by a panic")]
    Poisoned,
}

impl From<LoggingError> for BedrockError {
    fn from(e: LoggingError) -> Self {
        BedrockError::internal(e.to_string())
    }
}

impl InvocationLogging {
    /// Starts the delivery task; call inside the Tokio runtime.
    pub fn start(
        store: Arc<Store>,
        objects: ObjectStorage,
        data_dir: &Path,
        counters: InvocationLogCounters,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(delivery::QUEUE_DEPTH);
        let writer = Writer {
            objects: objects.clone(),
            data_dir: data_dir.to_path_buf(),
            counters: counters.clone(),
        };
        tokio::spawn(writer.run(rx));
        Arc::new(Self {
            store,
            objects,
            active: RwLock::new(HashMap::new()),
            tx,
            counters,
        })
    }

    /// Where the configuration of `account` in `region` is kept (and cached).
    fn doc_id(account: &str, region: &str) -> String {
        format!("{account}/{region}")
    }

    fn stored(&self, account: &str, region: &str) -> Result<Option<LoggingConfig>, LoggingError> {
        let id = Self::doc_id(account, region);
        Ok(self.store.get(&Key {
            kind: KIND,
            id: &id,
            version: VERSION,
        })?)
    }

    fn load(&self, account: &str, region: &str) -> Result<Option<Arc<Active>>, LoggingError> {
        let id = Self::doc_id(account, region);
        if let Some(hit) = self
            .active
            .read()
            .map_err(|_| LoggingError::Poisoned)?
            .get(&id)
        {
            return Ok(hit.clone());
        }
        let active = match self.stored(account, region)? {
            Some(config) => {
                let destinations = config
                    .validate()
                    .map_err(|e| LoggingError::Stored(e.message))?;
                Some(Arc::new(Active {
                    config,
                    destinations,
                }))
            }
            None => None,
        };
        self.active
            .write()
            .map_err(|_| LoggingError::Poisoned)?
            .insert(id, active.clone());
        Ok(active)
    }

    /// The configuration `account` has in force for `region`, if any. A store failure is
    /// warned and counted, and the invocation goes unlogged rather than failing.
    pub fn active(&self, account: &str, region: &str) -> Option<Arc<Active>> {
        match self.load(account, region) {
            Ok(a) => a,
            Err(e) => {
                self.counters.failed("queue", 1);
                tracing::warn!(error = %e, "model invocation logging skipped a request");
                None
            }
        }
    }

    /// Queues one record without waiting; when the queue is full the record is dropped.
    pub fn submit(&self, active: &Active, invocation: &record::Invocation, with_bodies: bool) {
        let line = match serde_json::to_string(&invocation.record(with_bodies)) {
            Ok(l) => l,
            Err(e) => {
                self.counters.failed("queue", 1);
                tracing::warn!(error = %e, "could not serialise an invocation log record");
                return;
            }
        };
        let entry = Entry {
            at: invocation.timestamp,
            account: invocation.account_id.clone(),
            region: invocation.region.clone(),
            line,
            s3: active.destinations.s3.clone(),
            log_group: active.destinations.log_group.clone(),
        };
        if let Err(e) = self.tx.try_send(Command::Record(entry)) {
            self.counters.failed("queue", 1);
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "the delivery queue is full",
                mpsc::error::TrySendError::Closed(_) => "the delivery task has stopped",
            };
            tracing::warn!(
                request_id = %invocation.request_id,
                "dropped an invocation log record: {why}"
            );
        }
    }

    /// Writes out everything queued so far (at shutdown).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_err() {
            return;
        }
        if tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, wait)
            .await
            .is_err()
        {
            tracing::warn!("gave up waiting for the last invocation log records to be written");
        }
    }

    fn remember(
        &self,
        account: &str,
        region: &str,
        active: Option<Arc<Active>>,
    ) -> Result<(), LoggingError> {
        self.active
            .write()
            .map_err(|_| LoggingError::Poisoned)?
            .insert(Self::doc_id(account, region), active);
        Ok(())
    }

    /// Checks that a destination bucket exists and can be reached, as Bedrock does on Put.
    async fn check_bucket(
        &self,
        account: &str,
        bucket: &str,
        prefix: &str,
    ) -> Result<(), BedrockError> {
        let lead = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let probe = S3Uri {
            bucket: bucket.to_string(),
            key: format!("{lead}AWSLogs/{account}/BedrockModelInvocationLogs/basalt-probe"),
        };
        match self.objects.exists(&probe).await {
            Ok(_) => Ok(()),
            Err(ObjectError::InvalidUri(m)) => Err(BedrockError::validation(format!(
                "1 validation error detected: loggingConfig.s3Config: {m}"
            ))),
            Err(e) => Err(BedrockError::validation(format!(
                "1 validation error detected: loggingConfig.s3Config.bucketName: the log \
                 destination cannot be used: {e}"
            ))),
        }
    }
}

fn service(state: &AppState) -> Result<&Arc<InvocationLogging>, BedrockError> {
    state.invocation_logging.as_ref().ok_or_else(|| {
        BedrockError::new(
            ErrorCode::ServiceUnavailable,
            "Model invocation logging needs a data directory; this server was started without one.",
        )
    })
}

/// PutModelInvocationLoggingConfiguration: `PUT /logging/modelinvocations`.
pub async fn put_configuration(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let logging = service(&state)?;
    let req: PutRequest = from_json(&body)?;
    let config = req.logging_config.ok_or_else(|| {
        BedrockError::constraint("loggingConfig", "null", "Member must not be null")
    })?;
    let destinations = config.validate()?;
    if let Some((bucket, prefix)) = &destinations.s3 {
        logging
            .check_bucket(&caller.account, bucket, prefix)
            .await?;
    }
    let id = InvocationLogging::doc_id(&caller.account, &caller.region);
    logging
        .store
        .put(
            &Key {
                kind: KIND,
                id: &id,
                version: VERSION,
            },
            &config,
        )
        .map_err(LoggingError::from)
        .map_err(BedrockError::from)?;
    tracing::info!(
        region = %caller.region,
        s3 = destinations.s3.is_some(),
        cloudwatch = destinations.log_group.is_some(),
        "model invocation logging configured"
    );
    logging
        .remember(
            &caller.account,
            &caller.region,
            Some(Arc::new(Active {
                config,
                destinations,
            })),
        )
        .map_err(BedrockError::from)?;
    Ok(json_body(&json!({})))
}

/// GetModelInvocationLoggingConfiguration: `GET /logging/modelinvocations`.
pub async fn get_configuration(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let logging = service(&state)?;
    let stored = logging
        .stored(&caller.account, &caller.region)
        .map_err(BedrockError::from)?;
    Ok(json_body(&match stored {
        Some(config) => json!({ "loggingConfig": config }),
        None => json!({}),
    }))
}

/// DeleteModelInvocationLoggingConfiguration: `DELETE /logging/modelinvocations`.
/// Deleting when nothing is configured succeeds, as in Bedrock.
pub async fn delete_configuration(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let logging = service(&state)?;
    let id = InvocationLogging::doc_id(&caller.account, &caller.region);
    logging
        .store
        .delete(&Key {
            kind: KIND,
            id: &id,
            version: VERSION,
        })
        .map_err(LoggingError::from)
        .map_err(BedrockError::from)?;
    logging
        .remember(&caller.account, &caller.region, None)
        .map_err(BedrockError::from)?;
    tracing::info!(region = %caller.region, "model invocation logging deleted");
    Ok(json_body(&json!({})))
}
