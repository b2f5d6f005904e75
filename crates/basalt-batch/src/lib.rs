//! Batch inference, as Bedrock's model invocation jobs do it: a job reads JSONL
//! records from object storage, runs each through a model, and writes one output
//! line per record plus a manifest, under `<outputUri>/<jobId>/`.
//!
//! The crate owns the job's meaning (its document, statuses and validation), the
//! record format, and the runner that moves jobs through their statuses with every
//! record checkpointed in the store. It does not run models: the server hands it an
//! [`runner::Invoker`] backed by the engine. Async invoke (one input, run in the
//! background, its response written to object storage) shares the runner. Job
//! state sits behind [`store::JobStore`]: SQLite in the data directory, or
//! PostgreSQL for several nodes sharing one queue.

pub mod async_invoke;
pub mod job;
pub mod postgres;
pub mod records;
pub mod runner;
pub mod store;

pub use job::{CreateJobRequest, InvocationType, Job, JobStatus};
pub use records::{Manifest, RecordError};
pub use runner::{Invoked, Invoker, Runner, RunnerSettings};
pub use store::{JobStore, JobStoreError, SqliteJobs};
