//! `basalt jobs`: batch inference jobs read straight from the data directory's
//! database (SQLite in WAL mode lets this process read while the server writes).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use basalt_batch::job::parse_identifier;
use basalt_batch::runner::{stored_job, stored_jobs};
use basalt_batch::Job;
use basalt_store::Store;
use indicatif::{ProgressBar, ProgressStyle};

fn open(data_dir: &Path) -> Result<Store> {
    Store::open(data_dir).with_context(|| format!("opening the database in {}", data_dir.display()))
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

pub fn list(data_dir: &Path) -> Result<()> {
    let jobs = stored_jobs(&open(data_dir)?)?;
    if jobs.is_empty() {
        println!("No batch inference jobs in {}.", data_dir.display());
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
pub fn watch(data_dir: &Path, identifier: &str) -> Result<()> {
    let id = parse_identifier(identifier).map_err(|e| anyhow::anyhow!(e.message))?;
    let store = open(data_dir)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} records ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        let Some(job) = stored_job(&store, &id)? else {
            bail!(
                "no batch inference job {identifier} in {}",
                data_dir.display()
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
