//! Job state in PostgreSQL, shared by several Basalt nodes. Each node claims groups
//! of a job's records with `SELECT ... FOR UPDATE SKIP LOCKED` under a lease that it
//! renews while it works; a dead node's lease lapses and another node takes its
//! records. A record is finished once (`NOT done` guards every write), by the node
//! that holds it, and that node's name is kept beside its output.
//!
//! Leases use the database's clock, so nodes' clocks need not agree.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_store::{Checkpoint, CheckpointTotals, PendingRecords};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::store::{millis, Change, JobStore, JobStoreError, Pending, StoreResult};

/// Connections one node keeps open at most.
const MAX_CONNECTIONS: usize = 8;
/// Serialises schema creation across nodes starting together.
const SCHEMA_LOCK: i64 = 0x6261_7361_6c74_6a62;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS basalt_batch_documents (
    kind text NOT NULL,
    id text NOT NULL,
    seq bigserial NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS basalt_batch_records (
    job text NOT NULL,
    file integer NOT NULL,
    line bigint NOT NULL,
    done boolean NOT NULL DEFAULT false,
    owner text,
    lease_until timestamptz,
    ok boolean,
    input_tokens bigint,
    output_tokens bigint,
    output text,
    node text,
    finished_at timestamptz,
    PRIMARY KEY (job, file, line)
);
CREATE TABLE IF NOT EXISTS basalt_batch_tokens (
    operation text NOT NULL,
    token text NOT NULL,
    request text NOT NULL,
    response jsonb NOT NULL,
    PRIMARY KEY (operation, token)
);
";

fn pg(e: tokio_postgres::Error) -> JobStoreError {
    JobStoreError::Postgres(chain(&e))
}

/// An error and its causes. tokio-postgres errors name the failing step and the
/// server's or the socket's message, never the connection parameters.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

/// Open connections, reused; at most [`MAX_CONNECTIONS`] at once.
struct Pool {
    config: Config,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Set from creation until drop.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // A transaction dropped half-way has already queued its ROLLBACK, so only a
            // closed connection is not reused.
            if !client.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(client);
            }
        }
    }
}

impl Pool {
    async fn get(&self) -> StoreResult<Pooled<'_>> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| JobStoreError::Postgres("the connection pool is closed".into()))?;
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let client = match reused {
            Some(c) => c,
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(pg)?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!("jobs database connection closed: {e}");
                    }
                });
                client
            }
        };
        Ok(Pooled {
            pool: self,
            client: Some(client),
            _permit: permit,
        })
    }
}

/// Job state in PostgreSQL.
pub struct PgJobs {
    pool: Pool,
    described: String,
}

/// `user@host:port/dbname` of a connection config: what a log may show.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("(default user)"),
        hosts.join(","),
        if ports.is_empty() {
            "5432".into()
        } else {
            ports.join(",")
        },
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("(default database)")
    )
}

impl PgJobs {
    /// Connects with a libpq connection string or `postgresql://` URL and creates the
    /// tables if they are missing. TLS is not offered: reach the database over a
    /// trusted network or a tunnel.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
            JobStoreError::Postgres(format!("the jobs database URL is not valid: {}", chain(&e)))
        })?;
        let jobs = Self {
            described: describe(&config),
            pool: Pool {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            },
        };
        jobs.create_schema().await.map_err(|e| match e {
            JobStoreError::Postgres(m) => {
                JobStoreError::Postgres(format!("{}: {m}", jobs.described))
            }
            other => other,
        })?;
        Ok(jobs)
    }

    async fn create_schema(&self) -> StoreResult<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute(SCHEMA).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    n.max(0) as u64
}

/// A lease as a number of milliseconds for `now() + $n * interval '1 millisecond'`.
fn lease_ms(lease: Duration) -> f64 {
    millis(lease) as f64
}

