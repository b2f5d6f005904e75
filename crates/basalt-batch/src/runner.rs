//! Runs model invocation jobs, one at a time in submission order, through their
//! statuses: Submitted → Validating → Scheduled → InProgress → Completed,
//! PartiallyCompleted or Failed; Stopping → Stopped; or Expired past the timeout.
//!
//! Every finished record is checkpointed in the store before the next chunk
//! starts, and the output objects are written from the checkpoints at the end. A
//! process killed at any point resumes the job on restart: records already saved
//! are skipped, and a replayed record keeps its first result, so each appears in
//! the output exactly once.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use basalt_objects::{ObjectError, ObjectStorage, S3Uri};
use basalt_store::{Checkpoint, Key, Store, StoreError};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::async_invoke::{AsyncInvocation, AsyncStatus};
use crate::job::{under, InputFile, InvocationType, Job, JobStatus};
use crate::records::{self, InputRecord, Manifest, RecordError};

const KIND: &str = "model-invocation-job";
const ASYNC_KIND: &str = "async-invoke";
/// Jobs have no versions; every document sits under this one.
const VERSION: &str = "";
/// Records in one job (Bedrock's default quota).
pub const MAX_RECORDS_PER_JOB: u64 = 50_000;
/// Input files under one prefix.
pub const MAX_INPUT_FILES: usize = 1_000;
/// The manifest's object name, beside the outputs.
pub const MANIFEST_NAME: &str = "manifest.json.out";

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
    Store(#[from] StoreError),
    #[error("no model invocation job has the ID {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// Why a job ended early, for its final status and message.
enum Ending {
    Stopped,
    Expired,
    Failed(String),
}

pub struct Runner<I> {
    store: Arc<Store>,
    objects: ObjectStorage,
    invoker: I,
    /// Serialises read-modify-write of job documents (API calls race the runner).
    docs: Mutex<()>,
    wake: Notify,
    async_wake: Notify,
}

fn async_key(id: &str) -> Key<'_> {
    Key {
        kind: ASYNC_KIND,
        id,
        version: VERSION,
    }
}

fn key(id: &str) -> Key<'_> {
    Key {
        kind: KIND,
        id,
        version: VERSION,
    }
}

/// One job as stored (readable from another process, e.g. the CLI, while a server runs).
pub fn stored_job(store: &Store, id: &str) -> Result<Option<Job>, StoreError> {
    store.get(&key(id))
}

/// Every stored job, in submission order.
pub fn stored_jobs(store: &Store) -> Result<Vec<Job>, StoreError> {
    Ok(store
        .list::<Job>(KIND, VERSION)?
        .into_iter()
        .map(|(_, j)| j)
        .collect())
}

fn object_message(e: &ObjectError) -> String {
    e.to_string()
}

impl<I: Invoker> Runner<I> {
    pub fn new(store: Arc<Store>, objects: ObjectStorage, invoker: I) -> Arc<Self> {
        Arc::new(Self {
            store,
            objects,
            invoker,
            docs: Mutex::new(()),
            wake: Notify::new(),
            async_wake: Notify::new(),
        })
    }

