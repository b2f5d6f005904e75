//! What an S3 data source holds: its documents, each with the `.metadata.json`
//! sidecar Bedrock reads beside it, and the content hash that tells a re-sync
//! what changed.

use std::collections::BTreeMap;

use basalt_objects::{ObjectError, ObjectStorage, S3Uri};
use sha2::{Digest, Sha256};

use crate::resources::S3Source;

/// Bedrock's limit on one source document.
pub const MAX_DOCUMENT_BYTES: u64 = 50 * 1024 * 1024;
/// Documents one data source may hold (Bedrock's quota is per ingestion job).
pub const MAX_DOCUMENTS: usize = 25_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct SourceDocument {
    pub uri: S3Uri,
    pub size: u64,
    pub sidecar: Option<S3Uri>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    /// Content documents, sorted by key.
    pub documents: Vec<SourceDocument>,
    /// Sidecars found (whether or not their document exists).
    pub metadata_documents: u64,
}

/// Lists the data source: every object under its prefixes, sidecars paired with
/// their documents. Folder markers (keys ending in `/`) are not documents.
pub async fn scan(objects: &ObjectStorage, source: &S3Source) -> Result<Scan, ObjectError> {
    let mut documents: BTreeMap<String, (S3Uri, u64)> = BTreeMap::new();
    let mut sidecars: BTreeMap<String, S3Uri> = BTreeMap::new();
    for root in source.roots() {
        for meta in objects.list(&root).await? {
            if meta.uri.is_prefix() {
                continue;
            }
            let key = meta.uri.key.clone();
            if basalt_documents::is_sidecar(&key) {
                sidecars.insert(key, meta.uri);
            } else {
                documents.insert(key, (meta.uri, meta.size));
            }
        }
    }
    let metadata_documents = sidecars.len() as u64;
    let documents = documents
        .into_iter()
        .map(|(key, (uri, size))| SourceDocument {
            sidecar: sidecars.remove(&basalt_documents::sidecar_name(&key)),
            uri,
            size,
        })
        .collect();
    Ok(Scan {
        documents,
        metadata_documents,
    })
}

/// The hash that decides whether a document changed: its bytes, then its sidecar's.
pub fn content_hash(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}
