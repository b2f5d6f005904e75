//! Where job state lives: job and async-invocation documents, the records of each
//! job (waiting, claimed under a lease, or finished with their output line) and the
//! idempotency tokens of the create calls.
//!
//! [`SqliteJobs`] keeps it in the data directory's database (one node).
//! [`crate::postgres::PgJobs`] keeps it in PostgreSQL, where several nodes share one
//! queue: records are claimed with `FOR UPDATE SKIP LOCKED`, so no two nodes run the
//! same record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use basalt_store::{Checkpoint, CheckpointTotals, Key, PendingRecords, Store, StoreError};
use futures::future::BoxFuture;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("{0}")]
    Sqlite(#[from] StoreError),
    /// The message never holds the connection string (it may hold a password).
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("a stored document is damaged: {0}")]
    Document(#[from] serde_json::Error),
}

pub type StoreResult<T> = Result<T, JobStoreError>;
pub type Pending<'a, T> = BoxFuture<'a, StoreResult<T>>;
/// A change to one document, applied while the store holds it locked.
pub type Change<'a> = Box<dyn FnOnce(&mut Value) + Send + 'a>;

/// Job state. Methods are async so that a networked database fits.
pub trait JobStore: Send + Sync + 'static {
    /// What and where the store is, for logs (never a password).
    fn describe(&self) -> String;

    /// Inserts or replaces a document; a new one lists after every existing one.
    fn put<'a>(&'a self, kind: &'a str, id: &'a str, doc: Value) -> Pending<'a, ()>;
    fn get<'a>(&'a self, kind: &'a str, id: &'a str) -> Pending<'a, Option<Value>>;
    /// Every document of a kind, in creation order.
    fn list<'a>(&'a self, kind: &'a str) -> Pending<'a, Vec<Value>>;
    /// Applies `change` atomically (no other node's update interleaves); the
    /// changed document, or None when there is none.
    fn update<'a>(
        &'a self,
        kind: &'a str,
        id: &'a str,
        change: Change<'a>,
    ) -> Pending<'a, Option<Value>>;

    /// Lists a file's records as waiting; idempotent.
    fn seed_records<'a>(&'a self, job: &'a str, file: u32, lines: Vec<u64>) -> Pending<'a, ()>;
    /// Claims up to `n` waiting records (none claimed, or their lease lapsed) for
    /// `node` for `lease`, in input order.
    fn claim_records<'a>(
        &'a self,
        job: &'a str,
        node: &'a str,
        n: usize,
        lease: Duration,
    ) -> Pending<'a, Vec<(u32, u64)>>;
    /// Extends the lease of every record `node` holds in `job`.
    fn renew_claims<'a>(&'a self, job: &'a str, node: &'a str, lease: Duration) -> Pending<'a, ()>;
    /// Saves finished records that `node` still holds; returns how many were saved.
    fn complete_records<'a>(
        &'a self,
        job: &'a str,
        node: &'a str,
        done: Vec<Checkpoint>,
    ) -> Pending<'a, usize>;
    /// Frees the claims `node` holds (at its start: left by its previous life).
    fn release_claims<'a>(&'a self, node: &'a str) -> Pending<'a, ()>;
    fn pending_records<'a>(&'a self, job: &'a str, node: &'a str) -> Pending<'a, PendingRecords>;
    /// Every finished record of a job, in input order.
    fn checkpoints<'a>(&'a self, job: &'a str) -> Pending<'a, Vec<Checkpoint>>;
    fn totals<'a>(&'a self, job: &'a str) -> Pending<'a, CheckpointTotals>;
    /// Removes every per-record row of a job that has ended (its outputs written, its
    /// counts kept in the job document); returns how many rows went.
    fn forget_records<'a>(&'a self, job: &'a str) -> Pending<'a, u64>;

    /// The first response to `token` on `operation`, with the request it answered.
    fn idempotent_response<'a>(
        &'a self,
        operation: &'a str,
        token: &'a str,
    ) -> Pending<'a, Option<(String, Value)>>;
    /// Keeps the first response to a token (a later one for the same token is ignored).
    fn remember_response<'a>(
        &'a self,
        operation: &'a str,
        token: &'a str,
        request: String,
        response: Value,
    ) -> Pending<'a, ()>;
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Job state in the data directory's SQLite database, for one node.
pub struct SqliteJobs {
    store: Arc<Store>,
    /// Makes read-modify-write of a document atomic (API calls race the runner).
    docs: Mutex<()>,
}

impl SqliteJobs {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            docs: Mutex::new(()),
        }
    }
}

/// Jobs have no versions; every document sits under this one.
const VERSION: &str = "";

