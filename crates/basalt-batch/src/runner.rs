//! Runs model invocation jobs in submission order through their statuses:
//! Submitted → Validating → Scheduled → InProgress → Completed, PartiallyCompleted
//! or Failed; Stopping → Stopped; or Expired past the timeout.
//!
//! Validation lists every record of a job as waiting in the [`JobStore`]. A node
//! then claims groups of them under a lease it renews while the group runs, and
//! saves each group's output lines in one step. Several nodes on one shared store
//! work through the same job this way; a node killed at any point leaves its
//! claims to lapse (or frees them itself when it restarts), and a record is saved
//! once, so each appears in the output exactly once. When no record is left, one
//! node takes the job's lease and writes the outputs and the manifest.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use basalt_objects::{ObjectError, ObjectStorage, S3Uri};
use basalt_store::Checkpoint;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::async_invoke::{AsyncInvocation, AsyncStatus};
use crate::job::{under, InputFile, InvocationType, Job, JobStatus, Lease};
use crate::records::{self, InputRecord, Manifest, RecordError};
use crate::store::{now_ms, JobStore, JobStoreError};

const KIND: &str = "model-invocation-job";
const ASYNC_KIND: &str = "async-invoke";
/// Records in one job (Bedrock's default quota).
pub const MAX_RECORDS_PER_JOB: u64 = 50_000;
/// Input files under one prefix.
pub const MAX_INPUT_FILES: usize = 1_000;
/// The manifest's object name, beside the outputs.
pub const MANIFEST_NAME: &str = "manifest.json.out";
/// The file in the data directory that names this node.
const NODE_FILE: &str = "batch-node-id";

/// A record's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Invoked {
    pub output: Value,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Runs records through a model: the engine, in the server.
pub trait Invoker: Send + Sync + 'static {
    /// Records handed over at once: many for an embedding model (one forward pass
    /// serves them all), few for generation (so online requests keep free slots).
    fn chunk_size(&self, model_id: &str) -> usize;

    /// Runs a chunk of records of one model; results come back in input order.
    fn invoke_many(
        &self,
        model_id: &str,
        kind: InvocationType,
        inputs: Vec<Value>,
    ) -> impl Future<Output = Vec<Result<Invoked, RecordError>>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the job store failed: {0}")]
    Store(#[from] JobStoreError),
    #[error("no model invocation job has the ID {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<serde_json::Error> for BatchError {
    fn from(e: serde_json::Error) -> Self {
        Self::Store(JobStoreError::Document(e))
    }
}

/// Why a job ended early, for its final status and message.
enum Ending {
    Stopped,
    Expired,
    Failed(String),
}

/// What one pass over a job came to.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// The job reached its final status (or had already).
    Ended,
    /// Other nodes hold its remaining records or its lease: look again later.
    Waiting,
}

/// How this node takes part in the shared queue.
#[derive(Clone, Debug)]
pub struct RunnerSettings {
    /// This node's name in claims and leases; stable across restarts, so a restarted
    /// node frees what it held at once.
    pub node: String,
    /// How long a claim holds without renewal (renewed every third of it).
    pub lease: Duration,
    /// How often to look for work created or freed by other nodes.
    pub poll: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            node: format!("node-{}", crate::job::new_job_id()),
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        }
    }
}

/// This node's name, kept in `<data-dir>/batch-node-id` (made on first use).
pub fn node_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(NODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => write_node_id(&path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_node_id(&path),
        Err(e) => Err(e),
    }
}

fn write_node_id(path: &Path) -> std::io::Result<String> {
    let id = format!("node-{}", crate::job::new_job_id());
    std::fs::write(path, format!("{id}\n"))?;
    Ok(id)
}

pub struct Runner<I> {
    store: Arc<dyn JobStore>,
    objects: ObjectStorage,
    invoker: I,
    settings: RunnerSettings,
    wake: Notify,
    async_wake: Notify,
}

/// One job as stored (readable from another process, e.g. the CLI, while a server runs).
pub async fn stored_job(store: &dyn JobStore, id: &str) -> Result<Option<Job>, BatchError> {
    Ok(store
        .get(KIND, id)
        .await?
        .map(serde_json::from_value)
        .transpose()?)
}

/// Every stored job, in submission order.
pub async fn stored_jobs(store: &dyn JobStore) -> Result<Vec<Job>, BatchError> {
    Ok(store
        .list(KIND)
        .await?
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()?)
}

fn object_message(e: &ObjectError) -> String {
    e.to_string()
}

/// Why `job` must end now, if it must.
fn ending_of(job: &Job) -> Option<Ending> {
    if job.status == JobStatus::Stopping {
        Some(Ending::Stopped)
    } else if let Some(m) = &job.failure {
        Some(Ending::Failed(m.clone()))
    } else if job.expired(OffsetDateTime::now_utc()) {
        Some(Ending::Expired)
    } else {
        None
    }
}

/// Runs `work`, calling `renew` every `every` until it is done.
async fn renewing<T, R: Future<Output = ()>>(
    work: impl Future<Output = T>,
    every: Duration,
    renew: impl Fn() -> R,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => renew().await,
        }
    }
}

impl<I: Invoker> Runner<I> {
    pub fn new(store: Arc<dyn JobStore>, objects: ObjectStorage, invoker: I) -> Arc<Self> {
        Self::with_settings(store, objects, invoker, RunnerSettings::default())
    }

