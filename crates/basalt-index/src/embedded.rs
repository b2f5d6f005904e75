//! The embedded index: BM25 over chunk text (tantivy) and approximate nearest
//! neighbours over the vectors (our own HNSW, see [`crate::hnsw`]), persisted
//! in one directory.
//!
//! Layout of the directory:
//! - `text/`: the tantivy index. It is the record of which chunks exist: each
//!   document holds the chunk's `seq` (a number never reused), ids, text,
//!   return text and metadata JSON.
//! - `vectors-<gen>.bin`: an append-only file of `(seq, vector)` records;
//!   record `i` is graph node `i`. Records whose seq is no longer in tantivy
//!   are garbage (tombstones in the graph) until the next compaction.
//! - `graph-<gen>.bin`: a snapshot of the HNSW graph, a cache: nodes missing
//!   from it are inserted again at open, and a damaged one is rebuilt.
//! - `CURRENT`: the generation in use, replaced atomically by compaction.
//!
//! A write appends the vectors (fsync) and then commits tantivy (fsync); the
//! commit is the moment a write becomes durable. A crash before it leaves only
//! garbage vector records.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Map, Value};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value as _,
    STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::hnsw::{dot, Hnsw, Scored, Vectors};
use crate::{Chunk, Filter, Hit, IndexError, SearchRequest, SearchType};

/// Longest query text accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 20_000;
/// Most results one search may reach (`offset + limit`).
pub const MAX_RESULTS: usize = 10_000;
/// Longest chunk text accepted, in bytes.
pub const MAX_CHUNK_TEXT_BYTES: usize = 1 << 20;
/// Largest vector dimension accepted.
pub const MAX_DIMENSIONS: usize = 16_384;
/// Distinct query terms used for BM25; the rest are ignored.
const MAX_QUERY_TERMS: usize = 256;
/// HYBRID ranks at least this many candidates from each side.
const HYBRID_CANDIDATES: usize = 100;
/// Filtered search samples this many chunks to estimate how many pass.
const FILTER_SAMPLE: usize = 1024;

const TOKENIZER: &str = "basalt";
const VECTOR_MAGIC: &[u8; 8] = b"BSLTVEC1";

/// Tuning; the defaults are what the benchmark was run with.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// HNSW beam width when searching; wider is slower and more exact.
    pub ef_search: usize,
    /// At or below this many candidate chunks, search is an exact scan.
    pub exact_below: usize,
    /// Tantivy's indexing memory budget, in bytes (at least 15 MB).
    pub writer_memory_bytes: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            ef_search: 96,
            exact_below: 5_000,
            writer_memory_bytes: 32 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    seq: Field,
    chunk_id: Field,
    document_id: Field,
    text: Field,
    return_text: Field,
    metadata: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let seq = b.add_u64_field(
        "seq",
        NumericOptions::default()
            .set_indexed()
            .set_fast()
            .set_stored(),
    );
    let chunk_id = b.add_text_field("chunk_id", STRING | STORED);
    let document_id = b.add_text_field("document_id", STRING | STORED);
    // Term frequencies for BM25, no positions: there are no phrase queries.
    let text_opts = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        )
        .set_stored();
    let text = b.add_text_field("text", text_opts);
    let return_text = b.add_text_field("return_text", STORED);
    let metadata = b.add_text_field("metadata", STORED);
    (
        b.build(),
        Fields {
            seq,
            chunk_id,
            document_id,
            text,
            return_text,
            metadata,
        },
    )
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn backend(e: impl std::fmt::Display) -> IndexError {
    IndexError::Backend(e.to_string())
}

/// What the index knows about a live chunk besides its vector and text.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    chunk_id: String,
    document_id: String,
    metadata: Map<String, Value>,
}

#[derive(Debug)]
struct State {
    generation: u64,
    vectors: Vectors,
    /// Per node: its seq.
    seqs: Vec<u64>,
    /// Per node: the chunk, while it is live.
    entries: Vec<Option<Entry>>,
    by_seq: HashMap<u64, u32>,
    by_chunk: HashMap<String, u32>,
    by_doc: HashMap<String, Vec<u32>>,
    graph: Hnsw,
    /// Graph inserts since the last snapshot.
    unsaved: usize,
    /// Metadata again, column-wise: `columns[key][node]`, null where absent.
    /// A filtered scan over every chunk reads these in order instead of
    /// chasing one map per chunk (several cache misses each: 5x slower).
    columns: HashMap<String, Vec<Value>>,
}