fn key<'a>(kind: &'a str, id: &'a str) -> Key<'a> {
    Key {
        kind,
        id,
        version: VERSION,
    }
}

/// A finished future over a synchronous (local, sub-millisecond) SQLite call.
fn ready<'a, T: Send + 'a>(r: StoreResult<T>) -> Pending<'a, T> {
    Box::pin(std::future::ready(r))
}

impl JobStore for SqliteJobs {
    fn describe(&self) -> String {
        "SQLite in the data directory".into()
    }

    fn put<'a>(&'a self, kind: &'a str, id: &'a str, doc: Value) -> Pending<'a, ()> {
        ready(self.store.put(&key(kind, id), &doc).map_err(Into::into))
    }

    fn get<'a>(&'a self, kind: &'a str, id: &'a str) -> Pending<'a, Option<Value>> {
        ready(self.store.get(&key(kind, id)).map_err(Into::into))
    }

    fn list<'a>(&'a self, kind: &'a str) -> Pending<'a, Vec<Value>> {
        ready(
            self.store
                .list::<Value>(kind, VERSION)
                .map(|docs| docs.into_iter().map(|(_, d)| d).collect())
                .map_err(Into::into),
        )
    }

    fn update<'a>(
        &'a self,
        kind: &'a str,
        id: &'a str,
        change: Change<'a>,
    ) -> Pending<'a, Option<Value>> {
        let _held = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        let result = (|| {
            let Some(mut doc) = self.store.get::<Value>(&key(kind, id))? else {
                return Ok(None);
            };
            change(&mut doc);
            self.store.put(&key(kind, id), &doc)?;
            Ok(Some(doc))
        })();
        ready(result)
    }

    fn seed_records<'a>(&'a self, job: &'a str, file: u32, lines: Vec<u64>) -> Pending<'a, ()> {
        ready(
            self.store
                .seed_records(job, file, &lines)
                .map_err(Into::into),
        )
    }

    fn claim_records<'a>(
        &'a self,
        job: &'a str,
        node: &'a str,
        n: usize,
        lease: Duration,
    ) -> Pending<'a, Vec<(u32, u64)>> {
        let now = now_ms();
        ready(
            self.store
                .claim_records(job, node, n, now, now.saturating_add(millis(lease)))
                .map_err(Into::into),
        )
    }

    fn renew_claims<'a>(&'a self, job: &'a str, node: &'a str, lease: Duration) -> Pending<'a, ()> {
        let until = now_ms().saturating_add(millis(lease));
        ready(
            self.store
                .renew_claims(job, node, until)
                .map_err(Into::into),
        )
    }

    fn complete_records<'a>(
        &'a self,
        job: &'a str,
        node: &'a str,
        done: Vec<Checkpoint>,
    ) -> Pending<'a, usize> {
        ready(
            self.store
                .complete_records(job, node, &done)
                .map_err(Into::into),
        )
    }

    fn release_claims<'a>(&'a self, _node: &'a str) -> Pending<'a, ()> {
        // One process per data directory: every claim left is a dead process's.
        ready(
            self.store
                .release_all_claims()
                .map(|_| ())
                .map_err(Into::into),
        )
    }

    fn pending_records<'a>(&'a self, job: &'a str, node: &'a str) -> Pending<'a, PendingRecords> {
        ready(
            self.store
                .pending_records(job, node, now_ms())
                .map_err(Into::into),
        )
    }

    fn checkpoints<'a>(&'a self, job: &'a str) -> Pending<'a, Vec<Checkpoint>> {
        ready(self.store.checkpoints(job).map_err(Into::into))
    }

    fn totals<'a>(&'a self, job: &'a str) -> Pending<'a, CheckpointTotals> {
        ready(self.store.checkpoint_totals(job).map_err(Into::into))
    }

    fn forget_records<'a>(&'a self, job: &'a str) -> Pending<'a, u64> {
        ready(
            self.store
                .delete_checkpoints(job)
                .map(|n| n as u64)
                .map_err(Into::into),
        )
    }

    fn idempotent_response<'a>(
        &'a self,
        operation: &'a str,
        token: &'a str,
    ) -> Pending<'a, Option<(String, Value)>> {
        ready(
            self.store
                .idempotent_response(operation, token)
                .map_err(Into::into),
        )
    }

    fn remember_response<'a>(
        &'a self,
        operation: &'a str,
        token: &'a str,
        request: String,
        response: Value,
    ) -> Pending<'a, ()> {
        ready(
            self.store
                .remember_response(operation, token, &request, &response)
                .map_err(Into::into),
        )
    }
}