    pub fn with_settings(
        store: Arc<dyn JobStore>,
        objects: ObjectStorage,
        invoker: I,
        settings: RunnerSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            objects,
            invoker,
            settings,
            wake: Notify::new(),
            async_wake: Notify::new(),
        })
    }

    /// The store jobs live in (the server keeps the create calls' tokens there too).
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn invoker(&self) -> &I {
        &self.invoker
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }

    fn renew_every(&self) -> Duration {
        (self.settings.lease / 3).max(Duration::from_millis(10))
    }

    fn lease(&self) -> Lease {
        Lease {
            node: self.settings.node.clone(),
            until: now_ms().saturating_add(crate::store::millis(self.settings.lease)),
        }
    }

    /// Starts the loops that run jobs and async invocations. Work left unfinished
    /// by an earlier process, or freed by another node, is picked up.
    pub fn spawn(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.serve().await });
        // Async invocations run beside jobs, so one never waits behind a long job.
        let this = Arc::clone(self);
        tokio::spawn(async move { this.serve_async().await });
    }

    /// Waits for a wake-up, or for the poll interval (other nodes don't wake us).
    async fn idle(&self, wake: &Notify) {
        let _ = tokio::time::timeout(self.settings.poll, wake.notified()).await;
    }

    /// Stores a new async invocation and wakes its loop.
    pub async fn submit_async(&self, invocation: &AsyncInvocation) -> Result<(), BatchError> {
        self.store
            .put(
                ASYNC_KIND,
                invocation.id(),
                serde_json::to_value(invocation)?,
            )
            .await?;
        self.async_wake.notify_one();
        Ok(())
    }

    pub async fn get_async(&self, id: &str) -> Result<Option<AsyncInvocation>, BatchError> {
        Ok(self
            .store
            .get(ASYNC_KIND, id)
            .await?
            .map(serde_json::from_value)
            .transpose()?)
    }

    /// Every async invocation, in submission order.
    pub async fn list_async(&self) -> Result<Vec<AsyncInvocation>, BatchError> {
        Ok(self
            .store
            .list(ASYNC_KIND)
            .await?
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()?)
    }

    async fn serve_async(self: Arc<Self>) {
        loop {
            let waiting = match self.list_async().await {
                Ok(all) => all
                    .into_iter()
                    .filter(|i| i.status == AsyncStatus::InProgress)
                    .collect(),
                Err(e) => {
                    tracing::error!(error = %e, "async invoke runner cannot read its invocations");
                    Vec::new()
                }
            };
            let mut ran = false;
            for invocation in waiting {
                match self.take_async(invocation.id()).await {
                    Ok(Some(mine)) => {
                        if let Err(e) = self.run_async(mine).await {
                            tracing::error!(error = %e, "async invocation could not be recorded");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        ran = true;
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "async invocation could not be claimed")
                    }
                }
            }
            if !ran {
                self.idle(&self.async_wake).await;
            }
        }
    }

    /// Takes an invocation's lease, unless another live node holds it.
    async fn take_async(&self, id: &str) -> Result<Option<AsyncInvocation>, BatchError> {
        let node = self.settings.node.clone();
        let lease = self.lease();
        let mut taken = false;
        let doc = self
            .store
            .update(
                ASYNC_KIND,
                id,
                Box::new(|doc: &mut Value| {
                    let Ok(mut inv) = serde_json::from_value::<AsyncInvocation>(doc.clone()) else {
                        return;
                    };
                    if inv.status == AsyncStatus::InProgress
                        && Lease::open_to(inv.lease.as_ref(), &node, now_ms())
                    {
                        inv.lease = Some(lease);
                        taken = true;
                        if let Ok(v) = serde_json::to_value(&inv) {
                            *doc = v;
                        }
                    }
                }),
            )
            .await?;
        Ok(match doc {
            Some(doc) if taken => Some(serde_json::from_value(doc)?),
            _ => None,
        })
    }

    /// Runs one invocation and writes its response; a restart mid-way runs it again
    /// and overwrites the same object, so it is written once in effect.
    async fn run_async(&self, mut invocation: AsyncInvocation) -> Result<(), BatchError> {
        let id = invocation.id().to_string();
        let work = self.invoker.invoke_many(
            &invocation.model_id,
            InvocationType::InvokeModel,
            vec![invocation.model_input.clone()],
        );
        let result = renewing(work, self.renew_every(), || async {
            let lease = self.lease();
            let renewed = self
                .store
                .update(
                    ASYNC_KIND,
                    &id,
                    Box::new(move |doc: &mut Value| {
                        if let Some(slot) = doc.get_mut("_lease") {
                            *slot = serde_json::to_value(&lease).unwrap_or(Value::Null);
                        }
                    }),
                )
                .await;
            if let Err(e) = renewed {
                tracing::warn!(error = %e, "async invocation lease not renewed");
            }
        })
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(RecordError::invalid("The model returned no result.")));
        let failure = match result {
            Err(e) => Some(e.message),
            Ok(done) => {
                let body = serde_json::to_vec(&done.output).unwrap_or_default();
                match S3Uri::parse(&invocation.output) {
                    Ok(target) => self.objects.put(&target, body.into()).await.err().map(|e| {
                        format!(
                            "The output {target} could not be written: {}",
                            object_message(&e)
                        )
                    }),
                    Err(e) => Some(e.to_string()),
                }
            }
        };
        tracing::info!(invocation = %id, node = %self.settings.node, failed = failure.is_some(), "async invocation finished");
        invocation.finish(failure, OffsetDateTime::now_utc());
        self.store
            .put(ASYNC_KIND, &id, serde_json::to_value(&invocation)?)
            .await?;
        Ok(())
    }

    /// Stores a new job and wakes the runner.
    pub async fn submit(&self, job: &Job) -> Result<(), BatchError> {
        self.store
            .put(KIND, job.id(), serde_json::to_value(job)?)
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, BatchError> {
        stored_job(self.store.as_ref(), id).await
    }

    /// Every job, in submission order.
    pub async fn list(&self) -> Result<Vec<Job>, BatchError> {
        stored_jobs(self.store.as_ref()).await
    }

    /// Applies `change` to the stored job, atomically across nodes.
    async fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut Job) + Send,
    ) -> Result<Job, BatchError> {
        let mut damaged = None;
        let doc = self
            .store
            .update(
                KIND,
                id,
                Box::new(
                    |doc: &mut Value| match serde_json::from_value::<Job>(doc.clone()) {
                        Ok(mut job) => {
                            change(&mut job);
                            match serde_json::to_value(&job) {
                                Ok(v) => *doc = v,
                                Err(e) => damaged = Some(e),
                            }
                        }
                        Err(e) => damaged = Some(e),
                    },
                ),
            )
            .await?;
        if let Some(e) = damaged {
            return Err(e.into());
        }
        let doc = doc.ok_or_else(|| BatchError::NotFound(id.to_string()))?;
        Ok(serde_json::from_value(doc)?)
    }

    /// StopModelInvocationJob: a job not yet running stops at once; a running one
    /// goes to Stopping, and a runner writes what it has and marks it Stopped.
    pub async fn stop(&self, id: &str) -> Result<Job, BatchError> {
        let mut refused = None;
        let job = self
            .update(id, |job| {
                let now = OffsetDateTime::now_utc();
                match job.status {
                    JobStatus::Submitted | JobStatus::Validating | JobStatus::Scheduled => {
                        job.set_status(JobStatus::Stopped, now);
                        job.message = Some("The job was stopped before it started.".into());
                        job.lease = None;
                    }
                    JobStatus::InProgress => job.set_status(JobStatus::Stopping, now),
                    JobStatus::Stopping => {}
                    done => refused = Some(done),
                }
            })
            .await?;
        if let Some(status) = refused {
            return Err(BatchError::Conflict(format!(
                "The job {id} is {}; only a job that has not finished can be stopped.",
                status.as_str()
            )));
        }
        if job.status == JobStatus::Stopped {
            // Stopped before it ran: nothing will write outputs from its rows.
            if let Err(e) = self.store.forget_records(id).await {
                tracing::warn!(job = %id, error = %e, "a stopped job's records were not removed");
            }
        }
        self.wake.notify_one();
        Ok(job)
    }

    async fn serve(self: Arc<Self>) {
        tracing::info!(node = %self.settings.node, store = %self.store.describe(), "batch runner started");
        if let Err(e) = self.store.release_claims(&self.settings.node).await {
            tracing::error!(error = %e, "batch runner could not free its earlier claims");
        }
        self.forget_ended_records().await;
        loop {
            self.validate_waiting().await;
            let mut ended = false;
            match self.list().await {
                Ok(jobs) => {
                    for job in jobs.into_iter().filter(|j| {
                        matches!(
                            j.status,
                            JobStatus::Scheduled | JobStatus::InProgress | JobStatus::Stopping
                        )
                    }) {
                        match self.execute(job).await {
                            Ok(Pass::Ended) => {
                                ended = true;
                                break;
                            }
                            Ok(Pass::Waiting) => {}
                            Err(e) => {
                                tracing::error!(error = %e, "batch job could not be recorded");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "batch runner cannot read its jobs"),
            }
            if !ended {
                self.idle(&self.wake).await;
            }
        }
    }

    /// Removes the per-record rows of jobs that ended (a process that died between
    /// ending a job and removing them, or jobs that ended before rows were removed).
    async fn forget_ended_records(&self) {
        let Ok(jobs) = self.list().await else { return };
        for job in jobs.iter().filter(|j| j.status.is_terminal()) {
            if let Err(e) = self.store.forget_records(job.id()).await {
                tracing::warn!(job = %job.id(), error = %e, "an ended job's records were not removed");
            }
        }
    }

    /// Validates every job waiting for it; cheap, so it also runs between chunks.
    async fn validate_waiting(&self) {
        let Ok(jobs) = self.list().await else { return };
        for job in jobs {
            if matches!(job.status, JobStatus::Submitted | JobStatus::Validating) {
                if let Err(e) = self.validate(job).await {
                    tracing::error!(error = %e, "batch job could not be recorded");
                }
            }
        }
    }

    /// Renews this node's lease on a job's exclusive step (validation, output).
    async fn renew_job_lease(&self, id: &str) {
        let node = self.settings.node.clone();
        let lease = self.lease();
        let renewed = self
            .update(id, move |j| {
                if j.lease.as_ref().is_some_and(|l| l.node == node) {
                    j.lease = Some(lease);
                }
            })
            .await;
        if let Err(e) = renewed {
            tracing::warn!(job = %id, error = %e, "batch job lease not renewed");
        }
    }

    /// Finds the input files and counts their records, lists the records as
    /// waiting, then schedules the job, or fails it with a message that says what to
    /// fix. One node validates a job (it holds the job's lease meanwhile).
    async fn validate(&self, job: Job) -> Result<(), BatchError> {
        let id = job.id().to_string();
        let node = self.settings.node.clone();
        let lease = self.lease();
        let mut mine = false;
        let job = self
            .update(&id, |j| {
                let open = Lease::open_to(j.lease.as_ref(), &node, now_ms());
                if j.status == JobStatus::Submitted || (j.status == JobStatus::Validating && open) {
                    j.set_status(JobStatus::Validating, OffsetDateTime::now_utc());
                    j.lease = Some(lease);
                    mine = true;
                }
            })
            .await?;
        if !mine {
            return Ok(());
        }
        let checked = renewing(self.check_inputs(&job), self.renew_every(), || {
            self.renew_job_lease(&id)
        })
        .await;
        let checked = match checked {
            Ok(files) => self.seed(&id, files).await.map(Some)?,
            Err(message) => {
                // Records are not listed for a job that failed validation.
                tracing::info!(job = %id, "batch job failed validation");
                self.update(&id, |j| {
                    if j.status == JobStatus::Validating {
                        j.message = Some(message);
                        j.set_status(JobStatus::Failed, OffsetDateTime::now_utc());
                    }
                    j.lease = None;
                })
                .await?;
                None
            }
        };
        if let Some(inputs) = checked {
            self.update(&id, |j| {
                j.lease = None;
                // A stop that came in meanwhile wins.
                if j.status != JobStatus::Validating {
                    return;
                }
                let total = inputs.iter().map(|f| f.records).sum();
                j.total_record_count = Some(total);
                j.processed_record_count = Some(0);
                j.success_record_count = Some(0);
                j.error_record_count = Some(0);
                j.inputs = inputs;
                j.seeded = true;
                j.set_status(JobStatus::Scheduled, OffsetDateTime::now_utc());
            })
            .await?;
        }
        Ok(())
    }

    /// Lists each file's records as waiting.
    async fn seed(
        &self,
        id: &str,
        files: Vec<(InputFile, Vec<u64>)>,
    ) -> Result<Vec<InputFile>, BatchError> {
        let mut inputs = Vec::with_capacity(files.len());
        for (index, (file, lines)) in files.into_iter().enumerate() {
            self.store.seed_records(id, index as u32, lines).await?;
            inputs.push(file);
        }
        Ok(inputs)
    }

    async fn check_inputs(&self, job: &Job) -> Result<Vec<(InputFile, Vec<u64>)>, String> {
        let uri = job.input_uri().unwrap_or_default();
        let input = S3Uri::parse(uri).map_err(|e| e.to_string())?;
        let keys: Vec<S3Uri> = if input.key.is_empty() || input.key.ends_with('/') {
            let listed = self.objects.list(&input).await.map_err(|e| {
                format!(
                    "The input location {uri} could not be listed: {}",
                    object_message(&e)
                )
            })?;
            let files: Vec<S3Uri> = listed
                .into_iter()
                .map(|m| m.uri)
                .filter(|u| u.key.ends_with(".jsonl"))
                .collect();
            if files.is_empty() {
                return Err(format!(
                    "No .jsonl input files were found under {uri}. Upload JSONL records there and create the job again."
                ));
            }
            if files.len() > MAX_INPUT_FILES {
                return Err(format!(
                    "{uri} holds {} input files; a job reads at most {MAX_INPUT_FILES}.",
                    files.len()
                ));
            }
            files
        } else {
            vec![input]
        };
        let mut inputs = Vec::with_capacity(keys.len());
        let mut total = 0u64;
        for file in keys {
            let bytes = self.objects.get(&file).await.map_err(|e| {
                format!(
                    "The input file {file} could not be read: {}",
                    object_message(&e)
                )
            })?;
            let lines: Vec<u64> = records::parse(&bytes).iter().map(|r| r.line).collect();
            let records = lines.len() as u64;
            total += records;
            if total > MAX_RECORDS_PER_JOB {
                return Err(format!(
                    "The input holds more than {MAX_RECORDS_PER_JOB} records, the most one job may run. Split it into several jobs."
                ));
            }
            inputs.push((
                InputFile {
                    output_name: records::output_name(&file.key),
                    uri: file.to_string(),
                    records,
                },
                lines,
            ));
        }
        if total == 0 {
            return Err(format!(
                "The input at {uri} holds no records. Each line must be a JSON object with recordId and modelInput."
            ));
        }
        let output = S3Uri::parse(&job.output_prefix).map_err(|e| e.to_string())?;
        self.objects.list(&output).await.map_err(|e| {
            format!(
                "The output location {} can't be written: {}",
                job.output_prefix,
                object_message(&e)
            )
        })?;
        Ok(inputs)
    }

    /// Works on a scheduled (or interrupted) job: runs the records this node can
    /// claim, then, once none is left, ends the job unless another node does.
    async fn execute(&self, job: Job) -> Result<Pass, BatchError> {
        let id = job.id().to_string();
        let job = self
            .update(&id, |j| {
                if j.status == JobStatus::Scheduled {
                    j.set_status(JobStatus::InProgress, OffsetDateTime::now_utc());
                }
            })
            .await?;
        if job.status.is_terminal() {
            return Ok(Pass::Ended);
        }
        if !job.seeded {
            self.seed_unlisted(&job).await?;
        }
        tracing::debug!(job = %id, node = %self.settings.node, "batch job pass");
        let ending = match ending_of(&job) {
            Some(ending) => Some(ending),
            None => self.run_records(&job).await?,
        };
        let left = self.store.pending_records(&id, &self.settings.node).await?;
        // Not done: others still run records. Ending early: wait for the groups
        // in flight on other nodes (or their leases) before writing what was done.
        let busy = match ending {
            None => left.pending > 0,
            Some(_) => left.held_by_others > 0,
        };
        if busy || !self.take_output_lease(&id).await? {
            return Ok(Pass::Waiting);
        }
        let ending = match ending {
            Some(e) => Some(e),
            // Re-read: a stop or a failure may have come in meanwhile.
            None => self.get(&id).await?.as_ref().and_then(ending_of),
        };
        renewing(self.finish(&id, ending), self.renew_every(), || {
            self.renew_job_lease(&id)
        })
        .await?;
        Ok(Pass::Ended)
    }

    /// Takes the right to end the job and write its outputs; one node gets it.
    async fn take_output_lease(&self, id: &str) -> Result<bool, BatchError> {
        let node = self.settings.node.clone();
        let lease = self.lease();
        let mut taken = false;
        self.update(id, |j| {
            if !j.status.is_terminal() && Lease::open_to(j.lease.as_ref(), &node, now_ms()) {
                j.lease = Some(lease);
                taken = true;
            }
        })
        .await?;
        Ok(taken)
    }

    /// Lists the records of a job validated before records were listed (it
    /// resumes after an upgrade); lines already finished are skipped.
    async fn seed_unlisted(&self, job: &Job) -> Result<(), BatchError> {
        let id = job.id();
        for (index, file) in job.inputs.iter().enumerate() {
            match self.read_input(file).await {
                Ok(parsed) => {
                    let lines = parsed.iter().map(|r| r.line).collect();
                    self.store.seed_records(id, index as u32, lines).await?;
                }
                Err(m) => {
                    self.fail(id, m).await?;
                    return Ok(());
                }
            }
        }
        self.update(id, |j| j.seeded = true).await?;
        Ok(())
    }

    async fn read_input(&self, file: &InputFile) -> Result<Vec<InputRecord>, String> {
        let bytes = match S3Uri::parse(&file.uri) {
            Ok(uri) => self.objects.get(&uri).await.map_err(|e| object_message(&e)),
            Err(e) => Err(e.to_string()),
        };
        match bytes {
            Ok(b) => Ok(records::parse(&b)),
            Err(m) => Err(format!(
                "The input file {} could not be read: {m}",
                file.uri
            )),
        }
    }

    /// Marks the job to fail (every node sees it) and frees this node's claims.
    async fn fail(&self, id: &str, message: String) -> Result<(), BatchError> {
        tracing::warn!(job = %id, %message, "batch job fails");
        self.update(id, |j| {
            j.failure.get_or_insert(message);
        })
        .await?;
        self.store.release_claims(&self.settings.node).await?;
        Ok(())
    }

    /// Claims and runs groups of records until none is left to claim. Returns why
    /// the job must end early, if it must.
    async fn run_records(&self, job: &Job) -> Result<Option<Ending>, BatchError> {
        let id = job.id();
        let node = &self.settings.node;
        let chunk = self.invoker.chunk_size(&job.model_id).max(1);
        // The parsed input file in use (claims come in input order).
        let mut cached: Option<(u32, Vec<InputRecord>)> = None;
        let mut ran_here = 0usize;
        let result = loop {
            let current = self
                .get(id)
                .await?
                .ok_or_else(|| BatchError::NotFound(id.into()))?;
            if let Some(ending) = ending_of(&current) {
                break Some(ending);
            }
            let claimed = self
                .store
                .claim_records(id, node, chunk, self.settings.lease)
                .await?;
            if claimed.is_empty() {
                break None;
            }
            if ran_here == 0 {
                tracing::info!(job = %id, node = %node, records = job.total_record_count.unwrap_or(0), "batch job running");
            }
            let mut done = Vec::with_capacity(claimed.len());
            for (file, lines) in by_file(&claimed) {
                if cached.as_ref().is_none_or(|(f, _)| *f != file) {
                    let Some(input) = job.inputs.get(file as usize) else {
                        continue;
                    };
                    match self.read_input(input).await {
                        Ok(parsed) => cached = Some((file, parsed)),
                        Err(m) => {
                            self.fail(id, m.clone()).await?;
                            return Ok(Some(Ending::Failed(m)));
                        }
                    }
                }
                let parsed = cached.as_ref().map_or(&[][..], |(_, p)| p.as_slice());
                let group: Vec<InputRecord> = lines
                    .iter()
                    .map(|&line| {
                        parsed
                            .binary_search_by_key(&line, |r| r.line)
                            .map(|i| parsed[i].clone())
                            .unwrap_or_else(|_| vanished(line))
                    })
                    .collect();
                let ran = renewing(
                    self.run_group(job, file, &group),
                    self.renew_every(),
                    || async {
                        if let Err(e) = self.store.renew_claims(id, node, self.settings.lease).await
                        {
                            tracing::warn!(job = %id, error = %e, "record claims not renewed");
                        }
                    },
                )
                .await;
                done.extend(ran);
            }
            let ran = done.len();
            ran_here += ran;
            let saved = self.store.complete_records(id, node, done).await?;
            if saved < ran {
                tracing::warn!(job = %id, ran, saved, "records whose claim lapsed were left to the node that took them over");
            }
            tracing::debug!(job = %id, node = %node, saved, "batch records saved");
            self.record_progress(id).await?;
            self.validate_waiting().await;
        };
        if ran_here > 0 {
            tracing::info!(job = %id, node = %node, records = ran_here, "batch records run on this node");
        }
        Ok(result)
    }

    async fn run_group(&self, job: &Job, file: u32, group: &[InputRecord]) -> Vec<Checkpoint> {
        let runnable: Vec<&InputRecord> = group.iter().filter(|r| r.invalid.is_none()).collect();
        let inputs = runnable.iter().map(|r| r.model_input.clone()).collect();
        let mut results = self
            .invoker
            .invoke_many(&job.model_id, job.model_invocation_type, inputs)
            .await
            .into_iter();
        group
            .iter()
            .map(|record| {
                let result = match &record.invalid {
                    Some(e) => Err(e.clone()),
                    None => results.next().unwrap_or_else(|| {
                        Err(RecordError {
                            code: 500,
                            message: "The model returned no result for this record.".into(),
                        })
                    }),
                };
                let (ok, input_tokens, output_tokens) = match &result {
                    Ok(r) => (true, r.input_tokens, r.output_tokens),
                    Err(_) => (false, 0, 0),
                };
                Checkpoint {
                    file,
                    line: record.line,
                    ok,
                    input_tokens,
                    output_tokens,
                    output: records::output_line(record, result.as_ref().map(|r| &r.output)),
                }
            })
            .collect()
    }

    async fn record_progress(&self, id: &str) -> Result<(), BatchError> {
        let totals = self.store.totals(id).await?;
        self.update(id, |j| {
            // Another node may have written later totals meanwhile: counts only grow.
            if j.processed_record_count.unwrap_or(0) > totals.processed {
                return;
            }
            j.processed_record_count = Some(totals.processed);
            j.success_record_count = Some(totals.succeeded);
            j.error_record_count = Some(totals.processed - totals.succeeded);
            j.last_modified_time = crate::job::timestamp(OffsetDateTime::now_utc());
        })
        .await?;
        Ok(())
    }

    /// Writes the outputs and the manifest, then gives the job its final status.
    async fn finish(&self, id: &str, ending: Option<Ending>) -> Result<(), BatchError> {
        let job = self
            .get(id)
            .await?
            .ok_or_else(|| BatchError::NotFound(id.into()))?;
        let written = self.write_outputs(&job).await;
        let totals = self.store.totals(id).await?;
        let total = job.total_record_count.unwrap_or(0);
        let errors = totals.processed - totals.succeeded;
        let (status, message) = match (ending, written) {
            (_, Err(m)) => (JobStatus::Failed, Some(m)),
            (Some(Ending::Failed(m)), Ok(())) => (JobStatus::Failed, Some(m)),
            (Some(Ending::Stopped), Ok(())) => (JobStatus::Stopped, None),
            (Some(Ending::Expired), Ok(())) => (
                JobStatus::Expired,
                Some(format!(
                    "The job ran past its timeout of {} hours; the records finished by then were written.",
                    job.timeout_duration_in_hours
                )),
            ),
            (None, Ok(())) if totals.succeeded == 0 => (
                JobStatus::Failed,
                Some(format!(
                    "All {total} records failed. Each record's error is in the output file."
                )),
            ),
            (None, Ok(())) if errors > 0 => (
                JobStatus::PartiallyCompleted,
                Some(format!(
                    "{errors} of {total} records failed. Each record's error is in the output file."
                )),
            ),
            (None, Ok(())) => (JobStatus::Completed, None),
        };
        tracing::info!(job = %id, node = %self.settings.node, status = status.as_str(), processed = totals.processed, errors, "batch job finished");
        self.update(id, |j| {
            j.processed_record_count = Some(totals.processed);
            j.success_record_count = Some(totals.succeeded);
            j.error_record_count = Some(errors);
            j.message = message;
            j.lease = None;
            j.set_status(status, OffsetDateTime::now_utc());
        })
        .await?;
        // The outputs hold every record now and the job its counts: the rows are spent.
        // Should this fail (or the process die first), the next start removes them.
        match self.store.forget_records(id).await {
            Ok(rows) => tracing::debug!(job = %id, rows, "ended job's records removed"),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "an ended job's records were not removed")
            }
        }
        Ok(())
    }

    async fn write_outputs(&self, job: &Job) -> Result<(), String> {
        let prefix = S3Uri::parse(&job.output_prefix).map_err(|e| e.to_string())?;
        let saved = self
            .store
            .checkpoints(job.id())
            .await
            .map_err(|e| format!("The job's progress could not be read: {e}"))?;
        let mut manifest = Manifest {
            total_record_count: job.total_record_count.unwrap_or(0),
            ..Manifest::default()
        };
        for (index, file) in job.inputs.iter().enumerate() {
            let mut body = String::new();
            for c in saved.iter().filter(|c| c.file == index as u32) {
                body.push_str(&c.output);
                body.push('\n');
                manifest.processed_record_count += 1;
                if c.ok {
                    manifest.success_record_count += 1;
                } else {
                    manifest.error_record_count += 1;
                }
                manifest.input_token_count += c.input_tokens;
                manifest.output_token_count += c.output_tokens;
            }
            let target = under(&prefix, &file.output_name);
            self.objects
                .put(&target, body.into_bytes().into())
                .await
                .map_err(|e| {
                    format!(
                        "The output {target} could not be written: {}",
                        object_message(&e)
                    )
                })?;
        }
        let target = under(&prefix, MANIFEST_NAME);
        let body = serde_json::to_vec(&manifest).unwrap_or_default();
        self.objects.put(&target, body.into()).await.map_err(|e| {
            format!(
                "The manifest {target} could not be written: {}",
                object_message(&e)
            )
        })
    }
}

