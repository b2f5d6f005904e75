//! Delivery off the request path: records queue on a bounded channel and one task
//! writes them out every [`FLUSH_INTERVAL`] (sooner when [`MAX_BATCH`] are waiting),
//! and once more at shutdown. S3 destinations get one gzipped JSON-lines object per
//! (bucket, prefix, region, hour) and flush; CloudWatch log groups become appended
//! JSON-lines files in the data directory. A failed write is counted and warned, and
//! its records are dropped: logging never holds up or fails an invocation.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use basalt_objects::{ObjectStorage, S3Uri};
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::record;
use crate::metrics::InvocationLogCounters;

pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Records buffered before a flush is forced.
pub const MAX_BATCH: usize = 1_000;
/// Records that may wait for the writer before new ones are dropped (and counted).
pub const QUEUE_DEPTH: usize = 10_000;

/// One record, serialised, with where it goes.
#[derive(Debug)]
pub struct Entry {
    pub at: OffsetDateTime,
    /// The account whose configuration sent it (the S3 folder names it).
    pub account: String,
    pub region: String,
    pub line: String,
    /// (bucket, key prefix)
    pub s3: Option<(String, String)>,
    pub log_group: Option<String>,
}

pub enum Command {
    Record(Entry),
    Flush(oneshot::Sender<()>),
}

pub struct Writer {
    pub objects: ObjectStorage,
    pub data_dir: PathBuf,
    pub counters: InvocationLogCounters,
}

impl Writer {
    pub async fn run(self, mut rx: mpsc::Receiver<Command>) {
        let mut buffer: Vec<Entry> = Vec::new();
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Record(entry)) => {
                        buffer.push(entry);
                        if buffer.len() >= MAX_BATCH {
                            self.flush(std::mem::take(&mut buffer)).await;
                        }
                    }
                    Some(Command::Flush(done)) => {
                        self.flush(std::mem::take(&mut buffer)).await;
                        let _ = done.send(());
                    }
                    None => {
                        self.flush(std::mem::take(&mut buffer)).await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    if !buffer.is_empty() {
                        self.flush(std::mem::take(&mut buffer)).await;
                    }
                }
            }
        }
    }

    async fn flush(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut objects: BTreeMap<String, (String, Vec<&str>)> = BTreeMap::new();
        let mut files: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
        for e in &entries {
            if let Some((bucket, prefix)) = &e.s3 {
                let folder = record::s3_folder(prefix, &e.account, &e.region, e.at);
                objects
                    .entry(format!("{bucket}/{folder}"))
                    .or_insert_with(|| (bucket.clone(), Vec::new()))
                    .1
                    .push(&e.line);
            }
            if let Some(group) = &e.log_group {
                files
                    .entry(record::cloudwatch_file(&self.data_dir, group, e.at))
                    .or_default()
                    .push(&e.line);
            }
        }
        for (place, (bucket, lines)) in objects {
            let folder = &place[bucket.len() + 1..];
            self.put_object(&bucket, folder, &lines).await;
        }
        for (path, lines) in files {
            self.append(path, &lines).await;
        }
    }

    async fn put_object(&self, bucket: &str, folder: &str, lines: &[&str]) {
        let n = lines.len() as u64;
        let tag = hex::encode(rand::random::<[u8; 8]>());
        let uri = S3Uri {
            bucket: bucket.to_string(),
            key: format!(
                "{folder}{}",
                record::s3_object_name(OffsetDateTime::now_utc(), &tag)
            ),
        };
        let body = match gzip_lines(lines) {
            Ok(b) => b,
            Err(e) => {
                self.counters.failed("s3", n);
                tracing::warn!(error = %e, records = n, "could not compress invocation log records");
                return;
            }
        };
        match self.objects.put(&uri, body).await {
            Ok(()) => self.counters.delivered("s3", n),
            Err(e) => {
                self.counters.failed("s3", n);
                tracing::warn!(%uri, error = %e, records = n, "could not deliver invocation log records to S3");
            }
        }
    }

    async fn append(&self, path: PathBuf, lines: &[&str]) {
        let n = lines.len() as u64;
        let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        let shown = path.display().to_string();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            // One write call per batch, so concurrent readers see whole lines.
            f.write_all(text.as_bytes())
        })
        .await;
        match written {
            Ok(Ok(())) => self.counters.delivered("cloudwatch", n),
            Ok(Err(e)) => {
                self.counters.failed("cloudwatch", n);
                tracing::warn!(path = %shown, error = %e, records = n, "could not write invocation log records");
            }
            Err(e) => {
                self.counters.failed("cloudwatch", n);
                tracing::warn!(path = %shown, error = %e, records = n, "invocation log writer task failed");
            }
        }
    }
}

/// JSON lines, gzipped.
pub fn gzip_lines(lines: &[&str]) -> std::io::Result<Bytes> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for l in lines {
        gz.write_all(l.as_bytes())?;
        gz.write_all(b"\n")?;
    }
    Ok(Bytes::from(gz.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn objects_are_gzipped_json_lines() {
        let body = gzip_lines(&["{\"a\":1}", "{\"b\":2}"]).expect("gzips");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("gunzips");
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");
    }

    #[tokio::test]
    async fn records_reach_a_local_bucket_and_a_log_group_file() {
        let dir = std::env::temp_dir().join(format!(
            "basalt-invocation-log-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(dir.join("s3/logs-bucket")).expect("bucket dir");
        let counters = InvocationLogCounters::default();
        let writer = Writer {
            objects: ObjectStorage::new(&dir, None),
            data_dir: dir.clone(),
            counters: counters.clone(),
        };
        let at = OffsetDateTime::now_utc();
        let entry = |line: &str| Entry {
            at,
            account: "123456789012".into(),
            region: "us-east-1".into(),
            line: line.into(),
            s3: Some(("logs-bucket".into(), "p".into())),
            log_group: Some("grp".into()),
        };
        writer
            .flush(vec![entry("{\"n\":1}"), entry("{\"n\":2}")])
            .await;
        let folder = dir.join("s3/logs-bucket").join(record::s3_folder(
            "p",
            "123456789012",
            "us-east-1",
            at,
        ));
        let objects: Vec<_> = std::fs::read_dir(&folder)
            .expect("folder written")
            .collect();
        assert_eq!(objects.len(), 1);
        let file = record::cloudwatch_file(&dir, "grp", at);
        let text = std::fs::read_to_string(file).expect("log file");
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n");
        std::fs::remove_dir_all(&dir).ok();
    }
}
