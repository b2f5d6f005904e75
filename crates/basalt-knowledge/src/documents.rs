//! The documents API: IngestKnowledgeBaseDocuments, ListKnowledgeBaseDocuments,
//! GetKnowledgeBaseDocuments and DeleteKnowledgeBaseDocuments, for CUSTOM and S3
//! data sources. A request queues its documents in the store (content included)
//! and returns at once with status STARTING; the ingestion loop indexes them, so a
//! restart loses none.

use std::collections::HashMap;

use basalt_objects::S3Uri;
use basalt_proto::BedrockError;
use basalt_store::{Key, StoreError, Write};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::ingestion::{
    document_id, put_state, s3_identifier, Change, DocumentState, Fetched, IngestError, Ingestor,
    DOC_KIND,
};
use crate::resources::{now, DataSource, KnowledgeBase, SourceKind, CURRENT, DS_KIND, KB_KIND};
use crate::source::content_hash;

const PENDING_KIND: &str = "kb-pending-document";
/// Documents one request may carry (botocore: 1 to 10 for ingest).
pub const MAX_DOCUMENTS: usize = 10;
/// Inline content one document may carry.
pub const MAX_INLINE_BYTES: usize = 10 * 1024 * 1024;

/// A queued document: where its content is, and its metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    pub key: String,
    pub identifier: Value,
    /// Base64 of inline content, or absent when it lives in S3.
    pub inline: Option<String>,
    pub content_type: Option<String>,
    pub s3_uri: Option<String>,
    pub attributes: Option<Map<String, Value>>,
    pub metadata_uri: Option<String>,
}

fn invalid(at: &str, what: &str) -> BedrockError {
    BedrockError::validation(format!("{at}: {what}"))
}

fn str_member<'a>(v: &'a Value, at: &str, member: &str) -> Result<&'a str, BedrockError> {
    v.get(member)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{at}.{member}"), "is required"))
}