/// Claimed (file, line) pairs, in order, as each file's lines.
fn by_file(claimed: &[(u32, u64)]) -> Vec<(u32, Vec<u64>)> {
    let mut out: Vec<(u32, Vec<u64>)> = Vec::new();
    for &(file, line) in claimed {
        match out.last_mut() {
            Some((f, lines)) if *f == file => lines.push(line),
            _ => out.push((file, vec![line])),
        }
    }
    out
}

/// A listed record whose line is no longer in the input (the file changed).
fn vanished(line: u64) -> InputRecord {
    InputRecord {
        line,
        record_id: records::generate_record_id(),
        model_input: Value::Null,
        invalid: Some(RecordError::invalid(format!(
            "The input file changed while the job ran: line {} is no longer a record.",
            line + 1
        ))),
    }
}

#[cfg(test)]
mod tests {
    //! The runner over a real local object store and a real SQLite store; only the
    //! model is a stand-in (the server's tests run the real one end to end).
    use super::*;
    use crate::job::{job_arn, CreateJobRequest};
    use crate::store::SqliteJobs;
    use basalt_store::Store;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Echoes each record's `inputText`, failing records whose text is "fail".
    struct Echo {
        calls: AtomicUsize,
    }

    impl Invoker for Echo {
        fn chunk_size(&self, _: &str) -> usize {
            2
        }

