//! The durable ingestion runner. Jobs live in the store; one loop runs them in the
//! order they started. Each document's outcome is saved in the same transaction as
//! the job's statistics, so a restart resumes where the last one stopped and
//! counts nothing twice. Re-ingestion is incremental: a document whose content and
//! sidecar hash the same as last time is left alone.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_chunking::Chunked;
use basalt_index::{Chunk, CHUNK_ID_KEY, DATA_SOURCE_ID_KEY, SOURCE_URI_KEY};
use basalt_objects::{ObjectStorage, S3Uri};
use basalt_proto::BedrockError;
use basalt_store::{Key, Store, StoreError, Write};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::resources::{
    now, DataSource, IngestionJob, JobStatus, KnowledgeBase, SourceKind, CURRENT, DS_KIND,
    JOB_KIND, KB_KIND,
};
use crate::source::{self, content_hash, SourceDocument, MAX_DOCUMENT_BYTES};
use crate::vectors::{VectorStore, VectorStores};
use crate::{ChunkerModel, Embedder, Embedders};

pub const DOC_KIND: &str = "kb-document";
/// Documents whose bytes are read, parsed and embedded together.
const DOCS_PER_BATCH: usize = 16;
/// How long the loop sleeps when it has nothing to do (new jobs also wake it).
const IDLE: Duration = Duration::from_secs(2);

/// What the store keeps about one document of a data source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentState {
    pub identifier: Value,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub content_hash: String,
    pub metadata_hash: String,
    /// The ingestion job that last wrote this row.
    #[serde(default)]
    pub job: Option<String>,
    pub updated_at: String,
}

impl DocumentState {
    /// KnowledgeBaseDocumentDetail for the documents API.
    pub fn detail(&self, ds: &DataSource) -> Value {
        let mut v = json!({
            "knowledgeBaseId": ds.knowledge_base_id,
            "dataSourceId": ds.data_source_id,
            "status": self.status,
            "identifier": self.identifier,
            "updatedAt": self.updated_at,
        });
        if let Some(r) = &self.status_reason {
            v["statusReason"] = json!(r);
        }
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Bedrock(BedrockError),
}

impl From<BedrockError> for IngestError {
    fn from(e: BedrockError) -> Self {
        Self::Bedrock(e)
    }
}

/// One document read and ready to be parsed.
pub(crate) struct Fetched {
    pub(crate) key: String,
    pub(crate) identifier: Value,
    pub(crate) name: String,
    pub(crate) source_uri: String,
    pub(crate) content: Vec<u8>,
    pub(crate) content_type: Option<String>,
    pub(crate) sidecar: Option<Vec<u8>>,
    /// Attributes given inline (custom documents) instead of a sidecar.
    pub(crate) attributes: Option<Map<String, Value>>,
    pub(crate) content_hash: String,
    pub(crate) metadata_hash: String,
    pub(crate) change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    New,
    Modified,
    MetadataOnly,
}

pub struct Ingestor {
    store: Arc<Store>,
    objects: ObjectStorage,
    embedders: Arc<dyn Embedders>,
    vectors: Arc<VectorStores>,
    pub(crate) wake: Notify,
    /// Jobs asked to stop since this process started.
    stop_requested: Mutex<HashSet<String>>,
}

fn job_key(id: &str) -> Key<'_> {
    Key {
        kind: JOB_KIND,
        id,
        version: CURRENT,
    }
}