    /// The store jobs live in (the server keeps idempotency tokens there too).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Starts the loop that runs jobs. Jobs left unfinished by an earlier process
    /// are picked up first.
    pub fn spawn(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.serve().await });
        // Async invocations run beside jobs, so one never waits behind a long job.
        let this = Arc::clone(self);
        tokio::spawn(async move { this.serve_async().await });
    }

    /// Stores a new async invocation and wakes its loop.
    pub fn submit_async(&self, invocation: &AsyncInvocation) -> Result<(), BatchError> {
        self.store.put(&async_key(invocation.id()), invocation)?;
        self.async_wake.notify_one();
        Ok(())
    }

    pub fn get_async(&self, id: &str) -> Result<Option<AsyncInvocation>, BatchError> {
        Ok(self.store.get(&async_key(id))?)
    }

    /// Every async invocation, in submission order.
    pub fn list_async(&self) -> Result<Vec<AsyncInvocation>, BatchError> {
        Ok(self
            .store
            .list::<AsyncInvocation>(ASYNC_KIND, VERSION)?
            .into_iter()
            .map(|(_, i)| i)
            .collect())
    }

    async fn serve_async(self: Arc<Self>) {
        loop {
            let next = match self.list_async() {
                Ok(all) => all
                    .into_iter()
                    .find(|i| i.status == AsyncStatus::InProgress),
                Err(e) => {
                    tracing::error!(error = %e, "async invoke runner cannot read its invocations");
                    None
                }
            };
            match next {
                Some(invocation) => {
                    if let Err(e) = self.run_async(invocation).await {
                        tracing::error!(error = %e, "async invocation could not be recorded");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
                None => self.async_wake.notified().await,
            }
        }
    }

    /// Runs one invocation and writes its response; a restart mid-way runs it again
    /// and overwrites the same object, so it is written once in effect.
    async fn run_async(&self, mut invocation: AsyncInvocation) -> Result<(), BatchError> {
        let id = invocation.id().to_string();
        let result = self
            .invoker
            .invoke_many(
                &invocation.model_id,
                InvocationType::InvokeModel,
                vec![invocation.model_input.clone()],
            )
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
        tracing::info!(invocation = %id, failed = failure.is_some(), "async invocation finished");
        invocation.finish(failure, OffsetDateTime::now_utc());
        self.store.put(&async_key(&id), &invocation)?;
        Ok(())
    }

    /// Stores a new job and wakes the runner.
    pub fn submit(&self, job: &Job) -> Result<(), BatchError> {
        self.store.put(&key(job.id()), job)?;
        self.wake.notify_one();
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Job>, BatchError> {
        Ok(stored_job(&self.store, id)?)
    }

    /// Every job, in submission order.
    pub fn list(&self) -> Result<Vec<Job>, BatchError> {
        Ok(stored_jobs(&self.store)?)
    }

    /// Applies `change` to the stored job under the document lock.
    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) -> Result<Job, BatchError> {
        let _held = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        let mut job: Job = self
            .store
            .get(&key(id))?
            .ok_or_else(|| BatchError::NotFound(id.to_string()))?;
        change(&mut job);
        self.store.put(&key(id), &job)?;
        Ok(job)
    }

    /// StopModelInvocationJob: a job not yet running stops at once; a running one
    /// goes to Stopping, and the runner writes what it has and marks it Stopped.
    pub fn stop(&self, id: &str) -> Result<Job, BatchError> {
        let mut refused = None;
        let job = self.update(id, |job| {
            let now = OffsetDateTime::now_utc();
            match job.status {
                JobStatus::Submitted | JobStatus::Validating | JobStatus::Scheduled => {
                    job.set_status(JobStatus::Stopped, now);
                    job.message = Some("The job was stopped before it started.".into());
                }
                JobStatus::InProgress => job.set_status(JobStatus::Stopping, now),
                JobStatus::Stopping => {}
                done => refused = Some(done),
            }
        })?;
        if let Some(status) = refused {
            return Err(BatchError::Conflict(format!(
                "The job {id} is {}; only a job that has not finished can be stopped.",
                status.as_str()
            )));
        }
        self.wake.notify_one();
        Ok(job)
    }

    async fn serve(self: Arc<Self>) {
        loop {
            self.validate_waiting().await;
            let next = match self.list() {
                Ok(jobs) => jobs.into_iter().find(|j| {
                    matches!(
                        j.status,
                        JobStatus::Scheduled | JobStatus::InProgress | JobStatus::Stopping
                    )
                }),
                Err(e) => {
                    tracing::error!(error = %e, "batch runner cannot read its jobs");
                    None
                }
            };
            match next {
                Some(job) => {
                    if let Err(e) = self.execute(job).await {
                        tracing::error!(error = %e, "batch job could not be recorded");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Validates every job waiting for it; cheap, so it also runs between chunks.
    async fn validate_waiting(&self) {
        let Ok(jobs) = self.list() else { return };
        for job in jobs {
            if matches!(job.status, JobStatus::Submitted | JobStatus::Validating) {
                if let Err(e) = self.validate(job).await {
                    tracing::error!(error = %e, "batch job could not be recorded");
                }
            }
        }
    }

    /// Finds the input files and counts their records, then schedules the job, or
    /// fails it with a message that says what to fix.
    async fn validate(&self, job: Job) -> Result<(), BatchError> {
        let id = job.id().to_string();
        let job = self.update(&id, |j| {
            if j.status == JobStatus::Submitted {
                j.set_status(JobStatus::Validating, OffsetDateTime::now_utc());
            }
        })?;
        if job.status != JobStatus::Validating {
            return Ok(());
        }
        let checked = self.check_inputs(&job).await;
        self.update(&id, |j| {
            // A stop that came in meanwhile wins.
            if j.status != JobStatus::Validating {
                return;
            }
            let now = OffsetDateTime::now_utc();
            match checked {
                Ok(inputs) => {
                    let total = inputs.iter().map(|f| f.records).sum();
                    j.total_record_count = Some(total);
                    j.processed_record_count = Some(0);
                    j.success_record_count = Some(0);
                    j.error_record_count = Some(0);
                    j.inputs = inputs;
                    j.set_status(JobStatus::Scheduled, now);
                }
                Err(message) => {
                    j.message = Some(message);
                    j.set_status(JobStatus::Failed, now);
                }
            }
        })?;
        Ok(())
    }

    async fn check_inputs(&self, job: &Job) -> Result<Vec<InputFile>, String> {
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
            let records = records::parse(&bytes).len() as u64;
            total += records;
            if total > MAX_RECORDS_PER_JOB {
                return Err(format!(
                    "The input holds more than {MAX_RECORDS_PER_JOB} records, the most one job may run. Split it into several jobs."
                ));
            }
            inputs.push(InputFile {
                output_name: records::output_name(&file.key),
                uri: file.to_string(),
                records,
            });
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

    /// Runs a scheduled (or interrupted) job to its end.
    async fn execute(&self, job: Job) -> Result<(), BatchError> {
        let id = job.id().to_string();
        let job = self.update(&id, |j| {
            if j.status == JobStatus::Scheduled {
                j.set_status(JobStatus::InProgress, OffsetDateTime::now_utc());
            }
        })?;
        tracing::info!(job = %id, records = job.total_record_count.unwrap_or(0), "batch job running");
        let ending = if job.status == JobStatus::Stopping {
            Some(Ending::Stopped)
        } else {
            self.run_records(&job).await?
        };
        self.finish(&id, ending).await
    }

    /// Runs every record not yet checkpointed. Returns why it ended early, if it did.
    async fn run_records(&self, job: &Job) -> Result<Option<Ending>, BatchError> {
        let id = job.id();
        let chunk = self.invoker.chunk_size(&job.model_id).max(1);
        for (index, file) in job.inputs.iter().enumerate() {
            let file_index = index as u32;
            let done: HashSet<u64> = self
                .store
                .checkpointed_lines(id, file_index)?
                .into_iter()
                .collect();
            if done.len() as u64 >= file.records {
                continue;
            }
            let bytes = match S3Uri::parse(&file.uri) {
                Ok(uri) => self.objects.get(&uri).await.map_err(|e| object_message(&e)),
                Err(e) => Err(e.to_string()),
            };
            let bytes = match bytes {
                Ok(b) => b,
                Err(m) => {
                    return Ok(Some(Ending::Failed(format!(
                        "The input file {} could not be read: {m}",
                        file.uri
                    ))))
                }
            };
            let pending: Vec<InputRecord> = records::parse(&bytes)
                .into_iter()
                .filter(|r| !done.contains(&r.line))
                .collect();
            for group in pending.chunks(chunk) {
                if let Some(ending) = self.interruption(id)? {
                    return Ok(Some(ending));
                }
                let saved = self.run_group(job, file_index, group).await;
                self.store.save_checkpoints(id, &saved)?;
                self.record_progress(id)?;
                self.validate_waiting().await;
            }
        }
        self.interruption(id)
    }

    /// A stop request or the job's expiry, checked between chunks.
    fn interruption(&self, id: &str) -> Result<Option<Ending>, BatchError> {
        let job = self
            .get(id)?
            .ok_or_else(|| BatchError::NotFound(id.into()))?;
        Ok(if job.status == JobStatus::Stopping {
            Some(Ending::Stopped)
        } else if job.expired(OffsetDateTime::now_utc()) {
            Some(Ending::Expired)
        } else {
            None
        })
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

    fn record_progress(&self, id: &str) -> Result<(), BatchError> {
        let totals = self.store.checkpoint_totals(id)?;
        self.update(id, |j| {
            j.processed_record_count = Some(totals.processed);
            j.success_record_count = Some(totals.succeeded);
            j.error_record_count = Some(totals.processed - totals.succeeded);
            j.last_modified_time = crate::job::timestamp(OffsetDateTime::now_utc());
        })?;
        Ok(())
    }

    /// Writes the outputs and the manifest, then gives the job its final status.
    async fn finish(&self, id: &str, ending: Option<Ending>) -> Result<(), BatchError> {
        let job = self
            .get(id)?
            .ok_or_else(|| BatchError::NotFound(id.into()))?;
        let written = self.write_outputs(&job).await;
        let totals = self.store.checkpoint_totals(id)?;
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
        tracing::info!(job = %id, status = status.as_str(), processed = totals.processed, errors, "batch job finished");
        self.update(id, |j| {
            j.processed_record_count = Some(totals.processed);
            j.success_record_count = Some(totals.succeeded);
            j.error_record_count = Some(errors);
            j.message = message;
            j.set_status(status, OffsetDateTime::now_utc());
        })?;
        Ok(())
    }

    async fn write_outputs(&self, job: &Job) -> Result<(), String> {
        let prefix = S3Uri::parse(&job.output_prefix).map_err(|e| e.to_string())?;
        let saved = self
            .store
            .checkpoints(job.id())
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

#[cfg(test)]
mod tests {
    //! The runner over a real local object store and a real SQLite store; only the
    //! model is a stand-in (the server's tests run the real one end to end).
    use super::*;
    use crate::job::{job_arn, CreateJobRequest};
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
        let store = Arc::new(Store::open(dir.path()).expect("store"));
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

    fn submit(f: &Fixture, input: &str) -> String {
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
        f.runner.submit(&job).expect("submit");
        id
    }

    async fn run_to_end(f: &Fixture, id: &str) -> Job {
        f.runner.validate_waiting().await;
        let job = f.runner.get(id).expect("get").expect("job");
        if job.status == JobStatus::Scheduled || job.status == JobStatus::InProgress {
            f.runner.execute(job).await.expect("execute");
        }
        f.runner.get(id).expect("get").expect("job")
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
        let id = submit(&f, "s3://input-bucket/part.jsonl");
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
    }

    #[tokio::test]
    async fn a_job_whose_records_all_fail_is_failed_not_completed() {
        let f = fixture(tempfile::tempdir().expect("tmp"));
        write_input(
            &f,
            "bad.jsonl",
            &[&record("1", "fail"), &record("2", "fail")],
        );
        let id = submit(&f, "s3://input-bucket/bad.jsonl");
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
        let id = submit(&f, "s3://input-bucket/many/");
        let job = run_to_end(&f, &id).await;
        assert_eq!(job.status, JobStatus::Completed, "{:?}", job.message);
        assert_eq!(read_out(&f, &id, "a.jsonl.out").lines().count(), 1);
        assert_eq!(read_out(&f, &id, "b.jsonl.out").lines().count(), 2);

        let missing = submit(&f, "s3://input-bucket/nothing-here.jsonl");
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
        let id = submit(&f, "s3://input-bucket/r.jsonl");
        f.runner.validate_waiting().await;
        // As if a first process saved records 0 and 1, then died mid-chunk.
        let job = f.runner.get(&id).expect("get").expect("job");
        let parsed = records::parse(lines.join("\n").as_bytes());
        let saved = f.runner.run_group(&job, 0, &parsed[..2]).await;
        f.runner.store.save_checkpoints(&id, &saved).expect("save");
        f.runner
            .update(&id, |j| j.status = JobStatus::InProgress)
            .expect("update");
        assert_eq!(f.runner.invoker.calls.load(Ordering::SeqCst), 2);

        // A new process over the same data directory.
        let again = Runner::new(
            Arc::new(Store::open(&path).expect("store")),
            ObjectStorage::new(&path, None),
            Echo {
                calls: AtomicUsize::new(0),
            },
        );
        let job = again.get(&id).expect("get").expect("job");
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
            again.get(&id).expect("get").expect("job").status,
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
        let early = submit(&f, "s3://input-bucket/s.jsonl");
        let job = f.runner.stop(&early).expect("stop");
        assert_eq!(job.status, JobStatus::Stopped);
        assert!(matches!(
            f.runner.stop(&early),
            Err(BatchError::Conflict(_))
        ));

        let running = submit(&f, "s3://input-bucket/s.jsonl");
        f.runner.validate_waiting().await;
        f.runner
            .update(&running, |j| j.status = JobStatus::InProgress)
            .expect("update");
        assert_eq!(
            f.runner.stop(&running).expect("stop").status,
            JobStatus::Stopping
        );
        let job = f.runner.get(&running).expect("get").expect("job");
        f.runner.execute(job).await.expect("execute");
        let job = f.runner.get(&running).expect("get").expect("job");
        assert_eq!(job.status, JobStatus::Stopped);
        // What was written stays readable: an empty output and a manifest.
        assert_eq!(read_out(&f, &running, "s.jsonl.out"), "");
        let manifest: Value =
            serde_json::from_str(&read_out(&f, &running, MANIFEST_NAME)).expect("manifest");
        assert_eq!(manifest["processedRecordCount"], 0);
        assert!(matches!(
            f.runner.stop("nosuchjob123"),
            Err(BatchError::NotFound(_))
        ));
    }
}