/// The key and identifier a DocumentIdentifier names on this data source.
pub fn identify(
    identifier: &Value,
    at: &str,
    ds: &DataSource,
) -> Result<(String, Value), BedrockError> {
    let kind = str_member(identifier, at, "dataSourceType")?;
    let expected = match ds.source()? {
        SourceKind::Custom => "CUSTOM",
        SourceKind::S3(_) => "S3",
    };
    if kind != expected {
        return Err(invalid(
            &format!("{at}.dataSourceType"),
            &format!(
                "data source {} is {expected}, not {kind}",
                ds.data_source_id
            ),
        ));
    }
    match kind {
        "CUSTOM" => {
            let id = identifier
                .get("custom")
                .and_then(|c| c.get("id"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.custom.id"), "is required"))?;
            if id.is_empty() || id.len() > 2048 {
                return Err(invalid(
                    &format!("{at}.custom.id"),
                    "must have length between 1 and 2048",
                ));
            }
            Ok((
                id.to_string(),
                json!({"dataSourceType": "CUSTOM", "custom": {"id": id}}),
            ))
        }
        _ => {
            let uri = identifier
                .get("s3")
                .and_then(|c| c.get("uri"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{at}.s3.uri"), "is required"))?;
            let parsed =
                S3Uri::parse(uri).map_err(|e| invalid(&format!("{at}.s3.uri"), &e.to_string()))?;
            Ok((parsed.to_string(), s3_identifier(&parsed)))
        }
    }
}

/// Inline attributes: `[{key, value: {type, stringValue | numberValue | ...}}]`.
fn inline_attributes(list: &Value, at: &str) -> Result<Map<String, Value>, BedrockError> {
    let items = list
        .as_array()
        .ok_or_else(|| invalid(at, "must be a list"))?;
    let mut out = Map::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let key = str_member(item, &at, "key")?;
        let value = item
            .get("value")
            .ok_or_else(|| invalid(&format!("{at}.value"), "is required"))?;
        let member = match str_member(value, &format!("{at}.value"), "type")? {
            "STRING" => "stringValue",
            "NUMBER" => "numberValue",
            "BOOLEAN" => "booleanValue",
            "STRING_LIST" => "stringListValue",
            other => {
                return Err(invalid(
                    &format!("{at}.value.type"),
                    &format!("{other} is not one of STRING, NUMBER, BOOLEAN, STRING_LIST"),
                ))
            }
        };
        let v = value
            .get(member)
            .ok_or_else(|| invalid(&format!("{at}.value.{member}"), "is required for this type"))?;
        out.insert(key.to_string(), v.clone());
    }
    Ok(out)
}

/// Reads one KnowledgeBaseDocument of an IngestKnowledgeBaseDocuments request.
pub fn parse_document(doc: &Value, at: &str, ds: &DataSource) -> Result<Pending, BedrockError> {
    let content = doc
        .get("content")
        .ok_or_else(|| invalid(&format!("{at}.content"), "is required"))?;
    let kind = str_member(content, &format!("{at}.content"), "dataSourceType")?;
    let mut pending = match kind {
        "CUSTOM" => {
            let custom = content.get("custom").ok_or_else(|| {
                invalid(&format!("{at}.content.custom"), "is required for CUSTOM")
            })?;
            let cat = format!("{at}.content.custom");
            let id = custom
                .get("customDocumentIdentifier")
                .cloned()
                .ok_or_else(|| {
                    invalid(&format!("{cat}.customDocumentIdentifier"), "is required")
                })?;
            let (key, identifier) = identify(
                &json!({"dataSourceType": "CUSTOM", "custom": id}),
                &format!("{cat}.customDocumentIdentifier"),
                ds,
            )?;
            let mut p = Pending {
                key,
                identifier,
                inline: None,
                content_type: None,
                s3_uri: None,
                attributes: None,
                metadata_uri: None,
            };
            match str_member(custom, &cat, "sourceType")? {
                "IN_LINE" => {
                    let inline = custom.get("inlineContent").ok_or_else(|| {
                        invalid(&format!("{cat}.inlineContent"), "is required for IN_LINE")
                    })?;
                    let iat = format!("{cat}.inlineContent");
                    match str_member(inline, &iat, "type")? {
                        "TEXT" => {
                            let text = inline
                                .get("textContent")
                                .and_then(|t| t.get("data"))
                                .and_then(Value::as_str)
                                .ok_or_else(|| {
                                    invalid(
                                        &format!("{iat}.textContent.data"),
                                        "is required for TEXT",
                                    )
                                })?;
                            p.inline = Some(STANDARD.encode(text));
                            p.content_type = Some("text/plain".into());
                        }
                        "BYTE" => {
                            let bytes = inline.get("byteContent").ok_or_else(|| {
                                invalid(&format!("{iat}.byteContent"), "is required for BYTE")
                            })?;
                            let data = str_member(bytes, &format!("{iat}.byteContent"), "data")?;
                            STANDARD.decode(data).map_err(|_| {
                                invalid(&format!("{iat}.byteContent.data"), "is not base64")
                            })?;
                            p.inline = Some(data.to_string());
                            p.content_type = Some(
                                str_member(bytes, &format!("{iat}.byteContent"), "mimeType")?
                                    .to_string(),
                            );
                        }
                        other => {
                            return Err(invalid(
                                &format!("{iat}.type"),
                                &format!("{other} is not TEXT or BYTE"),
                            ))
                        }
                    }
                    if p.inline
                        .as_ref()
                        .is_some_and(|d| d.len() / 4 * 3 > MAX_INLINE_BYTES)
                    {
                        return Err(invalid(
                            &iat,
                            &format!("is larger than {MAX_INLINE_BYTES} bytes"),
                        ));
                    }
                }
                "S3_LOCATION" => {
                    let uri = custom
                        .get("s3Location")
                        .and_then(|l| l.get("uri"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            invalid(
                                &format!("{cat}.s3Location.uri"),
                                "is required for S3_LOCATION",
                            )
                        })?;
                    S3Uri::parse(uri)
                        .map_err(|e| invalid(&format!("{cat}.s3Location.uri"), &e.to_string()))?;
                    p.s3_uri = Some(uri.to_string());
                }
                other => {
                    return Err(invalid(
                        &format!("{cat}.sourceType"),
                        &format!("{other} is not IN_LINE or S3_LOCATION"),
                    ))
                }
            }
            p
        }
        "S3" => {
            let uri = content
                .get("s3")
                .and_then(|s| s.get("s3Location"))
                .and_then(|l| l.get("uri"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid(
                        &format!("{at}.content.s3.s3Location.uri"),
                        "is required for S3",
                    )
                })?;
            let (key, identifier) = identify(
                &json!({"dataSourceType": "S3", "s3": {"uri": uri}}),
                &format!("{at}.content.s3.s3Location"),
                ds,
            )?;
            Pending {
                s3_uri: Some(key.clone()),
                key,
                identifier,
                inline: None,
                content_type: None,
                attributes: None,
                metadata_uri: None,
            }
        }
        other => {
            return Err(invalid(
                &format!("{at}.content.dataSourceType"),
                &format!("{other} is not CUSTOM or S3"),
            ))
        }
    };
    if let Some(metadata) = doc.get("metadata") {
        let mat = format!("{at}.metadata");
        match str_member(metadata, &mat, "type")? {
            "IN_LINE_ATTRIBUTE" => {
                let list = metadata.get("inlineAttributes").ok_or_else(|| {
                    invalid(
                        &format!("{mat}.inlineAttributes"),
                        "is required for IN_LINE_ATTRIBUTE",
                    )
                })?;
                pending.attributes =
                    Some(inline_attributes(list, &format!("{mat}.inlineAttributes"))?);
            }
            "S3_LOCATION" => {
                let uri = metadata
                    .get("s3Location")
                    .and_then(|l| l.get("uri"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid(
                            &format!("{mat}.s3Location.uri"),
                            "is required for S3_LOCATION",
                        )
                    })?;
                S3Uri::parse(uri)
                    .map_err(|e| invalid(&format!("{mat}.s3Location.uri"), &e.to_string()))?;
                pending.metadata_uri = Some(uri.to_string());
            }
            other => {
                return Err(invalid(
                    &format!("{mat}.type"),
                    &format!("{other} is not IN_LINE_ATTRIBUTE or S3_LOCATION"),
                ))
            }
        }
    }
    Ok(pending)
}

fn state_key<'a>(scope: &'a str, key: &'a str) -> Key<'a> {
    Key {
        kind: DOC_KIND,
        id: scope,
        version: key,
    }
}

fn pending_key<'a>(scope: &'a str, key: &'a str) -> Key<'a> {
    Key {
        kind: PENDING_KIND,
        id: scope,
        version: key,
    }
}

fn starting(identifier: &Value, status: &str) -> DocumentState {
    DocumentState {
        identifier: identifier.clone(),
        status: status.into(),
        status_reason: None,
        content_hash: String::new(),
        metadata_hash: String::new(),
        job: None,
        updated_at: now(),
    }
}

impl Ingestor {
    /// Queues the documents and returns their details (status STARTING).
    pub fn queue_documents(
        &self,
        ds: &DataSource,
        docs: Vec<Pending>,
    ) -> Result<Vec<Value>, StoreError> {
        let scope = ds.scope();
        let prior: HashMap<String, DocumentState> = self
            .store()
            .versions(DOC_KIND, &scope)?
            .into_iter()
            .collect();
        let states: Vec<DocumentState> = docs
            .iter()
            .map(|d| {
                let mut s = starting(&d.identifier, "STARTING");
                // Keep the hashes, so that an unchanged document still counts as unchanged.
                if let Some(p) = prior.get(&d.key) {
                    s.content_hash = p.content_hash.clone();
                    s.metadata_hash = p.metadata_hash.clone();
                }
                s
            })
            .collect();
        let mut writes = Vec::new();
        for (doc, state) in docs.iter().zip(&states) {
            writes.push(put_state(&scope, &doc.key, state));
            writes.push(Write::Put(
                pending_key(&scope, &doc.key),
                serde_json::to_value(doc).unwrap_or(Value::Null),
            ));
        }
        self.store().apply(&writes)?;
        self.wake.notify_one();
        Ok(states.iter().map(|s| s.detail(ds)).collect())
    }

    /// Every document the data source holds, with its status.
    pub fn document_details(&self, ds: &DataSource) -> Result<Vec<Value>, StoreError> {
        Ok(self
            .store()
            .versions::<DocumentState>(DOC_KIND, &ds.scope())?
            .into_iter()
            .map(|(_, s)| s.detail(ds))
            .collect())
    }

    /// The details of the named documents; unknown ones come back NOT_FOUND.
    pub fn documents_by_key(
        &self,
        ds: &DataSource,
        keys: &[(String, Value)],
    ) -> Result<Vec<Value>, StoreError> {
        let scope = ds.scope();
        keys.iter()
            .map(|(key, identifier)| {
                Ok(
                    match self.store().get::<DocumentState>(&state_key(&scope, key))? {
                        Some(s) => s.detail(ds),
                        None => starting(identifier, "NOT_FOUND").detail(ds),
                    },
                )
            })
            .collect()
    }

    /// Removes the named documents from the index and the store.
    pub async fn delete_documents(
        &self,
        kb: &KnowledgeBase,
        ds: &DataSource,
        keys: &[(String, Value)],
    ) -> Result<Vec<Value>, IngestError> {
        let scope = ds.scope();
        let (_, vectors) = self.loaded_now(kb).await?;
        let mut details = Vec::new();
        for (key, identifier) in keys {
            let known = self
                .store()
                .get::<DocumentState>(&state_key(&scope, key))?
                .is_some();
            if !known {
                details.push(starting(identifier, "NOT_FOUND").detail(ds));
                continue;
            }
            vectors
                .delete_document(document_id(&ds.data_source_id, key))
                .await
                .map_err(|e| BedrockError::internal(format!("The index failed: {e}")))?;
            self.store().apply(&[
                Write::Delete(state_key(&scope, key)),
                Write::Delete(pending_key(&scope, key)),
            ])?;
            details.push(starting(identifier, "DELETE_IN_PROGRESS").detail(ds));
        }
        Ok(details)
    }

    /// Indexes queued documents, one data source at a time; true when it did any.
    pub(crate) async fn process_pending(&self) -> Result<bool, IngestError> {
        let queued: Vec<(String, String, Pending)> = self.store().all(PENDING_KIND)?;
        let Some((scope, _, _)) = queued.first() else {
            return Ok(false);
        };
        let scope = scope.clone();
        let batch: Vec<Pending> = queued
            .into_iter()
            .filter(|(s, _, _)| *s == scope)
            .map(|(_, _, p)| p)
            .take(16)
            .collect();
        let (kb_id, ds_id) = scope.split_once('/').unwrap_or((&scope, ""));
        let kb: Option<KnowledgeBase> = self.store().get(&Key {
            kind: KB_KIND,
            id: kb_id,
            version: CURRENT,
        })?;
        let ds: Option<DataSource> = self.store().get(&Key {
            kind: DS_KIND,
            id: &scope,
            version: CURRENT,
        })?;
        let (Some(kb), Some(ds)) = (kb, ds) else {
            // The knowledge base or data source went away: drop its queue.
            let writes: Vec<Write<'_>> = batch
                .iter()
                .map(|p| Write::Delete(pending_key(&scope, &p.key)))
                .collect();
            self.store().apply(&writes)?;
            tracing::info!(data_source = %ds_id, "dropped queued documents of a deleted data source");
            return Ok(true);
        };
        let Some((embedder, vectors)) = self.loaded(&kb).await? else {
            // Still loading; the loop comes back.
            return Ok(false);
        };
        let mut fetched = Vec::new();
        let mut failed = Vec::new();
        for p in &batch {
            match self.read_pending(&scope, p).await {
                Ok(Some(f)) => fetched.push(f),
                Ok(None) => {
                    // Unchanged: back to INDEXED without work.
                    let mut s = self
                        .store()
                        .get::<DocumentState>(&state_key(&scope, &p.key))?
                        .unwrap_or_else(|| starting(&p.identifier, "INDEXED"));
                    s.status = "INDEXED".into();
                    s.updated_at = now();
                    self.store().apply(&[
                        put_state(&scope, &p.key, &s),
                        Write::Delete(pending_key(&scope, &p.key)),
                    ])?;
                }
                Err(reason) => failed.push((p, reason)),
            }
        }
        for (p, reason) in failed {
            let mut s = starting(&p.identifier, "FAILED");
            s.status_reason = Some(reason);
            self.store().apply(&[
                put_state(&scope, &p.key, &s),
                Write::Delete(pending_key(&scope, &p.key)),
            ])?;
        }
        for (doc, outcome) in self.index_batch(&ds, &vectors, &embedder, fetched).await? {
            let state = match outcome {
                Ok(()) => doc.state("INDEXED", None, None),
                Err(reason) => doc.state("FAILED", Some(reason), None),
            };
            self.store().apply(&[
                put_state(&scope, &doc.key, &state),
                Write::Delete(pending_key(&scope, &doc.key)),
            ])?;
        }
        Ok(true)
    }

    /// The queued document's bytes and metadata, or `None` when they hash the same as
    /// what is indexed.
    async fn read_pending(&self, scope: &str, p: &Pending) -> Result<Option<Fetched>, String> {
        let content = match (&p.inline, &p.s3_uri) {
            (Some(data), _) => STANDARD.decode(data).map_err(|e| e.to_string())?,
            (None, Some(uri)) => {
                let parsed = S3Uri::parse(uri).map_err(|e| e.to_string())?;
                self.objects()
                    .get(&parsed)
                    .await
                    .map_err(|e| format!("{uri}: {e}"))?
                    .to_vec()
            }
            (None, None) => return Err("the document has no content".into()),
        };
        let mut attributes = p.attributes.clone();
        if let Some(uri) = &p.metadata_uri {
            let parsed = S3Uri::parse(uri).map_err(|e| e.to_string())?;
            let bytes = self
                .objects()
                .get(&parsed)
                .await
                .map_err(|e| format!("{uri}: {e}"))?;
            attributes =
                Some(basalt_documents::parse_sidecar(&bytes).map_err(|e| format!("{uri}: {e}"))?);
        }
        let content_hash = content_hash(&content);
        let metadata_hash = attributes
            .as_ref()
            .map(|a| crate::source::content_hash(Value::Object(a.clone()).to_string().as_bytes()))
            .unwrap_or_default();
        let prior = self
            .store()
            .get::<DocumentState>(&state_key(scope, &p.key))
            .map_err(|e| e.to_string())?;
        let change = match prior {
            Some(s) if !s.content_hash.is_empty() && s.content_hash == content_hash => {
                if s.metadata_hash == metadata_hash {
                    return Ok(None);
                }
                Change::MetadataOnly
            }
            Some(s) if !s.content_hash.is_empty() => Change::Modified,
            _ => Change::New,
        };
        let name = match (&p.s3_uri, &p.content_type) {
            (Some(uri), None) => uri.rsplit('/').next().unwrap_or(uri).to_string(),
            _ => p.key.clone(),
        };
        Ok(Some(Fetched {
            key: p.key.clone(),
            identifier: p.identifier.clone(),
            name,
            // The key is the S3 URI of an S3 document and the id of a custom one: what
            // retrieval reports as its location.
            source_uri: p.key.clone(),
            content,
            content_type: p.content_type.clone(),
            sidecar: None,
            attributes,
            content_hash,
            metadata_hash,
            change,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::DataSourceRequest;

    fn custom_ds() -> DataSource {
        DataSource::new(
            "KB00000001",
            DataSourceRequest {
                client_token: None,
                name: "custom".into(),
                description: None,
                data_source_configuration: json!({"type": "CUSTOM"}),
                data_deletion_policy: None,
                server_side_encryption_configuration: None,
                vector_ingestion_configuration: None,
            },
        )
    }

    #[test]
    fn inline_text_documents_parse_with_attributes() {
        let doc = json!({
            "content": {"dataSourceType": "CUSTOM", "custom": {
                "customDocumentIdentifier": {"id": "doc-1"}, "sourceType": "IN_LINE",
                "inlineContent": {"type": "TEXT", "textContent": {"data": "hello"}}}},
            "metadata": {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": [
                {"key": "year", "value": {"type": "NUMBER", "numberValue": 2024}},
                {"key": "tags", "value": {"type": "STRING_LIST", "stringListValue": ["a"]}}]}
        });
        let p = parse_document(&doc, "documents[0]", &custom_ds()).expect("parses");
        assert_eq!(p.key, "doc-1");
        assert_eq!(p.inline.as_deref(), Some(STANDARD.encode("hello").as_str()));
        let attrs = p.attributes.expect("attributes");
        assert_eq!(attrs["year"], json!(2024));
        assert_eq!(attrs["tags"], json!(["a"]));
    }

    #[test]
    fn mismatched_source_types_and_missing_members_name_the_path() {
        let doc =
            json!({"content": {"dataSourceType": "S3", "s3": {"s3Location": {"uri": "s3://b/k"}}}});
        let e = parse_document(&doc, "documents[0]", &custom_ds()).expect_err("refused");
        assert!(
            e.message
                .contains("documents[0].content.s3.s3Location.dataSourceType"),
            "{}",
            e.message
        );
        let doc = json!({"content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": "d"}, "sourceType": "IN_LINE"}}});
        let e = parse_document(&doc, "documents[1]", &custom_ds()).expect_err("refused");
        assert!(
            e.message
                .contains("documents[1].content.custom.inlineContent"),
            "{}",
            e.message
        );
    }
}