impl Ingestor {
    pub fn new(
        store: Arc<Store>,
        objects: ObjectStorage,
        embedders: Arc<dyn Embedders>,
        vectors: Arc<VectorStores>,
    ) -> Self {
        Self {
            store,
            objects,
            embedders,
            vectors,
            wake: Notify::new(),
            stop_requested: Mutex::new(HashSet::new()),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn vectors(&self) -> &Arc<VectorStores> {
        &self.vectors
    }

    pub fn embedders(&self) -> &Arc<dyn Embedders> {
        &self.embedders
    }

    pub fn objects(&self) -> &ObjectStorage {
        &self.objects
    }

    /// Runs jobs until the process ends.
    pub fn spawn(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match me.process_pending().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "cannot index pending documents"),
                }
                match me.next_job() {
                    Ok(Some(job)) => {
                        let id = job.ingestion_job_id.clone();
                        if let Err(e) = me.run(job).await {
                            tracing::error!(job = %id, error = %e, "ingestion job failed");
                            me.finish_failed(&id, e.to_string());
                        }
                    }
                    Ok(None) => {
                        tokio::select! {
                            _ = me.wake.notified() => {}
                            _ = tokio::time::sleep(IDLE) => {}
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read ingestion jobs");
                        tokio::time::sleep(IDLE).await;
                    }
                }
            }
        });
    }

    fn next_job(&self) -> Result<Option<IngestionJob>, StoreError> {
        let jobs: Vec<(String, IngestionJob)> = self.store.list(JOB_KIND, CURRENT)?;
        Ok(jobs
            .into_iter()
            .map(|(_, j)| j)
            .filter(|j| !j.status.is_terminal())
            .min_by(|a, b| a.started_at.cmp(&b.started_at)))
    }

    /// Saves a new STARTING job and wakes the loop.
    pub fn submit(&self, job: &IngestionJob) -> Result<(), StoreError> {
        self.store.put(&job_key(&job.key_id()), job)?;
        self.wake.notify_one();
        Ok(())
    }

    pub fn job(&self, key_id: &str) -> Result<Option<IngestionJob>, StoreError> {
        self.store.get(&job_key(key_id))
    }

    pub fn jobs(&self) -> Result<Vec<IngestionJob>, StoreError> {
        Ok(self
            .store
            .list::<IngestionJob>(JOB_KIND, CURRENT)?
            .into_iter()
            .map(|(_, j)| j)
            .collect())
    }

    /// Asks a running job to stop; a job that has not started stops at once.
    pub fn stop(&self, key_id: &str) -> Result<Option<IngestionJob>, StoreError> {
        let Some(mut job) = self.job(key_id)? else {
            return Ok(None);
        };
        if job.status.is_terminal() {
            return Ok(Some(job));
        }
        if let Ok(mut s) = self.stop_requested.lock() {
            s.insert(key_id.to_string());
        }
        job.status = JobStatus::Stopping;
        job.updated_at = now();
        self.store.put(&job_key(key_id), &job)?;
        self.wake.notify_one();
        Ok(Some(job))
    }

    fn stop_wanted(&self, key_id: &str) -> bool {
        self.stop_requested
            .lock()
            .map(|s| s.contains(key_id))
            .unwrap_or(false)
    }

    /// Persists the job, keeping a stop that was asked for meanwhile.
    fn save(&self, job: &mut IngestionJob, extra: Vec<Write<'_>>) -> Result<(), StoreError> {
        if self.stop_wanted(&job.key_id()) && !job.status.is_terminal() {
            job.status = JobStatus::Stopping;
        }
        job.updated_at = now();
        let id = job.key_id();
        let mut writes = extra;
        writes.push(Write::Put(
            job_key(&id),
            serde_json::to_value(&*job).unwrap_or(Value::Null),
        ));
        self.store.apply(&writes)
    }

    fn finish_failed(&self, key_id: &str, reason: String) {
        if let Ok(Some(mut job)) = self.job(key_id) {
            job.status = JobStatus::Failed;
            job.fail_reason(reason);
            job.updated_at = now();
            let _ = self.store.put(&job_key(key_id), &job);
        }
    }

    /// Waits for the knowledge base's embedding model to be loaded.
    pub async fn embedder(
        &self,
        kb: &KnowledgeBase,
        give_up: impl Fn() -> bool,
    ) -> Result<Option<Arc<dyn Embedder>>, BedrockError> {
        let spec = kb.embedding()?;
        loop {
            if let Some(e) = self.embedders.embedder(&spec.model_arn, spec.dimensions)? {
                return Ok(Some(e));
            }
            if give_up() {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The knowledge base's embedding model and vector store, or `None` while the
    /// model still loads.
    pub async fn loaded(
        &self,
        kb: &KnowledgeBase,
    ) -> Result<Option<(Arc<dyn Embedder>, VectorStore)>, BedrockError> {
        let Some(embedder) = self.embedder(kb, || true).await? else {
            return Ok(None);
        };
        let store = self.vectors.open(kb, embedder.dimensions()).await?;
        Ok(Some((embedder, store)))
    }

    /// As [`Ingestor::loaded`], for a request that cannot wait: a model still loading
    /// is a ThrottlingException, which clients retry.
    pub async fn loaded_now(
        &self,
        kb: &KnowledgeBase,
    ) -> Result<(Arc<dyn Embedder>, VectorStore), BedrockError> {
        self.loaded(kb).await?.ok_or_else(|| {
            BedrockError::new(
                basalt_proto::ErrorCode::Throttling,
                "The knowledge base's embedding model is loading. Try your request again shortly.",
            )
        })
    }

    async fn run(&self, mut job: IngestionJob) -> Result<(), IngestError> {
        let key_id = job.key_id();
        if job.status == JobStatus::Stopping {
            job.status = JobStatus::Stopped;
            self.save(&mut job, Vec::new())?;
            return Ok(());
        }
        job.status = JobStatus::InProgress;
        self.save(&mut job, Vec::new())?;
        let kb: Option<KnowledgeBase> = self.store.get(&Key {
            kind: KB_KIND,
            id: &job.knowledge_base_id,
            version: CURRENT,
        })?;
        let ds: Option<DataSource> = self.store.get(&Key {
            kind: DS_KIND,
            id: &format!("{}/{}", job.knowledge_base_id, job.data_source_id),
            version: CURRENT,
        })?;
        let (Some(kb), Some(ds)) = (kb, ds) else {
            job.status = JobStatus::Failed;
            job.fail_reason("The knowledge base or data source was deleted.".into());
            self.save(&mut job, Vec::new())?;
            return Ok(());
        };
        let Some(embedder) = self.embedder(&kb, || self.stop_wanted(&key_id)).await? else {
            job.status = JobStatus::Stopped;
            self.save(&mut job, Vec::new())?;
            return Ok(());
        };
        let vectors = self.vectors.open(&kb, embedder.dimensions()).await?;
        let SourceKind::S3(s3) = ds.source()? else {
            job.status = JobStatus::Failed;
            job.fail_reason(
                "A CUSTOM data source has no source to scan; add documents with IngestKnowledgeBaseDocuments.".into(),
            );
            self.save(&mut job, Vec::new())?;
            return Ok(());
        };
        let scan = match source::scan(&self.objects, &s3).await {
            Ok(s) => s,
            Err(e) => {
                job.status = JobStatus::Failed;
                job.fail_reason(format!("Cannot list s3://{}: {e}", s3.bucket));
                self.save(&mut job, Vec::new())?;
                return Ok(());
            }
        };
        job.statistics.number_of_documents_scanned = scan.documents.len() as u64;
        job.statistics.number_of_metadata_documents_scanned = scan.metadata_documents;
        self.save(&mut job, Vec::new())?;

        let scope = ds.scope();
        let states: HashMap<String, DocumentState> =
            self.store.versions(DOC_KIND, &scope)?.into_iter().collect();
        let present: HashSet<String> = scan.documents.iter().map(|d| d.uri.to_string()).collect();
        for batch in scan.documents.chunks(DOCS_PER_BATCH) {
            if self.stop_wanted(&key_id) {
                job.status = JobStatus::Stopped;
                self.save(&mut job, Vec::new())?;
                return Ok(());
            }
            let mut fetched = Vec::new();
            for doc in batch {
                match self
                    .fetch(doc, states.get(&doc.uri.to_string()), &key_id)
                    .await
                {
                    Ok(Some(f)) => fetched.push(f),
                    Ok(None) => {}
                    Err(reason) => {
                        let state = DocumentState {
                            identifier: s3_identifier(&doc.uri),
                            status: "FAILED".into(),
                            status_reason: Some(reason.clone()),
                            content_hash: String::new(),
                            metadata_hash: String::new(),
                            job: Some(key_id.clone()),
                            updated_at: now(),
                        };
                        job.statistics.number_of_documents_failed += 1;
                        job.fail_reason(reason);
                        let uri = doc.uri.to_string();
                        self.save(&mut job, vec![put_state(&scope, &uri, &state)])?;
                    }
                }
            }
            self.index(&ds, &vectors, &embedder, fetched, &mut job)
                .await?;
        }
        // Documents gone from the source leave the index.
        for (uri, _) in states.iter().filter(|(k, _)| !present.contains(*k)) {
            if self.stop_wanted(&key_id) {
                job.status = JobStatus::Stopped;
                self.save(&mut job, Vec::new())?;
                return Ok(());
            }
            vectors
                .delete_document(document_id(&ds.data_source_id, uri))
                .await
                .map_err(|e| BedrockError::internal(format!("The index failed: {e}")))?;
            job.statistics.number_of_documents_deleted += 1;
            self.save(
                &mut job,
                vec![Write::Delete(Key {
                    kind: DOC_KIND,
                    id: &scope,
                    version: uri,
                })],
            )?;
        }
        job.status = if self.stop_wanted(&key_id) {
            JobStatus::Stopped
        } else {
            JobStatus::Complete
        };
        self.save(&mut job, Vec::new())?;
        Ok(())
    }

    /// Reads a document and its sidecar, or `None` when nothing changed since it was
    /// last indexed (or this job already handled it before a restart).
    async fn fetch(
        &self,
        doc: &SourceDocument,
        prior: Option<&DocumentState>,
        job: &str,
    ) -> Result<Option<Fetched>, String> {
        if prior.is_some_and(|p| p.job.as_deref() == Some(job)) {
            return Ok(None);
        }
        if doc.size > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "{} is {} bytes; documents may be at most {MAX_DOCUMENT_BYTES} bytes.",
                doc.uri, doc.size
            ));
        }
        let content = self
            .objects
            .get(&doc.uri)
            .await
            .map_err(|e| format!("{}: {e}", doc.uri))?;
        let sidecar = match &doc.sidecar {
            Some(uri) => Some(
                self.objects
                    .get(uri)
                    .await
                    .map_err(|e| format!("{uri}: {e}"))?
                    .to_vec(),
            ),
            None => None,
        };
        let content_hash = content_hash(&content);
        let metadata_hash = sidecar
            .as_deref()
            .map(source::content_hash)
            .unwrap_or_default();
        let change = match prior {
            Some(p) if p.status == "INDEXED" && p.content_hash == content_hash => {
                if p.metadata_hash == metadata_hash {
                    return Ok(None);
                }
                Change::MetadataOnly
            }
            Some(p) if p.status == "INDEXED" => Change::Modified,
            _ => Change::New,
        };
        Ok(Some(Fetched {
            key: doc.uri.to_string(),
            identifier: s3_identifier(&doc.uri),
            name: doc.uri.file_name().to_string(),
            source_uri: doc.uri.to_string(),
            content: content.to_vec(),
            content_type: None,
            sidecar,
            attributes: None,
            content_hash,
            metadata_hash,
            change,
        }))
    }

    /// Parses, chunks and embeds a batch together, then indexes each document and
    /// saves its state with the job's statistics.
    async fn index(
        &self,
        ds: &DataSource,
        vectors: &VectorStore,
        embedder: &Arc<dyn Embedder>,
        fetched: Vec<Fetched>,
        job: &mut IngestionJob,
    ) -> Result<(), IngestError> {
        let scope = ds.scope();
        for (doc, outcome) in self.index_batch(ds, vectors, embedder, fetched).await? {
            let (status, reason) = match outcome {
                Ok(()) => {
                    let s = &mut job.statistics;
                    match doc.change {
                        Change::New => s.number_of_new_documents_indexed += 1,
                        Change::Modified => s.number_of_modified_documents_indexed += 1,
                        Change::MetadataOnly => s.number_of_metadata_documents_modified += 1,
                    }
                    ("INDEXED", None)
                }
                Err(reason) => {
                    job.statistics.number_of_documents_failed += 1;
                    job.fail_reason(reason.clone());
                    ("FAILED", Some(reason))
                }
            };
            let state = doc.state(status, reason, Some(job.key_id()));
            self.save(job, vec![put_state(&scope, &doc.key, &state)])?;
        }
        Ok(())
    }

    /// Parses, chunks and embeds the documents together, then replaces each one's
    /// chunks in the vector store. Returns each document with its outcome.
    pub(crate) async fn index_batch(
        &self,
        ds: &DataSource,
        vectors: &VectorStore,
        embedder: &Arc<dyn Embedder>,
        fetched: Vec<Fetched>,
    ) -> Result<Vec<(Fetched, Result<(), String>)>, IngestError> {
        if fetched.is_empty() {
            return Ok(Vec::new());
        }
        let chunking = ds.chunking()?;
        let data_source_id = ds.data_source_id.clone();
        let model = Arc::clone(embedder);
        let (fetched, prepared) = tokio::task::spawn_blocking(move || {
            let prepared = prepare(&fetched, &chunking, &data_source_id, model.as_ref());
            (fetched, prepared)
        })
        .await
        .map_err(|e| BedrockError::internal(format!("ingestion task failed: {e}")))?;
        let mut writes = Vec::new();
        let mut out = Vec::with_capacity(fetched.len());
        for (doc, outcome) in fetched.into_iter().zip(prepared) {
            let outcome = outcome.map(|chunks| {
                writes.push((document_id(&ds.data_source_id, &doc.key), chunks));
            });
            out.push((doc, outcome));
        }
        vectors
            .upsert_documents(writes)
            .await
            .map_err(|e| BedrockError::internal(format!("The index failed: {e}")))?;
        Ok(out)
    }
}

