//! Object storage for `s3://bucket/key` URIs.
//!
//! One API over two backends, both through the `object_store` crate:
//! - no endpoint configured: bucket `b` is the local directory `<data_dir>/s3/b/`;
//! - an S3-compatible endpoint: path-style, SigV4-signed requests to it.
//!
//! Batch jobs and knowledge bases read their inputs and write their outputs through
//! [`ObjectStorage`], so both see the same buckets.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use time::OffsetDateTime;

/// The largest object [`ObjectStorage::get`] reads into memory unless told otherwise.
pub const DEFAULT_MAX_GET_BYTES: u64 = 1 << 30;

/// An `s3://bucket/key` URI. `key` has no leading `/`; it may be empty or end in `/`, in
/// which case the URI names a prefix rather than an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    /// Parses `s3://bucket`, `s3://bucket/`, `s3://bucket/prefix/` or `s3://bucket/key`.
    ///
    /// The bucket must follow S3's naming rules (3-63 characters of `a-z`, `0-9`, `.` and
    /// `-`, starting and ending with a letter or digit). Keys may not hold empty, `.` or
    /// `..` segments or control characters, so that no key can leave its bucket on disk.
    pub fn parse(uri: &str) -> Result<S3Uri, ObjectError> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| {
            ObjectError::InvalidUri(format!(
                "'{uri}' is not an S3 URI: expected s3://bucket/key"
            ))
        })?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        validate_bucket(bucket).map_err(|why| {
            ObjectError::InvalidUri(format!("'{uri}' has an invalid bucket name: {why}"))
        })?;
        let parsed = S3Uri {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        validate_key(&parsed.key)
            .map_err(|why| ObjectError::InvalidUri(format!("'{uri}' has an invalid key: {why}")))?;
        Ok(parsed)
    }

    /// The URI of `name` inside this one taken as a folder: `s3://b/in` joined with
    /// `x.jsonl` is `s3://b/in/x.jsonl`, as is `s3://b/in/` joined with it.
    pub fn join(&self, name: &str) -> S3Uri {
        let name = name.trim_start_matches('/');
        let key = if self.key.is_empty() || self.key.ends_with('/') {
            format!("{}{name}", self.key)
        } else {
            format!("{}/{name}", self.key)
        };
        S3Uri {
            bucket: self.bucket.clone(),
            key,
        }
    }

    /// Whether the URI names a prefix (empty key or a key ending in `/`).
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    /// The last segment of the key (`x.jsonl` for `s3://b/in/x.jsonl`), empty for a prefix.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or("")
    }

    /// The key as an `object_store` path of one object.
    fn object_path(&self) -> Result<StorePath, ObjectError> {
        if self.is_prefix() {
            return Err(ObjectError::InvalidUri(format!(
                "{self} names a prefix (it ends in '/' or has no key), not an object"
            )));
        }
        self.store_path()
    }

    fn store_path(&self) -> Result<StorePath, ObjectError> {
        // `join` does not validate, so a key can reach here unchecked.
        validate_key(&self.key)
            .map_err(|why| ObjectError::InvalidUri(format!("{self} has an invalid key: {why}")))?;
        StorePath::parse(&self.key)
            .map_err(|e| ObjectError::InvalidUri(format!("{self} has an invalid key: {e}")))
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl std::str::FromStr for S3Uri {
    type Err = ObjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        S3Uri::parse(s)
    }
}

fn validate_bucket(bucket: &str) -> Result<(), &'static str> {
    if bucket.is_empty() {
        return Err("it is empty");
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err("it must be 3 to 63 characters long");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = bucket.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("it must start and end with a letter or digit");
    }
    if bucket.contains("..") {
        return Err("it may not contain '..'");
    }
    Ok(())
}

fn validate_key(key: &str) -> Result<(), String> {
    if key.starts_with('/') {
        return Err("it starts with '/' (write s3://bucket/key, with one slash)".into());
    }
    if key.len() > 1024 {
        return Err("it is longer than 1024 bytes".into());
    }
    let body = key.strip_suffix('/').unwrap_or(key);
    if body.is_empty() {
        return Ok(());
    }
    for segment in body.split('/') {
        match segment {
            "" => return Err("it contains an empty path segment ('//')".into()),
            "." | ".." => return Err(format!("it contains a '{segment}' path segment")),
            _ => {}
        }
        if segment.chars().any(|c| c.is_control()) {
            return Err("it contains a control character".into());
        }
    }
    Ok(())
}