impl JobStore for PgJobs {
    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.described)
    }

    fn put<'a>(&'a self, kind: &'a str, id: &'a str, doc: Value) -> Pending<'a, ()> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .execute(
                    "INSERT INTO basalt_batch_documents (kind, id, body) VALUES ($1, $2, $3)
                     ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body",
                    &[&kind, &id, &doc],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, kind: &'a str, id: &'a str) -> Pending<'a, Option<Value>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT body FROM basalt_batch_documents WHERE kind = $1 AND id = $2",
                    &[&kind, &id],
                )
                .await
                .map_err(pg)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn list<'a>(&'a self, kind: &'a str) -> Pending<'a, Vec<Value>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT body FROM basalt_batch_documents WHERE kind = $1 ORDER BY seq",
                    &[&kind],
                )
                .await
                .map_err(pg)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    fn update<'a>(
        &'a self,
        kind: &'a str,
        id: &'a str,
        change: Change<'a>,
    ) -> Pending<'a, Option<Value>> {
        Box::pin(async move {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let row = tx
                .query_opt(
                    "SELECT body FROM basalt_batch_documents WHERE kind = $1 AND id = $2 FOR UPDATE",
                    &[&kind, &id],
                )
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                tx.rollback().await.map_err(pg)?;
                return Ok(None);
            };
            let mut doc: Value = row.get(0);
            change(&mut doc);
            tx.execute(
                "UPDATE basalt_batch_documents SET body = $3 WHERE kind = $1 AND id = $2",
                &[&kind, &id, &doc],
            )
            .await
            .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(Some(doc))
        })
    }

    fn seed_records<'a>(&'a self, job: &'a str, file: u32, lines: Vec<u64>) -> Pending<'a, ()> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let file = i32::try_from(file).unwrap_or(i32::MAX);
            let lines: Vec<i64> = lines.into_iter().map(to_i64).collect();
            client
                .execute(
                    "INSERT INTO basalt_batch_records (job, file, line)
                     SELECT $1, $2, unnest($3::bigint[]) ON CONFLICT DO NOTHING",
                    &[&job, &file, &lines],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn claim_records<'a>(
        &'a self,
        job: &'a str,
        node: &'a str,
        n: usize,
        lease: Duration,
    ) -> Pending<'a, Vec<(u32, u64)>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let limit = to_i64(n as u64);
            // Rows another node is claiming right now are locked: SKIP LOCKED passes
            // over them instead of waiting, and the lease check then keeps them out.
            let rows = client
                .query(
                    "WITH picked AS (
                         SELECT file, line FROM basalt_batch_records
                         WHERE job = $1 AND NOT done
                           AND (lease_until IS NULL OR lease_until <= now())
                         ORDER BY file, line
                         LIMIT $3
                         FOR UPDATE SKIP LOCKED
                     )
                     UPDATE basalt_batch_records r
                     SET owner = $2, lease_until = now() + $4 * interval '1 millisecond'
                     FROM picked
                     WHERE r.job = $1 AND r.file = picked.file AND r.line = picked.line
                     RETURNING r.file, r.line",
                    &[&job, &node, &limit, &lease_ms(lease)],
                )
                .await
                .map_err(pg)?;
            let mut claimed: Vec<(u32, u64)> = rows
                .into_iter()
                .map(|r| (r.get::<_, i32>(0).max(0) as u32, to_u64(r.get(1))))
                .collect();
            claimed.sort_unstable();
            Ok(claimed)
        })
    }

    fn renew_claims<'a>(&'a self, job: &'a str, node: &'a str, lease: Duration) -> Pending<'a, ()> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE basalt_batch_records
                     SET lease_until = now() + $3 * interval '1 millisecond'
                     WHERE job = $1 AND owner = $2 AND NOT done",
                    &[&job, &node, &lease_ms(lease)],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn complete_records<'a>(
        &'a self,
        job: &'a str,
        node: &'a str,
        done: Vec<Checkpoint>,
    ) -> Pending<'a, usize> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let files: Vec<i32> = done
                .iter()
                .map(|d| i32::try_from(d.file).unwrap_or(i32::MAX))
                .collect();
            let lines: Vec<i64> = done.iter().map(|d| to_i64(d.line)).collect();
            let oks: Vec<bool> = done.iter().map(|d| d.ok).collect();
            let inputs: Vec<i64> = done.iter().map(|d| to_i64(d.input_tokens)).collect();
            let outputs: Vec<i64> = done.iter().map(|d| to_i64(d.output_tokens)).collect();
            let texts: Vec<&str> = done.iter().map(|d| d.output.as_str()).collect();
            // One statement: the whole group lands, or none of it.
            let saved = client
                .execute(
                    "UPDATE basalt_batch_records r
                     SET done = true, ok = d.ok, input_tokens = d.input_tokens,
                         output_tokens = d.output_tokens, output = d.output, node = $2,
                         owner = NULL, lease_until = NULL, finished_at = now()
                     FROM unnest($3::integer[], $4::bigint[], $5::boolean[], $6::bigint[],
                                 $7::bigint[], $8::text[])
                          AS d(file, line, ok, input_tokens, output_tokens, output)
                     WHERE r.job = $1 AND r.file = d.file AND r.line = d.line
                       AND r.owner = $2 AND NOT r.done",
                    &[&job, &node, &files, &lines, &oks, &inputs, &outputs, &texts],
                )
                .await
                .map_err(pg)?;
            Ok(usize::try_from(saved).unwrap_or(usize::MAX))
        })
    }

    fn release_claims<'a>(&'a self, node: &'a str) -> Pending<'a, ()> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE basalt_batch_records SET owner = NULL, lease_until = NULL
                     WHERE owner = $1 AND NOT done",
                    &[&node],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn pending_records<'a>(&'a self, job: &'a str, node: &'a str) -> Pending<'a, PendingRecords> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE NOT done),
                            count(*) FILTER (WHERE NOT done AND owner IS NOT NULL
                                             AND owner <> $2 AND lease_until > now())
                     FROM basalt_batch_records WHERE job = $1",
                    &[&job, &node],
                )
                .await
                .map_err(pg)?;
            Ok(PendingRecords {
                pending: to_u64(row.get(0)),
                held_by_others: to_u64(row.get(1)),
            })
        })
    }

    fn checkpoints<'a>(&'a self, job: &'a str) -> Pending<'a, Vec<Checkpoint>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT file, line, ok, input_tokens, output_tokens, output
                     FROM basalt_batch_records WHERE job = $1 AND done ORDER BY file, line",
                    &[&job],
                )
                .await
                .map_err(pg)?;
            Ok(rows
                .into_iter()
                .map(|r| Checkpoint {
                    file: r.get::<_, i32>(0).max(0) as u32,
                    line: to_u64(r.get(1)),
                    ok: r.get::<_, Option<bool>>(2).unwrap_or(false),
                    input_tokens: to_u64(r.get::<_, Option<i64>>(3).unwrap_or(0)),
                    output_tokens: to_u64(r.get::<_, Option<i64>>(4).unwrap_or(0)),
                    output: r.get::<_, Option<String>>(5).unwrap_or_default(),
                })
                .collect())
        })
    }

    fn forget_records<'a>(&'a self, job: &'a str) -> Pending<'a, u64> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .execute("DELETE FROM basalt_batch_records WHERE job = $1", &[&job])
                .await
                .map_err(pg)
        })
    }

    fn totals<'a>(&'a self, job: &'a str) -> Pending<'a, CheckpointTotals> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE ok),
                            COALESCE(sum(input_tokens), 0)::bigint,
                            COALESCE(sum(output_tokens), 0)::bigint
                     FROM basalt_batch_records WHERE job = $1 AND done",
                    &[&job],
                )
                .await
                .map_err(pg)?;
            Ok(CheckpointTotals {
                processed: to_u64(row.get(0)),
                succeeded: to_u64(row.get(1)),
                input_tokens: to_u64(row.get(2)),
                output_tokens: to_u64(row.get(3)),
            })
        })
    }

    fn idempotent_response<'a>(
        &'a self,
        operation: &'a str,
        token: &'a str,
    ) -> Pending<'a, Option<(String, Value)>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT request, response FROM basalt_batch_tokens
                     WHERE operation = $1 AND token = $2",
                    &[&operation, &token],
                )
                .await
                .map_err(pg)?;
            Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    fn remember_response<'a>(
        &'a self,
        operation: &'a str,
        token: &'a str,
        request: String,
        response: Value,
    ) -> Pending<'a, ()> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            client
                .execute(
                    "INSERT INTO basalt_batch_tokens (operation, token, request, response)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&operation, &token, &request, &response],
                )
                .await
                .map_err(pg)?;
            Ok(())
        })
    }
}
