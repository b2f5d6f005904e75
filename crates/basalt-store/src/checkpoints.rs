//! Per-record progress of long-running jobs (batch inference). A record's result is
//! saved once, in the same transaction as its neighbours, so a job that dies and
//! resumes skips exactly what it had finished and never writes a record twice.
//!
//! Records waiting to run are rows of `record_claims`; a runner claims a group of
//! them for a while (a lease), and finishing a record moves it to `checkpoints`.
//! One process uses a data directory, so these claims only matter across restarts.

use rusqlite::{params, TransactionBehavior};

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

/// Created beside the main schema.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS record_claims (
    job TEXT NOT NULL,
    file INTEGER NOT NULL,
    line INTEGER NOT NULL,
    owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, file, line)
);
";

/// Records of a job not yet finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingRecords {
    pub pending: u64,
    /// Of those, claimed under a live lease by another owner.
    pub held_by_others: u64,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Lists a file's records as waiting to run; lines already finished or listed are skipped.
    pub fn seed_records(&self, job: &str, file: u32, lines: &[u64]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO record_claims (job, file, line)
                     SELECT ?1, ?2, ?3 WHERE NOT EXISTS
                     (SELECT 1 FROM checkpoints WHERE job = ?1 AND file = ?2 AND line = ?3)",
                )?;
                for line in lines {
                    insert.execute(params![job, file, to_i64(*line)])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Claims up to `n` waiting records whose lease has lapsed (times in ms since the
    /// epoch), in input order, for `owner` until `until`.
    pub fn claim_records(
        &self,
        job: &str,
        owner: &str,
        n: usize,
        now: i64,
        until: i64,
    ) -> Result<Vec<(u32, u64)>> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let picked: Vec<(u32, i64)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT file, line FROM record_claims WHERE job = ?1 AND lease_until <= ?2
                     ORDER BY file, line LIMIT ?3",
                )?;
                let rows = stmt
                    .query_map(params![job, now, to_i64(n as u64)], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                rows
            };
            {
                let mut claim = tx.prepare_cached(
                    "UPDATE record_claims SET owner = ?4, lease_until = ?5
                     WHERE job = ?1 AND file = ?2 AND line = ?3",
                )?;
                for (file, line) in &picked {
                    claim.execute(params![job, file, line, owner, until])?;
                }
            }
            tx.commit()?;
            Ok(picked
                .into_iter()
                .map(|(f, l)| (f, l.max(0) as u64))
                .collect())
        })
    }

    /// Extends every claim `owner` holds in `job` to `until`.
    pub fn renew_claims(&self, job: &str, owner: &str, until: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE record_claims SET lease_until = ?3 WHERE job = ?1 AND owner = ?2",
                params![job, owner, until],
            )?;
            Ok(())
        })
    }

    /// Saves the finished records that `owner` still holds, in one transaction; a
    /// record whose claim passed to another owner is left to that owner. Returns how
    /// many were saved.
    pub fn complete_records(&self, job: &str, owner: &str, done: &[Checkpoint]) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut saved = 0;
            {
                let mut unclaim = tx.prepare_cached(
                    "DELETE FROM record_claims WHERE job = ?1 AND file = ?2 AND line = ?3 AND owner = ?4",
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO checkpoints
                     (job, file, line, ok, input_tokens, output_tokens, output)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for d in done {
                    if unclaim.execute(params![job, d.file, to_i64(d.line), owner])? == 0 {
                        continue;
                    }
                    saved += insert.execute(params![
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
            Ok(saved)
        })
    }

    /// Frees every claim (one process per data directory: what is claimed at its
    /// start was claimed by a process that died).
    pub fn release_all_claims(&self) -> Result<usize> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE record_claims SET owner = NULL, lease_until = 0 WHERE owner IS NOT NULL",
                [],
            )?)
        })
    }

    /// How many records of `job` wait, and how many of those another owner holds.
    pub fn pending_records(&self, job: &str, owner: &str, now: i64) -> Result<PendingRecords> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(owner IS NOT NULL AND owner <> ?2 AND lease_until > ?3), 0)
                 FROM record_claims WHERE job = ?1",
                params![job, owner, now],
                |row| {
                    Ok(PendingRecords {
                        pending: row.get::<_, i64>(0)?.max(0) as u64,
                        held_by_others: row.get::<_, i64>(1)?.max(0) as u64,
                    })
                },
            )?)
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
        self.with(|c| {
            c.execute("DELETE FROM record_claims WHERE job = ?1", params![job])?;
            Ok(c.execute("DELETE FROM checkpoints WHERE job = ?1", params![job])?)
        })
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

    /// Runs `done` through the runner's path: listed, claimed by one node, completed.
    fn run(s: &Store, job: &str, done: &[Checkpoint]) -> usize {
        for d in done {
            s.seed_records(job, d.file, &[d.line]).expect("seed");
        }
        s.claim_records(job, "t", done.len(), 0, i64::MAX)
            .expect("claim");
        s.complete_records(job, "t", done).expect("complete")
    }

    #[test]
    fn a_record_is_saved_once_and_listed_in_input_order() {
        let s = Store::in_memory().expect("opens");
        assert_eq!(
            run(&s, "j", &[done(1, 0, true, "b0"), done(0, 2, false, "a2")]),
            2
        );
        // A replay after a crash brings a different result for a saved line: the first stays.
        assert_eq!(
            s.complete_records("j", "t", &[done(0, 2, true, "again")])
                .expect("complete"),
            0
        );
        assert_eq!(run(&s, "j", &[done(0, 0, true, "a0")]), 1);
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

    #[test]
    fn claims_are_leased_handed_over_when_lapsed_and_completed_once() {
        let s = Store::in_memory().expect("opens");
        run(&s, "j", &[done(0, 1, true, "already")]);
        s.seed_records("j", 0, &[0, 1, 2, 3]).expect("seed");
        s.seed_records("j", 0, &[0, 1, 2, 3])
            .expect("seeding twice is harmless");
        let pending = |owner: &str, now: i64| s.pending_records("j", owner, now).expect("count");
        assert_eq!(pending("a", 0).pending, 3, "a finished line is not waiting");

        assert_eq!(
            s.claim_records("j", "a", 2, 100, 200).expect("claim"),
            [(0, 0), (0, 2)]
        );
        assert_eq!(
            s.claim_records("j", "b", 5, 150, 250).expect("claim"),
            [(0, 3)]
        );
        assert_eq!(pending("b", 150).held_by_others, 2);
        // a's lease lapses at 200: b takes its records over.
        assert_eq!(
            s.claim_records("j", "b", 5, 200, 300).expect("claim"),
            [(0, 0), (0, 2)]
        );
        // a finishes late: its records now belong to b, so nothing of a's is kept.
        assert_eq!(
            s.complete_records("j", "a", &[done(0, 0, true, "late")])
                .expect("complete"),
            0
        );
        s.renew_claims("j", "b", 400).expect("renew");
        assert_eq!(s.claim_records("j", "c", 5, 350, 450).expect("claim"), []);
        let saved = s
            .complete_records(
                "j",
                "b",
                &[
                    done(0, 0, true, "b0"),
                    done(0, 2, false, "b2"),
                    done(0, 3, true, "b3"),
                ],
            )
            .expect("complete");
        assert_eq!(saved, 3);
        assert_eq!(pending("b", 0).pending, 0);
        let outputs: Vec<String> = s
            .checkpoints("j")
            .expect("list")
            .into_iter()
            .map(|c| c.output)
            .collect();
        assert_eq!(outputs, ["b0", "already", "b2", "b3"]);

        s.seed_records("k", 0, &[0]).expect("seed");
        s.claim_records("k", "dead", 1, 0, i64::MAX).expect("claim");
        assert_eq!(s.release_all_claims().expect("release"), 1);
        assert_eq!(
            s.claim_records("k", "new", 1, 0, 10).expect("claim"),
            [(0, 0)]
        );
    }
}