impl State {
    fn new(generation: u64, vectors: Vectors, seqs: Vec<u64>, graph: Hnsw) -> State {
        let n = seqs.len();
        State {
            generation,
            vectors,
            seqs,
            entries: vec![None; n],
            by_seq: HashMap::new(),
            by_chunk: HashMap::new(),
            by_doc: HashMap::new(),
            graph,
            unsaved: 0,
            columns: HashMap::new(),
        }
    }

    fn live(&self) -> usize {
        self.by_seq.len()
    }

    fn retire(&mut self, node: u32) {
        let Some(entry) = self.entries[node as usize].take() else {
            return;
        };
        self.by_seq.remove(&entry.seq);
        if self.by_chunk.get(&entry.chunk_id) == Some(&node) {
            self.by_chunk.remove(&entry.chunk_id);
        }
        if let Some(nodes) = self.by_doc.get_mut(&entry.document_id) {
            nodes.retain(|&n| n != node);
            if nodes.is_empty() {
                self.by_doc.remove(&entry.document_id);
            }
        }
        for key in entry.metadata.keys() {
            if let Some(slot) = self
                .columns
                .get_mut(key)
                .and_then(|c| c.get_mut(node as usize))
            {
                *slot = Value::Null;
            }
        }
        self.graph.mark_deleted(node);
    }

    fn admit(&mut self, node: u32, entry: Entry) {
        for (key, value) in &entry.metadata {
            let column = self.columns.entry(key.clone()).or_default();
            if column.len() <= node as usize {
                column.resize(node as usize + 1, Value::Null);
            }
            column[node as usize] = value.clone();
        }
        self.by_seq.insert(entry.seq, node);
        self.by_chunk.insert(entry.chunk_id.clone(), node);
        self.by_doc
            .entry(entry.document_id.clone())
            .or_default()
            .push(node);
        self.entries[node as usize] = Some(entry);
        if !self.graph.contains(node) {
            self.graph.insert(&self.vectors, node);
            self.unsaved += 1;
        }
    }

    fn push_vector(&mut self, seq: u64, v: &[f32]) -> u32 {
        self.seqs.push(seq);
        self.entries.push(None);
        self.vectors.push(v)
    }
}

/// A validated chunk and its normalised vector.
type Prepared = (Chunk, Vec<f32>);

struct WriteSide {
    writer: IndexWriter<TantivyDocument>,
    vector_file: File,
    next_seq: u64,
}

/// A knowledge base's index kept in a local directory. `Send + Sync`: searches
/// run concurrently; writes are serialised.
pub struct EmbeddedIndex {
    dir: PathBuf,
    dim: usize,
    options: IndexOptions,
    fields: Fields,
    index: Index,
    reader: IndexReader,
    write: Mutex<WriteSide>,
    state: RwLock<State>,
}

impl std::fmt::Debug for EmbeddedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedIndex")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

fn vector_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("vectors-{generation}.bin"))
}

fn graph_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("graph-{generation}.bin"))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers
/// see the old or the new content, never half.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        // The rename is durable only once the directory is synced.
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn record_bytes(dim: usize) -> usize {
    8 + 4 * dim
}

/// Reads a vector file, dropping a torn last record (a crash mid-append).
fn read_vectors(path: &Path, dim: usize) -> Result<(Vectors, Vec<u64>), IndexError> {
    let mut vectors = Vectors::new(dim);
    let mut seqs = Vec::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vectors, seqs)),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len() as usize;
    let mut r = BufReader::new(file);
    let mut head = [0u8; 12];
    if len < head.len() {
        return Ok((vectors, seqs));
    }
    r.read_exact(&mut head)?;
    if &head[..8] != VECTOR_MAGIC {
        return Err(IndexError::Corrupt {
            path: path.display().to_string(),
            reason: "not a vector file".into(),
        });
    }
    let stored_dim = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if stored_dim != dim {
        return Err(IndexError::Dimensions {
            expected: stored_dim,
            got: dim,
        });
    }
    let n = (len - head.len()) / record_bytes(dim);
    vectors.data.reserve(n * dim);
    seqs.reserve(n);
    let mut buf = vec![0u8; record_bytes(dim)];
    for _ in 0..n {
        r.read_exact(&mut buf)?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&buf[..8]);
        seqs.push(u64::from_le_bytes(seq));
        vectors.data.extend(
            buf[8..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    Ok((vectors, seqs))
}

/// Opens a vector file for appending, creating it with its header, and cuts a
/// torn last record so appends stay aligned.
fn open_vector_file(path: &Path, dim: usize, records: usize) -> Result<File, IndexError> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    let want = 12 + (records * record_bytes(dim)) as u64;
    let len = f.metadata()?.len();
    if len < 12 {
        f.set_len(0)?;
        f.write_all(VECTOR_MAGIC)?;
        f.write_all(&(dim as u32).to_le_bytes())?;
        f.sync_all()?;
    } else if len != want {
        f.set_len(want)?;
        f.sync_all()?;
    }
    f.seek(SeekFrom::End(0))?;
    Ok(f)
}