        async fn invoke_many(
            &self,
            _: &str,
            _: InvocationType,
            inputs: Vec<Value>,
        ) -> Vec<Result<Invoked, RecordError>> {
            self.calls.fetch_add(inputs.len(), Ordering::SeqCst);
            inputs
                .into_iter()
                .map(|i| match i["inputText"].as_str() {
                    Some("fail") => Err(RecordError::invalid("told to fail")),
                    Some(t) => Ok(Invoked {
                        output: json!({"echo": t}),
                        input_tokens: 1,
                        output_tokens: 2,
                    }),
                    None => Err(RecordError::invalid("no inputText")),
                })
                .collect()
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        runner: Arc<Runner<Echo>>,
    }

    fn fixture(dir: tempfile::TempDir) -> Fixture {
        for bucket in ["input-bucket", "output-bucket"] {
            std::fs::create_dir_all(dir.path().join("s3").join(bucket)).expect("bucket");
        }
        let store = Arc::new(SqliteJobs::new(Arc::new(
            Store::open(dir.path()).expect("store"),
        )));
        let objects = ObjectStorage::new(dir.path(), None);
        let runner = Runner::new(
            store,
            objects,
            Echo {
                calls: AtomicUsize::new(0),
            },
        );
        Fixture { dir, runner }
    }

