//! Durable state in the data directory: one SQLite database holding control-plane
//! resources as JSON documents, keyed by kind, ID and version, the idempotency
//! tokens of create operations, and the per-record checkpoints of long jobs.
//! Services own the meaning of their documents; this crate only keeps them safe
//! across restarts.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

mod checkpoints;
pub use checkpoints::{Checkpoint, CheckpointTotals, PendingRecords};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("stored document is damaged: {0}")]
    Document(#[from] serde_json::Error),
    #[error("the database lock was poisoned by a panic")]
    Poisoned,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where a document lives: its resource kind ("guardrail"), ID and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub version: &'a str,
}

/// One write of [`Store::apply`].
pub enum Write<'a> {
    Put(Key<'a>, serde_json::Value),
    Delete(Key<'a>),
}

pub struct Store {
    // SQLite serialises writers anyway; one connection behind a mutex keeps every
    // operation a short critical section (microseconds for these small documents).
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id, version)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job TEXT NOT NULL,
    file INTEGER NOT NULL,
    line INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    output TEXT NOT NULL,
    PRIMARY KEY (job, file, line)
);
CREATE TABLE IF NOT EXISTS idempotency (
    operation TEXT NOT NULL,
    token TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (operation, token)
);
";

impl Store {
    /// Opens (creating if needed) `basalt.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let conn = Connection::open(dir.join("basalt.db"))?;
        Self::init(conn)
    }

    /// A private database that lives as long as the store (for tests).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        // WAL: readers never wait for a writer, and a crash mid-write loses nothing committed.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(checkpoints::SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut conn)
    }

    /// Inserts or replaces a document. A new document goes after every existing one
    /// in listing order; a replaced one keeps its place.
    pub fn put<T: Serialize>(&self, key: &Key<'_>, body: &T) -> Result<()> {
        let body = serde_json::to_string(body)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO documents (kind, id, version, seq, body)
                 VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM documents), ?4)
                 ON CONFLICT (kind, id, version) DO UPDATE SET body = excluded.body",
                params![key.kind, key.id, key.version, body],
            )?;
            Ok(())
        })
    }

    /// Applies every write in one transaction: all of them land, or none.
    pub fn apply(&self, writes: &[Write<'_>]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for write in writes {
                match write {
                    Write::Put(key, body) => {
                        tx.execute(
                            "INSERT INTO documents (kind, id, version, seq, body)
                             VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM documents), ?4)
                             ON CONFLICT (kind, id, version) DO UPDATE SET body = excluded.body",
                            params![key.kind, key.id, key.version, body.to_string()],
                        )?;
                    }
                    Write::Delete(key) => {
                        tx.execute(
                            "DELETE FROM documents WHERE kind = ?1 AND id = ?2 AND version = ?3",
                            params![key.kind, key.id, key.version],
                        )?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn get<T: DeserializeOwned>(&self, key: &Key<'_>) -> Result<Option<T>> {
        let body: Option<String> = self.with(|c| {
            Ok(c.query_row(
                "SELECT body FROM documents WHERE kind = ?1 AND id = ?2 AND version = ?3",
                params![key.kind, key.id, key.version],
                |row| row.get(0),
            )
            .optional()?)
        })?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    /// Every version of one resource, in creation order.
    pub fn versions<T: DeserializeOwned>(&self, kind: &str, id: &str) -> Result<Vec<(String, T)>> {
        self.documents(
            "SELECT version, body FROM documents WHERE kind = ?1 AND id = ?2 ORDER BY seq",
            kind,
            id,
        )
    }

    /// One version of every resource of a kind, in creation order.
    pub fn list<T: DeserializeOwned>(&self, kind: &str, version: &str) -> Result<Vec<(String, T)>> {
        self.documents(
            "SELECT id, body FROM documents WHERE kind = ?1 AND version = ?2 ORDER BY seq",
            kind,
            version,
        )
    }

    /// Every row of a kind as (id, version, body), in creation order.
    pub fn all<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<(String, String, T)>> {
        let rows: Vec<(String, String, String)> = self.with(|c| {
            let mut stmt =
                c.prepare("SELECT id, version, body FROM documents WHERE kind = ?1 ORDER BY seq")?;
            let rows = stmt
                .query_map(params![kind], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(id, version, b)| Ok((id, version, serde_json::from_str(&b)?)))
            .collect()
    }

    /// Runs a two-parameter query returning (label, body) rows.
    fn documents<T: DeserializeOwned>(
        &self,
        sql: &str,
        first: &str,
        second: &str,
    ) -> Result<Vec<(String, T)>> {
        let rows: Vec<(String, String)> = self.with(|c| {
            let mut stmt = c.prepare(sql)?;
            let rows = stmt
                .query_map(params![first, second], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(label, b)| Ok((label, serde_json::from_str(&b)?)))
            .collect()
    }

    /// Deletes one version; returns whether it existed.
    pub fn delete(&self, key: &Key<'_>) -> Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM documents WHERE kind = ?1 AND id = ?2 AND version = ?3",
                params![key.kind, key.id, key.version],
            )? > 0)
        })
    }

    /// Deletes every version of a resource, and returns how many there were.
    pub fn delete_all(&self, kind: &str, id: &str) -> Result<usize> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM documents WHERE kind = ?1 AND id = ?2",
                params![kind, id],
            )?)
        })
    }

    /// The response first given for `token` on `operation`, with the request it answered.
    pub fn idempotent_response(
        &self,
        operation: &str,
        token: &str,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let row: Option<(String, String)> = self.with(|c| {
            Ok(c.query_row(
                "SELECT request, response FROM idempotency WHERE operation = ?1 AND token = ?2",
                params![operation, token],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?)
        })?;
        row.map(|(req, resp)| Ok((req, serde_json::from_str(&resp)?)))
            .transpose()
    }

    pub fn remember_response(
        &self,
        operation: &str,
        token: &str,
        request: &str,
        response: &serde_json::Value,
    ) -> Result<()> {
        let response = response.to_string();
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO idempotency (operation, token, request, response) VALUES (?1, ?2, ?3, ?4)",
                params![operation, token, request, response],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(id: &'a str, version: &'a str) -> Key<'a> {
        Key {
            kind: "guardrail",
            id,
            version,
        }
    }

    #[test]
    fn put_get_replace_delete() {
        let s = Store::in_memory().expect("opens");
        s.put(&key("a", "DRAFT"), &serde_json::json!({"n": 1}))
            .expect("put");
        s.put(&key("b", "DRAFT"), &serde_json::json!({"n": 2}))
            .expect("put");
        s.put(&key("a", "DRAFT"), &serde_json::json!({"n": 3}))
            .expect("replace");
        let got: Option<serde_json::Value> = s.get(&key("a", "DRAFT")).expect("get");
        assert_eq!(got, Some(serde_json::json!({"n": 3})));
        let listed: Vec<(String, serde_json::Value)> = s.list("guardrail", "DRAFT").expect("list");
        let ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "a replaced document keeps its place");
        assert!(s.delete(&key("a", "DRAFT")).expect("delete"));
        assert!(!s.delete(&key("a", "DRAFT")).expect("delete again"));
    }

    #[test]
    fn apply_writes_everything_in_one_transaction() {
        let s = Store::in_memory().expect("opens");
        s.put(&key("old", "DRAFT"), &1).expect("put");
        s.apply(&[
            Write::Put(key("a", "DRAFT"), serde_json::json!(1)),
            Write::Put(key("b", "DRAFT"), serde_json::json!(2)),
            Write::Delete(key("old", "DRAFT")),
        ])
        .expect("apply");
        let listed: Vec<(String, i64)> = s.list("guardrail", "DRAFT").expect("list");
        assert_eq!(listed, [("a".to_string(), 1), ("b".to_string(), 2)]);
    }

    #[test]
    fn versions_come_in_creation_order() {
        let s = Store::in_memory().expect("opens");
        for v in ["DRAFT", "1", "2"] {
            s.put(&key("g", v), &v).expect("put");
        }
        let versions: Vec<(String, String)> = s.versions("guardrail", "g").expect("versions");
        let names: Vec<&str> = versions.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(names, ["DRAFT", "1", "2"]);
        assert_eq!(s.delete_all("guardrail", "g").expect("delete"), 3);
    }

    #[test]
    fn documents_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("basalt-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        {
            let s = Store::open(&dir).expect("opens");
            s.put(&key("kept", "DRAFT"), &"yes").expect("put");
            s.remember_response(
                "CreateGuardrail",
                "tok",
                "{}",
                &serde_json::json!({"id": "kept"}),
            )
            .expect("token");
        }
        let s = Store::open(&dir).expect("reopens");
        let got: Option<String> = s.get(&key("kept", "DRAFT")).expect("get");
        assert_eq!(got.as_deref(), Some("yes"));
        let token = s
            .idempotent_response("CreateGuardrail", "tok")
            .expect("token");
        assert_eq!(
            token.map(|(_, r)| r["id"].clone()),
            Some(serde_json::json!("kept"))
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
