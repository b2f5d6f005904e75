//! `basalt kb`: knowledge-base ingestion from the command line, beside a running
//! server. The job is written to the data directory's database, where the server's
//! ingestion loop picks it up; progress is read back from the same rows.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use basalt_knowledge::resources::{DataSource, IngestionJob, CURRENT, DS_KIND, JOB_KIND};
use basalt_store::{Key, Store};
use indicatif::{ProgressBar, ProgressStyle};

fn open(data_dir: &Path) -> Result<Store> {
    Store::open(data_dir).with_context(|| format!("opening the database in {}", data_dir.display()))
}

/// Starts an ingestion job on the data source and follows it to the end.
pub fn ingest(data_dir: &Path, knowledge_base_id: &str, data_source_id: &str) -> Result<()> {
    let store = open(data_dir)?;
    let Some(ds) = store.get::<DataSource>(&Key {
        kind: DS_KIND,
        id: &format!("{knowledge_base_id}/{data_source_id}"),
        version: CURRENT,
    })?
    else {
        bail!(
            "no data source {data_source_id} in knowledge base {knowledge_base_id} in {}",
            data_dir.display()
        );
    };
    let running = store
        .list::<IngestionJob>(JOB_KIND, CURRENT)?
        .into_iter()
        .map(|(_, j)| j)
        .find(|j| {
            j.knowledge_base_id == ds.knowledge_base_id
                && j.data_source_id == ds.data_source_id
                && !j.status.is_terminal()
        });
    let job = match running {
        Some(job) => {
            println!(
                "Following ingestion job {} (already {}).",
                job.ingestion_job_id,
                job.status.as_str()
            );
            job
        }
        None => {
            let job = IngestionJob::new(&ds, Some("Started by basalt kb ingest".into()));
            store.put(
                &Key {
                    kind: JOB_KIND,
                    id: &job.key_id(),
                    version: CURRENT,
                },
                &job,
            )?;
            println!("Started ingestion job {}; a running `basalt serve` on this data directory runs it.", job.ingestion_job_id);
            job
        }
    };
    watch(&store, &job.key_id())
}

fn watch(store: &Store, key_id: &str) -> Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} documents ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    loop {
        let Some(job) = store.get::<IngestionJob>(&Key {
            kind: JOB_KIND,
            id: key_id,
            version: CURRENT,
        })?
        else {
            bail!("the ingestion job was deleted");
        };
        let s = &job.statistics;
        // Unchanged documents are not counted anywhere, so progress is what changed.
        let done = s.number_of_new_documents_indexed
            + s.number_of_modified_documents_indexed
            + s.number_of_metadata_documents_modified
            + s.number_of_documents_failed;
        bar.set_length(s.number_of_documents_scanned.max(done));
        bar.set_position(done);
        bar.set_message(job.status.as_str());
        if job.status.is_terminal() {
            bar.finish();
            println!(
                "{}: {} (scanned {}, new {}, modified {}, metadata modified {}, deleted {}, failed {})",
                job.ingestion_job_id,
                job.status.as_str(),
                s.number_of_documents_scanned,
                s.number_of_new_documents_indexed,
                s.number_of_modified_documents_indexed,
                s.number_of_metadata_documents_modified,
                s.number_of_documents_deleted,
                s.number_of_documents_failed,
            );
            for reason in &job.failure_reasons {
                println!("  {reason}");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