    fn write_input(f: &Fixture, name: &str, lines: &[&str]) {
        std::fs::write(
            f.dir.path().join("s3/input-bucket").join(name),
            lines.join("\n"),
        )
        .expect("input");
    }

    async fn submit(f: &Fixture, input: &str) -> String {
        let req: CreateJobRequest = serde_json::from_value(json!({
            "jobName": "test-job",
            "roleArn": "arn:aws:iam::123456789012:role/R",
            "modelId": "amazon.titan-text-express-v1",
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": input}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://output-bucket/results/"}}
        }))
        .expect("request");
        let valid = req.validate().expect("valid");
        let id = crate::job::new_job_id();
        let job = Job::new(
            &req,
            &valid,
            job_arn("us-east-1", "123456789012", &id),
            req.model_id.clone(),
            OffsetDateTime::now_utc(),
        );
        f.runner.submit(&job).await.expect("submit");
        id
    }

    async fn get(f: &Fixture, id: &str) -> Job {
        f.runner.get(id).await.expect("get").expect("job")
    }

    async fn run_to_end(f: &Fixture, id: &str) -> Job {
        f.runner.validate_waiting().await;
        let job = get(f, id).await;
        if job.status == JobStatus::Scheduled || job.status == JobStatus::InProgress {
            assert_eq!(f.runner.execute(job).await.expect("execute"), Pass::Ended);
        }
        get(f, id).await
    }

    fn read_out(f: &Fixture, id: &str, name: &str) -> String {
        std::fs::read_to_string(
            f.dir
                .path()
                .join("s3/output-bucket/results")
                .join(id)
                .join(name),
        )
        .expect("output")
    }

    fn record(id: &str, text: &str) -> String {
        json!({"recordId": id, "modelInput": {"inputText": text}}).to_string()
    }

    #[tokio::test]
    async fn mixed_records_end_partially_completed_with_outputs_and_manifest() {
        let f = fixture(tempfile::tempdir().expect("tmp"));
        let lines = [
            record("1", "a"),
            record("2", "fail"),
            "not json".to_string(),
            record("4", "d"),
        ];
        write_input(
            &f,
            "part.jsonl",
            &lines.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let id = submit(&f, "s3://input-bucket/part.jsonl").await;
        let job = run_to_end(&f, &id).await;
        assert_eq!(job.status, JobStatus::PartiallyCompleted);
        assert_eq!(
            (
                job.total_record_count,
                job.processed_record_count,
                job.success_record_count,
                job.error_record_count
            ),
            (Some(4), Some(4), Some(2), Some(2))
        );
        assert!(job.end_time.is_some());
        let out: Vec<Value> = read_out(&f, &id, "part.jsonl.out")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(out.len(), 4);
        assert_eq!(out[0]["modelOutput"], json!({"echo": "a"}));
        assert_eq!(out[1]["error"]["errorMessage"], "told to fail");
        assert_eq!(out[2]["error"]["errorCode"], 400);
        assert_eq!(out[3]["recordId"], "4");
        let manifest: Value =
            serde_json::from_str(&read_out(&f, &id, MANIFEST_NAME)).expect("manifest");
        assert_eq!(
            manifest,
            json!({"totalRecordCount": 4, "processedRecordCount": 4, "successRecordCount": 2,
                   "errorRecordCount": 2, "inputTokenCount": 2, "outputTokenCount": 4})
        );

        // The ended job's per-record rows are gone; the job keeps its counts.
        assert_eq!(record_rows(&f, &id).await, (0, 0));
        let again = get(&f, &id).await;
        assert_eq!(again.processed_record_count, Some(4));
        assert_eq!(again.error_record_count, Some(2));
    }

    /// (finished, waiting) per-record rows of a job in the store.
    async fn record_rows(f: &Fixture, id: &str) -> (u64, u64) {
        let store = f.runner.store();
        let done = store.totals(id).await.expect("totals").processed;
        let waiting = store
            .pending_records(id, "someone")
            .await
            .expect("pending")
            .pending;
        (done, waiting)
    }

    #[tokio::test]
    async fn rows_of_a_job_stopped_before_it_ran_go_at_the_next_start() {
        let f = fixture(tempfile::tempdir().expect("tmp"));
        write_input(&f, "s.jsonl", &[&record("1", "a"), &record("2", "b")]);
        let id = submit(&f, "s3://input-bucket/s.jsonl").await;
        f.runner.validate_waiting().await;
        assert_eq!(get(&f, &id).await.status, JobStatus::Scheduled);
        assert_eq!(record_rows(&f, &id).await, (0, 2));
        f.runner.stop(&id).await.expect("stop");
        assert_eq!(get(&f, &id).await.status, JobStatus::Stopped);
        assert_eq!(record_rows(&f, &id).await, (0, 0));
        // Rows left by a process that died before removing them go at the next start.
        f.runner
            .store()
            .seed_records(&id, 0, vec![0, 1])
            .await
            .expect("seed");
        assert_eq!(record_rows(&f, &id).await, (0, 2));
        f.runner.forget_ended_records().await;
        assert_eq!(record_rows(&f, &id).await, (0, 0));
        assert_eq!(get(&f, &id).await.status, JobStatus::Stopped);
    }

    #[tokio::test]
    async fn a_job_whose_records_all_fail_is_failed_not_completed() {
        let f = fixture(tempfile::tempdir().expect("tmp"));
        write_input(
            &f,
            "bad.jsonl",
            &[&record("1", "fail"), &record("2", "fail")],
        );
        let id = submit(&f, "s3://input-bucket/bad.jsonl").await;
        let job = run_to_end(&f, &id).await;
        assert_eq!(job.status, JobStatus::Failed);
        assert!(job
            .message
            .as_deref()
            .is_some_and(|m| m.contains("All 2 records failed")));
        assert_eq!(read_out(&f, &id, "bad.jsonl.out").lines().count(), 2);
    }

    #[tokio::test]
    async fn a_prefix_reads_every_jsonl_file_and_missing_input_fails_validation() {
        let f = fixture(tempfile::tempdir().expect("tmp"));
        std::fs::create_dir_all(f.dir.path().join("s3/input-bucket/many")).expect("dir");
        write_input(&f, "many/a.jsonl", &[&record("1", "a")]);
        write_input(&f, "many/b.jsonl", &[&record("2", "b"), &record("3", "c")]);
        write_input(&f, "many/notes.txt", &["ignored"]);
        let id = submit(&f, "s3://input-bucket/many/").await;
        let job = run_to_end(&f, &id).await;
        assert_eq!(job.status, JobStatus::Completed, "{:?}", job.message);
        assert_eq!(read_out(&f, &id, "a.jsonl.out").lines().count(), 1);
        assert_eq!(read_out(&f, &id, "b.jsonl.out").lines().count(), 2);

        let missing = submit(&f, "s3://input-bucket/nothing-here.jsonl").await;
        let job = run_to_end(&f, &missing).await;
        assert_eq!(job.status, JobStatus::Failed);
        assert!(
            job.message
                .as_deref()
                .is_some_and(|m| m.contains("could not be read")),
            "{:?}",
            job.message
        );
    }

    #[tokio::test]
    async fn a_resumed_job_skips_saved_records_and_writes_each_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().to_path_buf();
        let f = fixture(dir);
        let lines: Vec<String> = (0..5).map(|i| record(&i.to_string(), "x")).collect();
        write_input(
            &f,
            "r.jsonl",
            &lines.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let id = submit(&f, "s3://input-bucket/r.jsonl").await;
        f.runner.validate_waiting().await;
        // As if a first process saved records 0 and 1, then died holding 2 and 3.
        let job = get(&f, &id).await;
        let node = f.runner.node().to_string();
        let lease = Duration::from_secs(3600);
        let claimed = f
            .runner
            .store
            .claim_records(&id, &node, 2, lease)
            .await
            .expect("claim");
        assert_eq!(claimed, [(0, 0), (0, 1)]);
        let parsed = records::parse(lines.join("\n").as_bytes());
        let saved = f.runner.run_group(&job, 0, &parsed[..2]).await;
        f.runner
            .store
            .complete_records(&id, &node, saved)
            .await
            .expect("save");
        f.runner
            .store
            .claim_records(&id, &node, 2, lease)
            .await
            .expect("claim");
        f.runner
            .update(&id, |j| j.status = JobStatus::InProgress)
            .await
            .expect("update");
        assert_eq!(f.runner.invoker.calls.load(Ordering::SeqCst), 2);

        // A new process over the same data directory frees what the dead one held.
        let again = Runner::new(
            Arc::new(SqliteJobs::new(Arc::new(
                Store::open(&path).expect("store"),
            ))),
            ObjectStorage::new(&path, None),
            Echo {
                calls: AtomicUsize::new(0),
            },
        );
        again
            .store
            .release_claims(again.node())
            .await
            .expect("release");
        let job = again.get(&id).await.expect("get").expect("job");
        again.execute(job).await.expect("execute");
        assert_eq!(
            again.invoker.calls.load(Ordering::SeqCst),
            3,
            "only the unsaved records ran"
        );
        let out = read_out(&f, &id, "r.jsonl.out");
        let ids: Vec<String> = out
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).expect("json")["recordId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4"]);
        assert_eq!(
            again.get(&id).await.expect("get").expect("job").status,
            JobStatus::Completed
        );
    }

    #[tokio::test]
    async fn stopping_before_and_during_a_run() {
        let f = fixture(tempfile::tempdir().expect("tmp"));
        write_input(
            &f,
            "s.jsonl",
            &[&record("1", "a"), &record("2", "b"), &record("3", "c")],
        );
        let early = submit(&f, "s3://input-bucket/s.jsonl").await;
        let job = f.runner.stop(&early).await.expect("stop");
        assert_eq!(job.status, JobStatus::Stopped);
        assert!(matches!(
            f.runner.stop(&early).await,
            Err(BatchError::Conflict(_))
        ));

        let running = submit(&f, "s3://input-bucket/s.jsonl").await;
        f.runner.validate_waiting().await;
        f.runner
            .update(&running, |j| j.status = JobStatus::InProgress)
            .await
            .expect("update");
        assert_eq!(
            f.runner.stop(&running).await.expect("stop").status,
            JobStatus::Stopping
        );
        let job = get(&f, &running).await;
        f.runner.execute(job).await.expect("execute");
        let job = get(&f, &running).await;
        assert_eq!(job.status, JobStatus::Stopped);
        // What was written stays readable: an empty output and a manifest.
        assert_eq!(read_out(&f, &running, "s.jsonl.out"), "");
        let manifest: Value =
            serde_json::from_str(&read_out(&f, &running, MANIFEST_NAME)).expect("manifest");
        assert_eq!(manifest["processedRecordCount"], 0);
        assert!(matches!(
            f.runner.stop("nosuchjob123").await,
            Err(BatchError::NotFound(_))
        ));
    }
}