/// L2-normalises `v`; refuses a wrong size, a zero vector and non-finite values.
fn normalised(v: &[f32], dim: usize) -> Result<Vec<f32>, IndexError> {
    if v.len() != dim {
        return Err(IndexError::Dimensions {
            expected: dim,
            got: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::Invalid(
            "a vector holds a value that is not a finite number".into(),
        ));
    }
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return Err(IndexError::Invalid("a vector is all zeros".into()));
    }
    Ok(v.iter().map(|x| (*x as f64 / norm) as f32).collect())
}

/// Maps cosine similarity to a score in [0, 1].
fn semantic_score(sim: f32) -> f64 {
    ((1.0 + sim as f64) / 2.0).clamp(0.0, 1.0)
}

impl EmbeddedIndex {
    /// Opens the index in `dir`, creating it when absent.
    pub fn open(dir: &Path, dimensions: usize) -> Result<Self, IndexError> {
        Self::open_with(dir, dimensions, IndexOptions::default())
    }

    pub fn open_with(
        dir: &Path,
        dimensions: usize,
        options: IndexOptions,
    ) -> Result<Self, IndexError> {
        if dimensions == 0 || dimensions > MAX_DIMENSIONS {
            return Err(IndexError::Invalid(format!(
                "an index holds vectors of 1 to {MAX_DIMENSIONS} dimensions, not {dimensions}"
            )));
        }
        fs::create_dir_all(dir)?;
        let corrupt = |reason: String| IndexError::Corrupt {
            path: dir.display().to_string(),
            reason,
        };
        let generation = match fs::read_to_string(dir.join("CURRENT")) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| corrupt(format!("CURRENT holds {:?}, not a number", s.trim())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        // Leftovers of an interrupted compaction or snapshot.
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let stale = (name.starts_with("vectors-") || name.starts_with("graph-"))
                && name != format!("vectors-{generation}.bin")
                && name != format!("graph-{generation}.bin");
            if stale || name.ends_with(".tmp") {
                fs::remove_file(dir.join(&name))?;
            }
        }

        let (schema, fields) = schema();
        let text_dir = dir.join("text");
        fs::create_dir_all(&text_dir)?;
        let mmap = MmapDirectory::open(&text_dir).map_err(backend)?;
        let index = Index::open_or_create(mmap, schema).map_err(|e| corrupt(e.to_string()))?;
        index.tokenizers().register(TOKENIZER, analyzer());
        let writer = index
            .writer_with_num_threads(1, options.writer_memory_bytes.max(15_000_000))
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => IndexError::Backend(format!(
                    "the index at {} is open in another process",
                    dir.display()
                )),
                e => backend(e),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(backend)?;

        // The chunks tantivy holds, by seq.
        let mut live: HashMap<u64, Entry> = HashMap::new();
        let searcher = reader.searcher();
        for segment in searcher.segment_readers() {
            let store = segment.get_store_reader(64).map_err(backend)?;
            for doc in store.iter::<TantivyDocument>(segment.alive_bitset()) {
                let doc = doc.map_err(backend)?;
                let entry = entry_from_doc(&doc, &fields)
                    .ok_or_else(|| corrupt("a stored chunk lacks a field".into()))?;
                live.insert(entry.seq, entry);
            }
        }

        let vpath = vector_path(dir, generation);
        let (vectors, seqs) = read_vectors(&vpath, dimensions)?;
        let vector_file = open_vector_file(&vpath, dimensions, seqs.len())?;
        let graph = match File::open(graph_path(dir, generation)) {
            Ok(f) => Hnsw::read_from(&mut BufReader::new(f), vectors.len())
                .unwrap_or_else(|_| Hnsw::new()),
            Err(_) => Hnsw::new(),
        };
        let next_seq = seqs
            .iter()
            .copied()
            .chain(live.keys().copied())
            .max()
            .map_or(0, |s| s + 1);
        let n = vectors.len();
        let mut state = State::new(generation, vectors, seqs, graph);
        for node in 0..n as u32 {
            let seq = state.seqs[node as usize];
            match live.remove(&seq) {
                Some(entry) => state.admit(node, entry),
                None => state.graph.mark_deleted(node),
            }
        }
        if !live.is_empty() {
            return Err(corrupt(format!(
                "{} chunks have no vector in {}",
                live.len(),
                vpath.display()
            )));
        }
        let me = EmbeddedIndex {
            dir: dir.to_path_buf(),
            dim: dimensions,
            options,
            fields,
            index,
            reader,
            write: Mutex::new(WriteSide {
                writer,
                vector_file,
                next_seq,
            }),
            state: RwLock::new(state),
        };
        {
            let mut w = me.lock_write();
            me.maintain(&mut w)?;
        }
        Ok(me)
    }

