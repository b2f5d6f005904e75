//! `basalt jobs`: batch inference jobs read straight from the job store: the data
//! directory's database (SQLite in WAL mode lets this process read while the
//! server writes), or the PostgreSQL that several nodes share.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use basalt_batch::job::parse_identifier;
use basalt_batch::postgres::PgJobs;
use basalt_batch::runner::{stored_job, stored_jobs};
use basalt_batch::{Job, JobStore, SqliteJobs};
use basalt_store::Store;
use indicatif::{ProgressBar, ProgressStyle};

/// The job store: PostgreSQL when `database_url` is set, else `store` (SQLite).
pub async fn open_store(
    store: Arc<Store>,
    database_url: Option<&str>,
) -> Result<Arc<dyn JobStore>> {
    let jobs: Arc<dyn JobStore> = match database_url {
        // The URL may hold a password: errors and logs name the server, never the URL.
        Some(url) => Arc::new(PgJobs::connect(url).await.map_err(anyhow::Error::msg)?),
        None => Arc::new(SqliteJobs::new(store)),
    };
    tracing::info!(store = %jobs.describe(), "batch job state");
    Ok(jobs)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Arc<dyn JobStore>> {
    let store = match database_url {
        Some(_) => Store::in_memory()?,
        None => Store::open(data_dir)
            .with_context(|| format!("opening the database in {}", data_dir.display()))?,
    };
    open_store(Arc::new(store), database_url).await
}

fn place(data_dir: &Path, database_url: Option<&str>) -> String {
    match database_url {
        Some(_) => "the jobs database".into(),
        None => data_dir.display().to_string(),
    }
}

fn counts(job: &Job) -> String {
    match (job.total_record_count, job.processed_record_count) {
        (Some(total), Some(done)) => format!(
            "{done}/{total} ({} failed)",
            job.error_record_count.unwrap_or(0)
        ),
        _ => "-".into(),
    }
}

pub fn list(data_dir: &Path, database_url: Option<&str>) -> Result<()> {
    let jobs = runtime()?.block_on(async {
        let store = open(data_dir, database_url).await?;
        anyhow::Ok(stored_jobs(store.as_ref()).await?)
    })?;
    if jobs.is_empty() {
        println!(
            "No batch inference jobs in {}.",
            place(data_dir, database_url)
        );
        return Ok(());
    }
    println!(
        "{:<14} {:<20} {:<24} {:<20} {:<20} SUBMITTED",
        "ID", "STATUS", "NAME", "RECORDS", "MODEL"
    );
    for job in jobs.iter().rev() {
        println!(
            "{:<14} {:<20} {:<24} {:<20} {:<20} {}",
            job.id(),
            job.status.as_str(),
            job.job_name,
            counts(job),
            job.model_id,
            job.submit_time
        );
    }
    Ok(())
}

/// Follows one job with a progress bar until it reaches a final status.
pub fn watch(data_dir: &Path, database_url: Option<&str>, identifier: &str) -> Result<()> {
    let id = parse_identifier(identifier).map_err(|e| anyhow::anyhow!(e.message))?;
    let runtime = runtime()?;
    let store = runtime.block_on(open(data_dir, database_url))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} records ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        let Some(job) = runtime.block_on(stored_job(store.as_ref(), &id))? else {
            bail!(
                "no batch inference job {identifier} in {}",
                place(data_dir, database_url)
            );
        };
        bar.set_length(job.total_record_count.unwrap_or(0));
        bar.set_position(job.processed_record_count.unwrap_or(0));
        bar.set_message(job.status.as_str());
        if job.status.is_terminal() {
            bar.finish();
            println!(
                "{}: {} ({} succeeded, {} failed){}",
                job.job_arn,
                job.status.as_str(),
                job.success_record_count.unwrap_or(0),
                job.error_record_count.unwrap_or(0),
                job.message.map(|m| format!(". {m}")).unwrap_or_default()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
