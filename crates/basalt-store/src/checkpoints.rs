//! Per-record progress of long-running jobs (batch inference). A record's result is
//! saved once, in the same transaction as its neighbours, so a job that dies and
//! resumes skips exactly what it had finished and never writes a record twice.

use rusqlite::params;

use crate::{Result, Store};

/// One finished record: where it came from and the output line it produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Index of the input file within the job.
    pub file: u32,
    /// Zero-based line within that file.
    pub line: u64,
    /// False when the record ended in an error.
    pub ok: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The output line, as it will be written.
    pub output: String,
}

/// Sums over a job's checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointTotals {
    pub processed: u64,
    pub succeeded: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Saves finished records in one transaction. A record already saved keeps its
    /// first result, so replaying a chunk after a crash cannot duplicate it.
    pub fn save_checkpoints(&self, job: &str, done: &[Checkpoint]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO checkpoints
                     (job, file, line, ok, input_tokens, output_tokens, output)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for d in done {
                    insert.execute(params![
                        job,
                        d.file,
                        to_i64(d.line),
                        d.ok,
                        to_i64(d.input_tokens),
                        to_i64(d.output_tokens),
                        d.output
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Every saved record of a job, in input order.
    pub fn checkpoints(&self, job: &str) -> Result<Vec<Checkpoint>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT file, line, ok, input_tokens, output_tokens, output FROM checkpoints
                 WHERE job = ?1 ORDER BY file, line",
            )?;
            let rows = stmt
                .query_map(params![job], |row| {
                    Ok(Checkpoint {
                        file: row.get(0)?,
                        line: row.get::<_, i64>(1)?.max(0) as u64,
                        ok: row.get(2)?,
                        input_tokens: row.get::<_, i64>(3)?.max(0) as u64,
                        output_tokens: row.get::<_, i64>(4)?.max(0) as u64,
                        output: row.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    /// The lines of one input file that are already done.
    pub fn checkpointed_lines(&self, job: &str, file: u32) -> Result<Vec<u64>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT line FROM checkpoints WHERE job = ?1 AND file = ?2 ORDER BY line",
            )?;
            let rows = stmt
                .query_map(params![job, file], |row| {
                    Ok(row.get::<_, i64>(0)?.max(0) as u64)
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    pub fn checkpoint_totals(&self, job: &str) -> Result<CheckpointTotals> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(ok), 0), COALESCE(SUM(input_tokens), 0),
                        COALESCE(SUM(output_tokens), 0)
                 FROM checkpoints WHERE job = ?1",
                params![job],
                |row| {
                    let n = |i: usize| row.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok(CheckpointTotals {
                        processed: n(0)?,
                        succeeded: n(1)?,
                        input_tokens: n(2)?,
                        output_tokens: n(3)?,
                    })
                },
            )?)
        })
    }

    /// Forgets a job's records (once its output is written and the job is gone).
    pub fn delete_checkpoints(&self, job: &str) -> Result<usize> {
        self.with(|c| Ok(c.execute("DELETE FROM checkpoints WHERE job = ?1", params![job])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(file: u32, line: u64, ok: bool, output: &str) -> Checkpoint {
        Checkpoint {
            file,
            line,
            ok,
            input_tokens: 3,
            output_tokens: if ok { 5 } else { 0 },
            output: output.into(),
        }
    }

    #[test]
    fn a_record_is_saved_once_and_listed_in_input_order() {
        let s = Store::in_memory().expect("opens");
        s.save_checkpoints("j", &[done(1, 0, true, "b0"), done(0, 2, false, "a2")])
            .expect("save");
        // A replay after a crash brings a different result for a saved line: the first stays.
        s.save_checkpoints("j", &[done(0, 2, true, "again"), done(0, 0, true, "a0")])
            .expect("save");
        let all = s.checkpoints("j").expect("list");
        let outputs: Vec<&str> = all.iter().map(|c| c.output.as_str()).collect();
        assert_eq!(outputs, ["a0", "a2", "b0"]);
        assert_eq!(s.checkpointed_lines("j", 0).expect("lines"), [0, 2]);
        assert_eq!(
            s.checkpoint_totals("j").expect("totals"),
            CheckpointTotals {
                processed: 3,
                succeeded: 2,
                input_tokens: 9,
                output_tokens: 10
            }
        );
        assert!(s.checkpoints("other").expect("list").is_empty());
        assert_eq!(s.delete_checkpoints("j").expect("delete"), 3);
        assert_eq!(s.checkpoint_totals("j").expect("totals").processed, 0);
    }
}