    pub fn dimensions(&self) -> usize {
        self.dim
    }

    /// Live chunks.
    pub fn len(&self) -> usize {
        self.read_state().live()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Documents with at least one chunk.
    pub fn document_count(&self) -> usize {
        self.read_state().by_doc.len()
    }

    pub fn contains_document(&self, document_id: &str) -> bool {
        self.read_state().by_doc.contains_key(document_id)
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves State consistent enough to
        // read: every mutation is completed before the next one starts.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_write(&self) -> MutexGuard<'_, WriteSide> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces every chunk of `document_id` with `chunks` (none: deletes it).
    pub fn upsert_document(&self, document_id: &str, chunks: Vec<Chunk>) -> Result<(), IndexError> {
        self.upsert_documents(vec![(document_id.to_string(), chunks)])
    }

    /// Replaces the chunks of several documents in one commit (much faster
    /// than one commit per document when ingesting many: each commit fsyncs
    /// and starts a tantivy segment). A chunk id that another document holds
    /// moves to the new one. Each chunk's `document_id` is set to its
    /// document's. All or nothing: a refused chunk refuses the whole write.
    pub fn upsert_documents(&self, documents: Vec<(String, Vec<Chunk>)>) -> Result<(), IndexError> {
        // Validate everything before touching anything.
        let mut seen_chunks = HashSet::new();
        let mut seen_docs = HashSet::new();
        let mut prepared: Vec<(String, Vec<Prepared>)> = Vec::with_capacity(documents.len());
        for (document_id, chunks) in documents {
            if document_id.is_empty() {
                return Err(IndexError::Invalid("a document id is empty".into()));
            }
            if !seen_docs.insert(document_id.clone()) {
                return Err(IndexError::Invalid(format!(
                    "document {document_id:?} appears twice in one write"
                )));
            }
            let mut out = Vec::with_capacity(chunks.len());
            for mut chunk in chunks {
                if chunk.chunk_id.is_empty() {
                    return Err(IndexError::Invalid("a chunk id is empty".into()));
                }
                if !seen_chunks.insert(chunk.chunk_id.clone()) {
                    return Err(IndexError::Invalid(format!(
                        "chunk {:?} appears twice in one write",
                        chunk.chunk_id
                    )));
                }
                if chunk.text.len() > MAX_CHUNK_TEXT_BYTES
                    || chunk
                        .return_text
                        .as_ref()
                        .is_some_and(|t| t.len() > MAX_CHUNK_TEXT_BYTES)
                {
                    return Err(IndexError::Invalid(format!(
                        "chunk {:?} is longer than {MAX_CHUNK_TEXT_BYTES} bytes",
                        chunk.chunk_id
                    )));
                }
                let v = normalised(&chunk.vector, self.dim)?;
                chunk.document_id = document_id.clone();
                chunk.vector = Vec::new();
                out.push((chunk, v));
            }
            prepared.push((document_id, out));
        }

        let mut w = self.lock_write();
        let first_seq = w.next_seq;
        let total: usize = prepared.iter().map(|(_, c)| c.len()).sum();
        w.next_seq += total as u64;

        // 1. Vectors, durable before the commit that makes them live.
        let start_len = w.vector_file.metadata()?.len();
        let appended = (|| -> std::io::Result<()> {
            let mut buf = Vec::with_capacity(total * record_bytes(self.dim));
            let mut seq = first_seq;
            for (_, chunks) in &prepared {
                for (_, v) in chunks {
                    buf.extend_from_slice(&seq.to_le_bytes());
                    v.iter()
                        .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
                    seq += 1;
                }
            }
            w.vector_file.write_all(&buf)?;
            w.vector_file.sync_data()
        })();
        if let Err(e) = appended {
            // Keep the file aligned with the in-memory arena.
            let _ = w.vector_file.set_len(start_len);
            let _ = w.vector_file.seek(SeekFrom::End(0));
            return Err(e.into());
        }
        let first_node = {
            let mut st = self.write_state();
            let first = st.vectors.len() as u32;
            let mut seq = first_seq;
            for (_, chunks) in &prepared {
                for (_, v) in chunks {
                    st.push_vector(seq, v);
                    seq += 1;
                }
            }
            first
        };

        // 2. Text and ids: delete what is replaced, add, commit.
        let committed = (|| -> tantivy::Result<()> {
            let mut seq = first_seq;
            for (document_id, chunks) in &prepared {
                w.writer
                    .delete_term(Term::from_field_text(self.fields.document_id, document_id));
                for (chunk, _) in chunks {
                    w.writer
                        .delete_term(Term::from_field_text(self.fields.chunk_id, &chunk.chunk_id));
                    w.writer.add_document(self.doc_for(seq, chunk))?;
                    seq += 1;
                }
            }
            w.writer.commit()?;
            Ok(())
        })();
        if let Err(e) = committed {
            let _ = w.writer.rollback();
            return Err(backend(e));
        }

        // 3. The in-memory side, together with the reader so searches see one
        //    consistent version.
        // The commit stands whatever happens now, so the state follows it
        // even if the reader fails to reload (that error is still reported).
        let reloaded = {
            let mut st = self.write_state();
            let reloaded = self.reader.reload();
            let mut node = first_node;
            let mut seq = first_seq;
            for (document_id, chunks) in prepared {
                let old = st.by_doc.get(&document_id).cloned().unwrap_or_default();
                for n in old {
                    st.retire(n);
                }
                for (chunk, _) in chunks {
                    if let Some(&n) = st.by_chunk.get(&chunk.chunk_id) {
                        st.retire(n);
                    }
                    st.admit(
                        node,
                        Entry {
                            seq,
                            chunk_id: chunk.chunk_id,
                            document_id: document_id.clone(),
                            metadata: chunk.metadata,
                        },
                    );
                    node += 1;
                    seq += 1;
                }
            }
            reloaded
        };
        reloaded.map_err(backend)?;
        self.maintain(&mut w)
    }

    /// Deletes every chunk of a document; returns how many there were.
    pub fn delete_document(&self, document_id: &str) -> Result<usize, IndexError> {
        let mut w = self.lock_write();
        let count = self
            .read_state()
            .by_doc
            .get(document_id)
            .map_or(0, Vec::len);
        if count == 0 {
            return Ok(0);
        }
        w.writer
            .delete_term(Term::from_field_text(self.fields.document_id, document_id));
        if let Err(e) = w.writer.commit() {
            let _ = w.writer.rollback();
            return Err(backend(e));
        }
        let reloaded = {
            let mut st = self.write_state();
            let reloaded = self.reader.reload();
            let nodes = st.by_doc.get(document_id).cloned().unwrap_or_default();
            for n in nodes {
                st.retire(n);
            }
            reloaded
        };
        reloaded.map_err(backend)?;
        self.maintain(&mut w)?;
        Ok(count)
    }

    /// Writes the graph snapshot now (it is also written as the graph grows
    /// and when the index is dropped), so the next open need not re-insert.
    pub fn flush(&self) -> Result<(), IndexError> {
        let _w = self.lock_write();
        self.save_graph()
    }

    fn save_graph(&self) -> Result<(), IndexError> {
        let st = self.read_state();
        if st.unsaved == 0 {
            return Ok(());
        }
        write_atomically(&graph_path(&self.dir, st.generation), |w| {
            st.graph.write_to(w)
        })?;
        drop(st);
        self.write_state().unsaved = 0;
        Ok(())
    }

    /// Compacts when dead vectors outnumber live ones, and snapshots the graph
    /// when enough of it is unsaved. Runs with the write lock held.
    fn maintain(&self, w: &mut WriteSide) -> Result<(), IndexError> {
        let (dead, live, unsaved, present) = {
            let st = self.read_state();
            (
                st.vectors.len() - st.live(),
                st.live(),
                st.unsaved,
                st.graph.present(),
            )
        };
        if dead >= 1_000 && dead > live {
            return self.compact_locked(w);
        }
        // At most an eighth of the graph is re-inserted at the next open;
        // saving more often would rewrite the whole graph every few batches.
        if unsaved >= 50_000 || (unsaved > 0 && unsaved * 8 >= present) {
            self.save_graph()?;
        }
        Ok(())
    }

    /// Rewrites the vectors without dead ones and rebuilds the graph. Searches
    /// go on meanwhile (on the old graph); writes wait.
    pub fn compact(&self) -> Result<(), IndexError> {
        let mut w = self.lock_write();
        self.compact_locked(&mut w)
    }

    fn compact_locked(&self, w: &mut WriteSide) -> Result<(), IndexError> {
        let next = {
            let st = self.read_state();
            let generation = st.generation + 1;
            let mut vectors = Vectors::new(self.dim);
            let mut seqs = Vec::with_capacity(st.live());
            let mut entries = Vec::with_capacity(st.live());
            for (node, entry) in st.entries.iter().enumerate() {
                if let Some(e) = entry {
                    vectors.push(st.vectors.get(node as u32));
                    seqs.push(st.seqs[node]);
                    entries.push(e.clone());
                }
            }
            let vpath = vector_path(&self.dir, generation);
            write_atomically(&vpath, |f| {
                f.write_all(VECTOR_MAGIC)?;
                f.write_all(&(self.dim as u32).to_le_bytes())?;
                for (i, seq) in seqs.iter().enumerate() {
                    f.write_all(&seq.to_le_bytes())?;
                    for x in vectors.get(i as u32) {
                        f.write_all(&x.to_le_bytes())?;
                    }
                }
                Ok(())
            })?;
            let mut fresh = State::new(generation, vectors, seqs, Hnsw::new());
            for (node, e) in entries.into_iter().enumerate() {
                fresh.admit(node as u32, e);
            }
            write_atomically(&graph_path(&self.dir, generation), |f| {
                fresh.graph.write_to(f)
            })?;
            fresh.unsaved = 0;
            fresh
        };
        let vector_file = open_vector_file(
            &vector_path(&self.dir, next.generation),
            self.dim,
            next.vectors.len(),
        )?;
        // The switch: from here the new generation is the index.
        write_atomically(&self.dir.join("CURRENT"), |f| {
            write!(f, "{}", next.generation)
        })?;
        let old = {
            let mut st = self.write_state();
            let old = st.generation;
            *st = next;
            old
        };
        w.vector_file = vector_file;
        let _ = fs::remove_file(vector_path(&self.dir, old));
        let _ = fs::remove_file(graph_path(&self.dir, old));
        Ok(())
    }

    fn doc_for(&self, seq: u64, chunk: &Chunk) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.seq, seq);
        doc.add_text(f.chunk_id, &chunk.chunk_id);
        doc.add_text(f.document_id, &chunk.document_id);
        doc.add_text(f.text, &chunk.text);
        if let Some(rt) = &chunk.return_text {
            doc.add_text(f.return_text, rt);
        }
        doc.add_text(
            f.metadata,
            Value::Object(chunk.metadata.clone()).to_string(),
        );
        doc
    }