impl Fetched {
    pub(crate) fn state(
        &self,
        status: &str,
        reason: Option<String>,
        job: Option<String>,
    ) -> DocumentState {
        DocumentState {
            identifier: self.identifier.clone(),
            status: status.into(),
            status_reason: reason,
            content_hash: self.content_hash.clone(),
            metadata_hash: self.metadata_hash.clone(),
            job,
            updated_at: now(),
        }
    }
}

pub(crate) fn put_state<'a>(scope: &'a str, key: &'a str, state: &DocumentState) -> Write<'a> {
    Write::Put(
        Key {
            kind: DOC_KIND,
            id: scope,
            version: key,
        },
        serde_json::to_value(state).unwrap_or(Value::Null),
    )
}

pub fn s3_identifier(uri: &S3Uri) -> Value {
    json!({"dataSourceType": "S3", "s3": {"uri": uri.to_string()}})
}

/// The index's id for a document: unique across the knowledge base's data sources.
pub fn document_id(data_source_id: &str, key: &str) -> String {
    format!("{data_source_id}/{key}")
}

/// A stable id in UUID form for the n-th chunk of a document version.
fn chunk_id(document: &str, content_hash: &str, n: usize) -> String {
    let h = hex::encode(Sha256::digest(format!("{document}\n{content_hash}\n{n}")));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A document's chunks and its metadata attributes.
type Parsed = (Chunked, Map<String, Value>);

/// Parses, chunks and embeds every document; each gets its chunks or a reason.
fn prepare(
    docs: &[Fetched],
    chunking: &basalt_chunking::ChunkingConfig,
    data_source_id: &str,
    model: &dyn Embedder,
) -> Vec<Result<Vec<Chunk>, String>> {
    let parsed: Vec<Result<Parsed, String>> = docs
        .iter()
        .map(|doc| {
            let attributes = match (&doc.attributes, &doc.sidecar) {
                (Some(inline), _) => inline.clone(),
                (None, Some(bytes)) => basalt_documents::parse_sidecar(bytes)
                    .map_err(|e| format!("{}: {e}", basalt_documents::sidecar_name(&doc.name)))?,
                (None, None) => Map::new(),
            };
            let text =
                basalt_documents::parse(&doc.content, &doc.name, doc.content_type.as_deref())
                    .map_err(|e| format!("{}: {e}", doc.source_uri))?
                    .text;
            let chunked = basalt_chunking::chunk(
                &text,
                chunking,
                &ChunkerModel(model),
                Some(&ChunkerModel(model)),
            )
            .map_err(|e| format!("{}: {e}", doc.source_uri))?;
            Ok((chunked, attributes))
        })
        .collect();
    let texts: Vec<String> = parsed
        .iter()
        .flatten()
        .flat_map(|(c, _)| c.chunks.iter().map(|c| c.text.clone()))
        .collect();
    let mut vectors = match model.embed(&texts) {
        Ok(v) => v.into_iter(),
        Err(e) => {
            return docs
                .iter()
                .map(|_| Err(format!("The embedding model failed: {e}")))
                .collect()
        }
    };
    docs.iter()
        .zip(parsed)
        .map(|(doc, parsed)| {
            let (chunked, attributes) = parsed?;
            let id = document_id(data_source_id, &doc.key);
            Ok(chunked
                .chunks
                .into_iter()
                .enumerate()
                .map(|(n, c)| {
                    let chunk_id = chunk_id(&id, &doc.content_hash, n);
                    let mut metadata = attributes.clone();
                    metadata.insert(SOURCE_URI_KEY.into(), json!(doc.source_uri));
                    metadata.insert(CHUNK_ID_KEY.into(), json!(chunk_id));
                    metadata.insert(DATA_SOURCE_ID_KEY.into(), json!(data_source_id));
                    Chunk {
                        chunk_id,
                        document_id: id.clone(),
                        return_text: c.parent.and_then(|p| chunked.parents.get(p).cloned()),
                        text: c.text,
                        vector: vectors.next().unwrap_or_default(),
                        metadata,
                    }
                })
                .collect())
        })
        .collect()
}

/// Where the embedded index of a knowledge base lives.
pub fn index_dir(data_dir: &std::path::Path, knowledge_base_id: &str) -> PathBuf {
    data_dir
        .join("knowledge-bases")
        .join(knowledge_base_id)
        .join("index")
}