/// Where an S3-compatible server is, and the credentials to sign requests to it with.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    /// Base URL, e.g. `http://127.0.0.1:9000`; `http://` URLs are allowed as given.
    pub url: String,
    pub region: String,
    /// Empty means unsigned requests.
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for S3Endpoint {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Endpoint")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What a HEAD or LIST says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub uri: S3Uri,
    pub size: u64,
    pub e_tag: Option<String>,
    pub last_modified: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    InvalidUri(String),
    #[error("{0}")]
    NoSuchBucket(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{uri} is {size} bytes, more than the {limit} bytes that may be read at once")]
    TooLarge { uri: String, size: u64, limit: u64 },
    #[error("{0}")]
    Backend(String),
}

/// Reads and writes objects by `s3://` URI. Cheap to clone; clones share their stores.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    endpoint: Option<S3Endpoint>,
    max_get_bytes: u64,
    // One store per bucket, made on first use.
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("data_dir", &self.inner.data_dir)
            .field("endpoint", &self.inner.endpoint)
            .field("max_get_bytes", &self.inner.max_get_bytes)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// Buckets are directories under `<data_dir>/s3/` unless `endpoint` names a server.
    pub fn new(data_dir: &Path, endpoint: Option<S3Endpoint>) -> Self {
        Self::with_max_get_bytes(data_dir, endpoint, DEFAULT_MAX_GET_BYTES)
    }

    /// As [`ObjectStorage::new`], with another limit on what [`ObjectStorage::get`] reads.
    pub fn with_max_get_bytes(
        data_dir: &Path,
        endpoint: Option<S3Endpoint>,
        max_get_bytes: u64,
    ) -> Self {
        ObjectStorage {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                endpoint,
                max_get_bytes,
                stores: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The S3 endpoint, or `None` when buckets are local directories.
    pub fn endpoint(&self) -> Option<&S3Endpoint> {
        self.inner.endpoint.as_ref()
    }

    /// The directory that holds bucket `bucket` when there is no endpoint.
    pub fn local_bucket_dir(&self, bucket: &str) -> PathBuf {
        self.inner.data_dir.join("s3").join(bucket)
    }

    /// The whole object, if it is at most the size limit (1 GiB unless set otherwise).
    pub async fn get(&self, uri: &S3Uri) -> Result<Bytes, ObjectError> {
        let path = self.object_path(uri)?;
        let store = self.store(&uri.bucket).await?;
        let result = match store.get(&path).await {
            Ok(r) => r,
            Err(e) => return Err(self.map_err(&store, uri, "read", e).await),
        };
        let limit = self.inner.max_get_bytes;
        if result.meta.size > limit {
            return Err(ObjectError::TooLarge {
                uri: uri.to_string(),
                size: result.meta.size,
                limit,
            });
        }
        match result.bytes().await {
            Ok(b) => Ok(b),
            Err(e) => Err(self.map_err(&store, uri, "read", e).await),
        }
    }

    /// Streams the object into `file` (created or truncated), for objects too large to
    /// hold in memory (model weights). Returns the bytes written.
    pub async fn download(&self, uri: &S3Uri, file: &Path) -> Result<u64, ObjectError> {
        use tokio::io::AsyncWriteExt;
        let path = self.object_path(uri)?;
        let store = self.store(&uri.bucket).await?;
        let result = match store.get(&path).await {
            Ok(r) => r,
            Err(e) => return Err(self.map_err(&store, uri, "read", e).await),
        };
        let local = |e: std::io::Error| ObjectError::Backend(format!("{}: {e}", file.display()));
        let mut out = tokio::fs::File::create(file).await.map_err(local)?;
        let mut stream = result.into_stream();
        let mut written = 0u64;
        loop {
            match stream.try_next().await {
                Ok(Some(chunk)) => {
                    out.write_all(&chunk).await.map_err(local)?;
                    written += chunk.len() as u64;
                }
                Ok(None) => break,
                Err(e) => return Err(self.map_err(&store, uri, "read", e).await),
            }
        }
        out.flush().await.map_err(local)?;
        Ok(written)
    }

    /// Writes the object whole, replacing any object at that key.
    pub async fn put(&self, uri: &S3Uri, body: Bytes) -> Result<(), ObjectError> {
        let path = self.object_path(uri)?;
        let store = self.store(&uri.bucket).await?;
        match store.put(&path, PutPayload::from(body)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.map_err(&store, uri, "write", e).await),
        }
    }

    pub async fn head(&self, uri: &S3Uri) -> Result<ObjectMeta, ObjectError> {
        let path = self.object_path(uri)?;
        let store = self.store(&uri.bucket).await?;
        match store.head(&path).await {
            Ok(m) => Ok(meta(&uri.bucket, m)),
            Err(e) => Err(self.map_err(&store, uri, "read", e).await),
        }
    }

    /// Whether the object exists (a missing bucket is still an error).
    pub async fn exists(&self, uri: &S3Uri) -> Result<bool, ObjectError> {
        match self.head(uri).await {
            Ok(_) => Ok(true),
            Err(ObjectError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every object under the prefix (recursive), sorted by key.
    ///
    /// As in S3, the prefix is a string prefix: `s3://b/data/in` lists `data/input.jsonl`
    /// and `data/in/x`, and `s3://b/data/in/` only the latter.
    pub async fn list(&self, prefix: &S3Uri) -> Result<Vec<ObjectMeta>, ObjectError> {
        prefix.store_path()?;
        // object_store lists whole path segments, so list the enclosing folder and filter.
        let folder = match prefix.key.rfind('/') {
            Some(i) => &prefix.key[..i],
            None => "",
        };
        let folder_path = StorePath::parse(folder)
            .map_err(|e| ObjectError::InvalidUri(format!("{prefix} has an invalid key: {e}")))?;
        let store = self.store(&prefix.bucket).await?;
        let listed: Result<Vec<_>, _> = store
            .list((!folder.is_empty()).then_some(&folder_path))
            .try_collect()
            .await;
        let listed = match listed {
            Ok(l) => l,
            Err(e) => return Err(self.map_err(&store, prefix, "list", e).await),
        };
        let mut out: Vec<ObjectMeta> = listed
            .into_iter()
            .filter(|m| m.location.as_ref().starts_with(prefix.key.as_str()))
            .map(|m| meta(&prefix.bucket, m))
            .collect();
        out.sort_by(|a, b| a.uri.key.cmp(&b.uri.key));
        Ok(out)
    }

    /// Deletes the object. As in S3, deleting a key that does not exist succeeds.
    pub async fn delete(&self, uri: &S3Uri) -> Result<(), ObjectError> {
        let path = self.object_path(uri)?;
        let store = self.store(&uri.bucket).await?;
        match store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) => match self.map_err(&store, uri, "delete", e).await {
                ObjectError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    fn object_path(&self, uri: &S3Uri) -> Result<StorePath, ObjectError> {
        let path = uri.object_path()?;
        if self.inner.endpoint.is_none() {
            // LocalFileSystem stages writes as `<name>#<n>` and hides such files.
            if let Some((_, n)) = uri.file_name().rsplit_once('#') {
                if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ObjectError::InvalidUri(format!(
                        "{uri}: a local bucket cannot hold a key ending in '#<digits>' \
                         (that form is reserved for partial writes)"
                    )));
                }
            }
        }
        Ok(path)
    }

    /// The store for one bucket; for a local bucket, checks that its directory exists.
    async fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, ObjectError> {
        validate_bucket(bucket).map_err(|why| {
            ObjectError::InvalidUri(format!("invalid bucket name '{bucket}': {why}"))
        })?;
        if self.inner.endpoint.is_none() {
            let dir = self.local_bucket_dir(bucket);
            // Checked on every call so that a bucket created while the server runs is seen.
            let is_dir = std::fs::metadata(&dir).map(|m| m.is_dir()).unwrap_or(false);
            if !is_dir {
                return Err(self.no_such_bucket(bucket));
            }
        }
        let mut stores = self
            .inner
            .stores
            .lock()
            .map_err(|_| ObjectError::Backend("object store cache poisoned".into()))?;
        if let Some(s) = stores.get(bucket) {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> = match &self.inner.endpoint {
            None => {
                let dir = self.local_bucket_dir(bucket);
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
                    ObjectError::Backend(format!(
                        "cannot open the local bucket directory {}: {e}",
                        dir.display()
                    ))
                })?;
                // Deleting an object removes the folders it leaves empty, as S3 has none.
                Arc::new(fs.with_automatic_cleanup(true))
            }
            Some(ep) => Arc::new(s3_store(ep, bucket)?),
        };
        stores.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    fn no_such_bucket(&self, bucket: &str) -> ObjectError {
        match &self.inner.endpoint {
            None => ObjectError::NoSuchBucket(format!(
                "bucket '{bucket}' does not exist: buckets are local directories here, \
                 so create {}/ (or configure an S3 endpoint)",
                self.local_bucket_dir(bucket).display()
            )),
            Some(ep) => ObjectError::NoSuchBucket(format!(
                "bucket '{bucket}' does not exist on the S3 endpoint {}: create it there first",
                ep.url
            )),
        }
    }

    async fn map_err(
        &self,
        store: &Arc<dyn ObjectStore>,
        uri: &S3Uri,
        op: &str,
        err: object_store::Error,
    ) -> ObjectError {
        let detail = error_chain(&err);
        // S3 answers carry an error code; object_store maps some statuses to variants and
        // leaves others (list requests, for one) Generic, so the code decides where it can.
        let code = xml_field(&detail, "Code");
        let said = match (&code, xml_field(&detail, "Message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            _ => detail.clone(),
        };
        if code.as_deref() == Some("NoSuchBucket") {
            return self.no_such_bucket(&uri.bucket);
        }
        let local_denied = self.inner.endpoint.is_none()
            && (matches!(err, object_store::Error::PermissionDenied { .. })
                || detail.contains("Permission denied"));
        if local_denied {
            return ObjectError::AccessDenied(format!(
                "cannot {op} {uri}: the server may not access the file under {} ({detail})",
                self.local_bucket_dir(&uri.bucket).display()
            ));
        }
        let denied = matches!(
            err,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || matches!(
            code.as_deref(),
            Some(
                "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken"
            )
        );
        if denied {
            return ObjectError::AccessDenied(format!(
                "access denied to {op} {uri}: check the S3 endpoint's credentials and the \
                 bucket's policy ({said})"
            ));
        }
        match err {
            object_store::Error::NotFound { .. } => {
                // A HEAD answer has no body to tell a missing bucket from a missing key,
                // so ask the bucket itself; listing a missing bucket names it.
                if self.inner.endpoint.is_some() && code.is_none() {
                    let probe = StorePath::from("basalt-bucket-probe");
                    if let Err(e) = store.list_with_delimiter(Some(&probe)).await {
                        let probe_detail = error_chain(&e);
                        if xml_field(&probe_detail, "Code").as_deref() == Some("NoSuchBucket") {
                            return self.no_such_bucket(&uri.bucket);
                        }
                    }
                }
                ObjectError::NotFound(format!("{uri} does not exist"))
            }
            object_store::Error::InvalidPath { .. } => {
                ObjectError::InvalidUri(format!("{uri} cannot be stored: {detail}"))
            }
            _ if code.as_deref() == Some("NoSuchKey") => {
                ObjectError::NotFound(format!("{uri} does not exist"))
            }
            _ => ObjectError::Backend(match &self.inner.endpoint {
                Some(ep) if code.is_none() => format!(
                    "cannot {op} {uri} through the S3 endpoint {}: {detail}",
                    ep.url
                ),
                _ => format!("cannot {op} {uri}: {said}"),
            }),
        }
    }
}

/// The text of the first `<name>...</name>` element, as in an S3 error body.
fn xml_field(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&format!("</{name}>"))?;
    Some(text[start..start + len].to_string())
}

fn s3_store(ep: &S3Endpoint, bucket: &str) -> Result<object_store::aws::AmazonS3, ObjectError> {
    let retry = RetryConfig {
        // The defaults retry for minutes; an unreachable endpoint should fail sooner.
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    };
    let mut builder = AmazonS3Builder::new()
        .with_endpoint(ep.url.trim_end_matches('/'))
        .with_region(&ep.region)
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(ep.url.starts_with("http://"))
        .with_retry(retry);
    if ep.access_key_id.is_empty() {
        // Without keys object_store would look for instance credentials, which an offline
        // server never has.
        builder = builder.with_skip_signature(true);
    } else {
        builder = builder
            .with_access_key_id(&ep.access_key_id)
            .with_secret_access_key(&ep.secret_access_key);
    }
    builder.build().map_err(|e| {
        ObjectError::Backend(format!(
            "cannot use the S3 endpoint {} for bucket '{bucket}': {e}",
            ep.url
        ))
    })
}

fn meta(bucket: &str, m: object_store::ObjectMeta) -> ObjectMeta {
    let nanos = i128::from(m.last_modified.timestamp()) * 1_000_000_000
        + i128::from(m.last_modified.timestamp_subsec_nanos());
    ObjectMeta {
        uri: S3Uri {
            bucket: bucket.to_string(),
            key: m.location.to_string(),
        },
        size: m.size,
        e_tag: m.e_tag,
        last_modified: OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

/// The error and its sources, so that the server's own words (and S3 error codes such as
/// `NoSuchBucket`, which sit in a response body deep in the chain) are kept.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