    /// Runs a search. Results satisfy the filter exactly, are ordered by score
    /// (ties by chunk id), and start at `offset`.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, IndexError> {
        let q = normalised(&req.vector, self.dim)?;
        let want = req.checked_want()?;
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        let st = self.read_state();
        let searcher = self.reader.searcher();
        let allowed = |node: u32| -> bool {
            st.entries[node as usize]
                .as_ref()
                .is_some_and(|e| req.filter.as_ref().is_none_or(|f| f.matches(&e.metadata)))
        };
        let ranked: Vec<(u32, f64)> = match req.search_type {
            SearchType::Semantic => self
                .vector_top(&st, &q, want, req.filter.as_ref(), &allowed)
                .into_iter()
                .map(|s| (s.id, semantic_score(s.sim)))
                .collect(),
            SearchType::Hybrid => {
                let k = want.max(HYBRID_CANDIDATES);
                let by_vector = self.vector_top(&st, &q, k, req.filter.as_ref(), &allowed);
                let terms = self.query_terms(&req.text)?;
                let by_text = self.bm25_top(&searcher, &st, &terms, k, &allowed)?;
                let max_bm25 = by_text.first().map_or(0.0, |(_, s)| *s);
                let mut bm25: HashMap<u32, f32> = by_text.iter().copied().collect();
                let missing: Vec<u32> = by_vector
                    .iter()
                    .map(|s| s.id)
                    .filter(|id| !bm25.contains_key(id))
                    .collect();
                if max_bm25 > 0.0 && !missing.is_empty() {
                    for (node, s) in self.bm25_of(&searcher, &st, &terms, &missing)? {
                        bm25.insert(node, s);
                    }
                }
                let mut union: Vec<u32> = by_vector.iter().map(|s| s.id).collect();
                union.extend(
                    by_text
                        .iter()
                        .map(|(n, _)| *n)
                        .filter(|n| !by_vector.iter().any(|s| s.id == *n)),
                );
                union
                    .into_iter()
                    .map(|node| {
                        let sem = semantic_score(dot(&q, st.vectors.get(node)));
                        let kw = if max_bm25 > 0.0 {
                            (bm25.get(&node).copied().unwrap_or(0.0) / max_bm25) as f64
                        } else {
                            0.0
                        };
                        (node, (0.5 * sem + 0.5 * kw.clamp(0.0, 1.0)).clamp(0.0, 1.0))
                    })
                    .collect()
            }
        };
        let mut ranked: Vec<(u32, f64, &Entry)> = ranked
            .into_iter()
            .filter_map(|(n, s)| st.entries[n as usize].as_ref().map(|e| (n, s, e)))
            .collect();
        ranked.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| a.2.chunk_id.cmp(&b.2.chunk_id))
        });
        ranked
            .into_iter()
            .skip(req.offset)
            .take(req.limit)
            .map(|(_, score, e)| self.hit(&searcher, e, score))
            .collect()
    }

    /// The `k` nearest chunks that `allowed` passes, nearest first.
    fn vector_top(
        &self,
        st: &State,
        q: &[f32],
        k: usize,
        filter: Option<&Filter>,
        allowed: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let filtered = filter.is_some();
        let live = st.live();
        let exact = |st: &State| -> Vec<Scored> {
            // The filter's columns, found once for the whole scan.
            let mut keys = filter.map(Filter::keys).unwrap_or_default();
            keys.sort_unstable();
            keys.dedup();
            let columns: Vec<(&str, Option<&Vec<Value>>)> =
                keys.into_iter().map(|k| (k, st.columns.get(k))).collect();
            let passes = |n: u32| {
                st.entries[n as usize].is_some()
                    && filter.is_none_or(|f| {
                        f.matches_with(&|key| {
                            columns
                                .iter()
                                .find(|(k, _)| *k == key)
                                .and_then(|(_, c)| *c)
                                .and_then(|c| c.get(n as usize))
                        })
                    })
            };
            let mut all: Vec<Scored> = (0..st.vectors.len() as u32)
                .filter(|&n| passes(n))
                .map(|n| Scored {
                    sim: dot(q, st.vectors.get(n)),
                    id: n,
                })
                .collect();
            top_k(&mut all, k, st)
        };
        if live <= self.options.exact_below {
            return exact(st);
        }
        let mut passing = live;
        if filtered {
            // Estimate how many chunks pass from an even sample of the nodes.
            let n = st.vectors.len();
            let step = (n / FILTER_SAMPLE).max(1);
            let (mut seen, mut ok) = (0usize, 0usize);
            for node in (0..n).step_by(step) {
                if st.entries[node].is_some() {
                    seen += 1;
                    ok += usize::from(allowed(node as u32));
                }
            }
            passing = (ok * live).checked_div(seen).unwrap_or(0);
            if passing <= self.options.exact_below {
                return exact(st);
            }
        }
        let ef = self.options.ef_search.max(k);
        // A filter that passes a fraction f of chunks makes the walk visit
        // about 1/f times more nodes; past a bound an exact scan is cheaper.
        let max_visits = if filtered {
            50 * ef * live / passing.max(1)
        } else {
            usize::MAX
        };
        let mut found = st.graph.search(&st.vectors, q, ef, allowed, max_visits);
        if found.len() < k.min(passing) {
            return exact(st);
        }
        top_k(&mut found, k, st)
    }

    /// The distinct analysed terms of a query.
    fn query_terms(&self, text: &str) -> Result<Vec<Term>, IndexError> {
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.fields.text)
            .map_err(backend)?;
        let mut stream = analyzer.token_stream(text);
        let mut seen = HashSet::new();
        let mut terms = Vec::new();
        while stream.advance() {
            let t = stream.token().text.clone();
            if terms.len() < MAX_QUERY_TERMS && seen.insert(t.clone()) {
                terms.push(Term::from_field_text(self.fields.text, &t));
            }
        }
        Ok(terms)
    }

    fn text_query(terms: &[Term]) -> BooleanQuery {
        BooleanQuery::new(
            terms
                .iter()
                .map(|t| {
                    let q: Box<dyn Query> =
                        Box::new(TermQuery::new(t.clone(), IndexRecordOption::WithFreqs));
                    (Occur::Should, q)
                })
                .collect(),
        )
    }

    fn node_of(&self, searcher: &tantivy::Searcher, st: &State, addr: DocAddress) -> Option<u32> {
        let seg = searcher.segment_reader(addr.segment_ord);
        let col = seg.fast_fields().u64("seq").ok()?;
        let seq = col.first(addr.doc_id)?;
        st.by_seq.get(&seq).copied()
    }

    /// The `k` best BM25 matches that `allowed` passes, best first. Widens the
    /// tantivy search until `k` pass or none are left, so a filter is exact.
    fn bm25_top(
        &self,
        searcher: &tantivy::Searcher,
        st: &State,
        terms: &[Term],
        k: usize,
        allowed: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let query = Self::text_query(terms);
        let mut limit = k;
        loop {
            let top = searcher
                .search(&query, &TopDocs::with_limit(limit).order_by_score())
                .map_err(backend)?;
            let exhausted = top.len() < limit;
            let mut out: Vec<(u32, f32)> = top
                .into_iter()
                .filter_map(|(score, addr)| self.node_of(searcher, st, addr).map(|n| (n, score)))
                .filter(|(n, _)| allowed(*n))
                .collect();
            if out.len() >= k || exhausted {
                out.sort_by(|a, b| {
                    b.1.total_cmp(&a.1).then_with(|| {
                        let ca = st.entries[a.0 as usize]
                            .as_ref()
                            .map(|e| e.chunk_id.as_str());
                        let cb = st.entries[b.0 as usize]
                            .as_ref()
                            .map(|e| e.chunk_id.as_str());
                        ca.cmp(&cb)
                    })
                });
                out.truncate(k);
                return Ok(out);
            }
            limit = limit.saturating_mul(4);
        }
    }

    /// BM25 scores of particular nodes (those with no query term score 0 and
    /// are left out).
    fn bm25_of(
        &self,
        searcher: &tantivy::Searcher,
        st: &State,
        terms: &[Term],
        nodes: &[u32],
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        let seqs = nodes
            .iter()
            .map(|&n| Term::from_field_u64(self.fields.seq, st.seqs[n as usize]));
        let restrict: Box<dyn Query> =
            Box::new(ConstScoreQuery::new(Box::new(TermSetQuery::new(seqs)), 0.0));
        let text: Box<dyn Query> = Box::new(Self::text_query(terms));
        let query = BooleanQuery::new(vec![(Occur::Must, text), (Occur::Must, restrict)]);
        let top = searcher
            .search(
                &query,
                &TopDocs::with_limit(nodes.len().max(1)).order_by_score(),
            )
            .map_err(backend)?;
        Ok(top
            .into_iter()
            .filter_map(|(score, addr)| self.node_of(searcher, st, addr).map(|n| (n, score)))
            .collect())
    }

    fn hit(&self, searcher: &tantivy::Searcher, e: &Entry, score: f64) -> Result<Hit, IndexError> {
        let q = TermQuery::new(
            Term::from_field_u64(self.fields.seq, e.seq),
            IndexRecordOption::Basic,
        );
        let top = searcher
            .search(&q, &TopDocs::with_limit(1).order_by_score())
            .map_err(backend)?;
        let Some((_, addr)) = top.first() else {
            return Err(IndexError::Corrupt {
                path: self.dir.display().to_string(),
                reason: format!("chunk {:?} is missing from the text index", e.chunk_id),
            });
        };
        let doc: TantivyDocument = searcher.doc(*addr).map_err(backend)?;
        let get = |f: Field| {
            doc.get_first(f)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let text = get(self.fields.return_text)
            .or_else(|| get(self.fields.text))
            .unwrap_or_default();
        Ok(Hit {
            chunk_id: e.chunk_id.clone(),
            document_id: e.document_id.clone(),
            text,
            metadata: e.metadata.clone(),
            score,
        })
    }
}

