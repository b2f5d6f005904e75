//! The vector store behind one knowledge base: the embedded index in the data
//! directory, or PostgreSQL with pgvector.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use basalt_index::{Chunk, EmbeddedIndex, Hit, IndexError, SearchRequest};
use basalt_proto::BedrockError;

use crate::ingestion::index_dir;
use crate::resources::{KnowledgeBase, Storage};

/// The open vector store of each knowledge base, opened on first use.
pub struct VectorStores {
    data_dir: PathBuf,
    open: Mutex<HashMap<String, VectorStore>>,
}

impl VectorStores {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn open(&self, kb: &KnowledgeBase, dimensions: usize) -> Result<VectorStore, BedrockError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| BedrockError::internal("the vector store table is poisoned"))?;
        if let Some(store) = open.get(&kb.knowledge_base_id) {
            return Ok(store.clone());
        }
        let store = match kb.storage()? {
            Storage::Embedded => {
                let dir = index_dir(&self.data_dir, &kb.knowledge_base_id);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    BedrockError::internal(format!("Cannot create {}: {e}", dir.display()))
                })?;
                VectorStore::open_embedded(&dir, dimensions).map_err(|e| {
                    BedrockError::internal(format!(
                        "Cannot open the index of {}: {e}",
                        kb.knowledge_base_id
                    ))
                })?
            }
            Storage::Rds(_) => {
                return Err(BedrockError::validation(
                    "RDS (pgvector) storage is not available in this build.",
                ))
            }
        };
        open.insert(kb.knowledge_base_id.clone(), store.clone());
        Ok(store)
    }

    /// Forgets a deleted knowledge base and removes its embedded index.
    pub fn remove(&self, knowledge_base_id: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(knowledge_base_id);
        }
        let dir = index_dir(&self.data_dir, knowledge_base_id);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

#[derive(Clone)]
pub enum VectorStore {
    Embedded(Arc<EmbeddedIndex>),
}

impl VectorStore {
    pub fn open_embedded(dir: &Path, dimensions: usize) -> Result<Self, IndexError> {
        Ok(Self::Embedded(Arc::new(EmbeddedIndex::open(
            dir, dimensions,
        )?)))
    }

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
        }
    }

    pub async fn delete_document(&self, document_id: String) -> Result<(), IndexError> {
        match self {
            Self::Embedded(index) => {
                let index = Arc::clone(index);
                blocking(move || index.delete_document(&document_id).map(|_| ())).await
            }
        }
    }

    pub async fn search(&self, request: SearchRequest) -> Result<Vec<Hit>, IndexError> {
        match self {
            Self::Embedded(index) => {
                let index = Arc::clone(index);
                blocking(move || index.search(&request)).await
            }
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