impl Drop for EmbeddedIndex {
    fn drop(&mut self) {
        // Best effort: an unsaved graph is rebuilt from the vectors at open.
        let _ = self.save_graph();
    }
}

fn entry_from_doc(doc: &TantivyDocument, f: &Fields) -> Option<Entry> {
    let s = |field: Field| {
        doc.get_first(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let metadata = match serde_json::from_str::<Value>(&s(f.metadata)?).ok()? {
        Value::Object(m) => m,
        _ => return None,
    };
    Some(Entry {
        seq: doc.get_first(f.seq).and_then(|v| v.as_u64())?,
        chunk_id: s(f.chunk_id)?,
        document_id: s(f.document_id)?,
        metadata,
    })
}

/// Sorts nearest first (ties by chunk id, so pages are stable) and keeps `k`.
fn top_k(all: &mut Vec<Scored>, k: usize, st: &State) -> Vec<Scored> {
    if k == 0 {
        return Vec::new();
    }
    let chunk = |n: u32| st.entries[n as usize].as_ref().map(|e| e.chunk_id.as_str());
    if all.len() > k {
        // Partition first so the sort touches k items, not all of them; ties
        // at the boundary are settled by the full comparison below.
        let cmp = |a: &Scored, b: &Scored| {
            b.sim
                .total_cmp(&a.sim)
                .then_with(|| chunk(a.id).cmp(&chunk(b.id)))
        };
        all.select_nth_unstable_by(k - 1, cmp);
        all.truncate(k);
        all.sort_by(cmp);
    } else {
        all.sort_by(|a, b| {
            b.sim
                .total_cmp(&a.sim)
                .then_with(|| chunk(a.id).cmp(&chunk(b.id)))
        });
    }
    std::mem::take(all)
}
