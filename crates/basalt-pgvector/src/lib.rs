//! A knowledge base's chunks in PostgreSQL with pgvector: Bedrock's `RDS`
//! storage configuration, against a table the user created (as Bedrock
//! requires for Aurora).
//!
//! Layout (Bedrock's): the primary key column holds the chunk id (a UUIDv5 of
//! it when the column is `uuid`), the vector column the embedding, the text
//! column the searched text, the metadata column (json or jsonb) every
//! metadata key plus Basalt's own `x-basalt-kb-*` keys (document id, chunk id,
//! return text), and the optional custom metadata column (jsonb) the user
//! attributes alone. Filters and deletes read the metadata column.
//!
//! Scores and limits match the embedded index in `basalt-index`: SEMANTIC is
//! `(1 + cosine similarity) / 2`; HYBRID takes the union of the nearest and
//! the best full-text (`ts_rank_cd`) candidates and scores each
//! `0.5 * semantic + 0.5 * rank / best rank`.
//!
//! HYBRID's full-text side is bounded: PostgreSQL has no ranked index, so
//! ranking every row that holds a query word costs a good part of a second at
//! 100k chunks. It ranks at most [`StoreOptions::text_candidates`] rows that
//! hold every query word and as many that hold any, found through the GIN
//! index on `to_tsvector('simple', text)` of Bedrock's Aurora guide. Where
//! fewer rows match, the result is the exhaustive one.
//!
//! Calls share a bounded pool of connections ([`StoreOptions::pool_size`]).

mod sql;
pub mod test_server;

use std::collections::{HashMap, HashSet};

use basalt_index::embedded::MAX_CHUNK_TEXT_BYTES;
use basalt_index::{Chunk, Filter, Hit, IndexError, SearchRequest, SearchType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use sql::{filter_sql, is_user_key, quote_ident, Params};
pub use sql::{CHUNK_ID_KEY, DOCUMENT_ID_KEY, PRIVATE_PREFIX, RETURN_TEXT_KEY};

/// The text search configuration of the full-text side of HYBRID; Bedrock's
/// Aurora setup indexes `to_tsvector('simple', chunks)`, and a query must use
/// the same expression for PostgreSQL to use that index.
pub const TEXT_SEARCH_CONFIG: &str = "simple";
/// HYBRID ranks at least this many candidates from each side (as the
/// embedded index does).
const HYBRID_CANDIDATES: usize = 100;
/// Most rows of each full-text tier (all words, any word) HYBRID ranks.
pub const TEXT_CANDIDATES: usize = 1_000;
/// Most connections a store holds open.
pub const POOL_SIZE: usize = 8;
/// How long a call waits for a free connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Namespace of the UUIDv5 primary keys derived from chunk ids.
const CHUNK_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a4e_9b7d_4c3a_8e51_0d2f_7a64_b5c9);
/// pgvector's HNSW indexes `vector` columns up to this many dimensions.
const HNSW_MAX_DIMENSIONS: usize = 2000;

/// Bedrock's `rdsConfiguration`: the table and its columns. Deserialises from
/// the camelCase wire shape (`tableName`, `fieldMapping.primaryKeyField`, ...);
/// `resourceArn`, `credentialsSecretArn` and `databaseName` are the caller's to
/// turn into a connection string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "wire::RdsConfiguration", into = "wire::RdsConfiguration")]
pub struct RdsMapping {
    /// `table` or `schema.table`.
    pub table_name: String,
    pub primary_key_field: String,
    pub vector_field: String,
    pub text_field: String,
    pub metadata_field: String,
    pub custom_metadata_field: Option<String>,
}

mod wire {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct RdsConfiguration {
        pub table_name: String,
        pub field_mapping: FieldMapping,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct FieldMapping {
        pub primary_key_field: String,
        pub vector_field: String,
        pub text_field: String,
        pub metadata_field: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub custom_metadata_field: Option<String>,
    }
}

impl TryFrom<wire::RdsConfiguration> for RdsMapping {
    type Error = String;

    fn try_from(w: wire::RdsConfiguration) -> Result<Self, String> {
        let f = w.field_mapping;
        let m = RdsMapping {
            table_name: w.table_name,
            primary_key_field: f.primary_key_field,
            vector_field: f.vector_field,
            text_field: f.text_field,
            metadata_field: f.metadata_field,
            custom_metadata_field: f.custom_metadata_field.filter(|c| !c.is_empty()),
        };
        for (name, value) in m.members() {
            if value.is_empty() {
                return Err(format!("{name} must not be empty"));
            }
        }
        Ok(m)
    }
}

impl From<RdsMapping> for wire::RdsConfiguration {
    fn from(m: RdsMapping) -> Self {
        wire::RdsConfiguration {
            table_name: m.table_name,
            field_mapping: wire::FieldMapping {
                primary_key_field: m.primary_key_field,
                vector_field: m.vector_field,
                text_field: m.text_field,
                metadata_field: m.metadata_field,
                custom_metadata_field: m.custom_metadata_field,
            },
        }
    }
}

impl RdsMapping {
    /// The column names of Bedrock's Aurora setup guide.
    pub fn bedrock_default(table_name: &str) -> RdsMapping {
        RdsMapping {
            table_name: table_name.to_string(),
            primary_key_field: "id".into(),
            vector_field: "embedding".into(),
            text_field: "chunks".into(),
            metadata_field: "metadata".into(),
            custom_metadata_field: Some("custom_metadata".into()),
        }
    }

    /// (wire name, value) of every member, for messages.
    fn members(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("tableName", self.table_name.as_str()),
            ("fieldMapping.primaryKeyField", &self.primary_key_field),
            ("fieldMapping.vectorField", &self.vector_field),
            ("fieldMapping.textField", &self.text_field),
            ("fieldMapping.metadataField", &self.metadata_field),
        ];
        if let Some(c) = &self.custom_metadata_field {
            v.push(("fieldMapping.customMetadataField", c));
        }
        v
    }

    /// (schema, table) with the schema optional.
    fn split_table(&self) -> (Option<&str>, &str) {
        match self.table_name.split_once('.') {
            Some((schema, table)) => (Some(schema), table),
            None => (None, &self.table_name),
        }
    }

    fn quoted_table(&self) -> String {
        match self.split_table() {
            (Some(schema), table) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
            (None, table) => quote_ident(table),
        }
    }
}

/// SQL built once from the mapping.
struct Statements {
    insert: String,
    delete_document: String,
    delete_ids: String,
    count: String,
    /// `SELECT pk, text, metadata` (with `FROM` and the rest left to the caller).
    select: String,
    table: String,
    pk: String,
    vector: String,
    text: String,
    /// The metadata column as jsonb, for filters.
    meta: String,
}

impl Statements {
    fn new(m: &RdsMapping) -> Statements {
        let table = m.quoted_table();
        let pk = quote_ident(&m.primary_key_field);
        let vector = quote_ident(&m.vector_field);
        let text = quote_ident(&m.text_field);
        let metadata = quote_ident(&m.metadata_field);
        let meta = format!("({metadata}::jsonb)");
        let (custom_col, custom_val) = match &m.custom_metadata_field {
            Some(c) => (format!(", {}", quote_ident(c)), ", $5"),
            None => (String::new(), ""),
        };
        Statements {
            insert: format!(
                "INSERT INTO {table} ({pk}, {vector}, {text}, {metadata}{custom_col}) \
                 VALUES ($1, $2, $3, $4{custom_val})"
            ),
            delete_document: format!(
                "DELETE FROM {table} WHERE ({meta} ->> '{DOCUMENT_ID_KEY}') = $1::text"
            ),
            delete_ids: format!("DELETE FROM {table} WHERE {pk} = ANY($1)"),
            count: format!("SELECT count(*) FROM {table}"),
            select: format!("SELECT {pk}::text, {text}, {metadata}"),
            table,
            pk,
            vector,
            text,
            meta,
        }
    }
}

/// Limits of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most connections open at once; calls beyond wait for one.
    pub pool_size: usize,
    /// Most rows of each full-text tier that HYBRID ranks.
    pub text_candidates: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: POOL_SIZE,
            text_candidates: TEXT_CANDIDATES,
        }
    }
}

/// Chunks of one knowledge base in a PostgreSQL table, through a bounded pool
/// of connections (a dropped one is replaced on the next call).
pub struct PgVectorStore {
    mapping: RdsMapping,
    dimensions: usize,
    pk_is_uuid: bool,
    text_index: bool,
    options: StoreOptions,
    sql: Statements,
    pool: Pool,
}

impl PgVectorStore {
    /// Connects and checks that the table exists with the mapped columns, the
    /// vector column of `dimensions` dimensions.
    pub async fn connect(
        conn_str: &str,
        mapping: RdsMapping,
        dimensions: usize,
    ) -> Result<PgVectorStore, IndexError> {
        Self::connect_with(conn_str, mapping, dimensions, StoreOptions::default()).await
    }

    /// [`connect`](Self::connect) with other limits.
    pub async fn connect_with(
        conn_str: &str,
        mapping: RdsMapping,
        dimensions: usize,
        options: StoreOptions,
    ) -> Result<PgVectorStore, IndexError> {
        if options.pool_size == 0 || options.text_candidates == 0 {
            return Err(IndexError::Invalid(
                "the pool size and the text candidate count must be at least 1".into(),
            ));
        }
        let pool = pool(conn_str, options.pool_size)?;
        let client = pool
            .get()
            .await
            .map_err(|e| pool_err(e, options.pool_size))?;
        let pk_is_uuid = check_table(&client, &mapping, dimensions).await?;
        let text_index = has_text_index(&client, &mapping).await?;
        if !text_index {
            tracing::warn!(
                "table {} has no GIN index on to_tsvector('{TEXT_SEARCH_CONFIG}', {}): HYBRID \
                 search scans the table for its word matches, slowly on a large one. Create it \
                 with: {}",
                mapping.table_name,
                mapping.text_field,
                text_index_ddl(&mapping)
            );
        }
        drop(client);
        Ok(PgVectorStore {
            sql: Statements::new(&mapping),
            mapping,
            dimensions,
            pk_is_uuid,
            text_index,
            options,
            pool,
        })
    }

    /// Creates the pgvector extension and, unless they exist, the table in
    /// Bedrock's Aurora layout (`uuid` primary key, `vector(dimensions)`,
    /// `text`, `json` metadata, `jsonb` custom metadata) with an HNSW cosine
    /// index, a full-text GIN index and an index on the document id.
    pub async fn ensure_table(
        conn_str: &str,
        mapping: &RdsMapping,
        dimensions: usize,
    ) -> Result<(), IndexError> {
        let client = open(conn_str).await?;
        let table = mapping.quoted_table();
        let (schema, bare) = mapping.split_table();
        // An index lives in its table's schema, so its name is never qualified.
        let index = |suffix: &str| quote_ident(&format!("{bare}_{suffix}"));
        let pk = quote_ident(&mapping.primary_key_field);
        let vector = quote_ident(&mapping.vector_field);
        let text = quote_ident(&mapping.text_field);
        let metadata = quote_ident(&mapping.metadata_field);
        let mut ddl = String::from("CREATE EXTENSION IF NOT EXISTS vector;\n");
        if let Some(schema) = schema {
            ddl += &format!("CREATE SCHEMA IF NOT EXISTS {};\n", quote_ident(schema));
        }
        let custom = mapping
            .custom_metadata_field
            .as_deref()
            .map(|c| format!(", {} jsonb", quote_ident(c)))
            .unwrap_or_default();
        ddl += &format!(
            "CREATE TABLE IF NOT EXISTS {table} ({pk} uuid PRIMARY KEY, \
             {vector} vector({dimensions}), {text} text, {metadata} json{custom});\n"
        );
        if dimensions <= HNSW_MAX_DIMENSIONS {
            ddl += &format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} USING hnsw ({vector} vector_cosine_ops);\n",
                index("hnsw")
            );
        }
        ddl += &format!(
            "CREATE INDEX IF NOT EXISTS {} ON {table} USING gin (to_tsvector('{TEXT_SEARCH_CONFIG}', {text}));\n\
             CREATE INDEX IF NOT EXISTS {} ON {table} (({metadata}::jsonb ->> '{DOCUMENT_ID_KEY}'));\n",
            index("fts"),
            index("document"),
        );
        if let Some(c) = &mapping.custom_metadata_field {
            ddl += &format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} USING gin ({});\n",
                index("custom"),
                quote_ident(c)
            );
        }
        client.batch_execute(&ddl).await.map_err(pg_err)
    }

    pub fn mapping(&self) -> &RdsMapping {
        &self.mapping
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Whether the table had the full-text GIN index HYBRID uses when the
    /// store connected.
    pub fn has_text_index(&self) -> bool {
        self.text_index
    }

    pub fn options(&self) -> StoreOptions {
        self.options
    }

    /// Connections the pool holds open now (at most `pool_size`).
    pub fn open_connections(&self) -> usize {
        self.pool.status().size
    }

    /// Replaces every chunk of `document_id` with `chunks`, in one transaction.
    pub async fn upsert_document(
        &self,
        document_id: &str,
        chunks: Vec<Chunk>,
    ) -> Result<(), IndexError> {
        self.upsert_documents(vec![(document_id.to_string(), chunks)])
            .await
    }

    /// Replaces the chunks of several documents in one transaction. A chunk id
    /// that another document holds moves to the new one. Refuses what the
    /// embedded index refuses, before writing anything.
    pub async fn upsert_documents(
        &self,
        documents: Vec<(String, Vec<Chunk>)>,
    ) -> Result<(), IndexError> {
        let mut seen_chunks = HashSet::new();
        let mut seen_docs = HashSet::new();
        for (document_id, chunks) in &documents {
            if document_id.is_empty() {
                return Err(IndexError::Invalid("a document id is empty".into()));
            }
            if !seen_docs.insert(document_id.as_str()) {
                return Err(IndexError::Invalid(format!(
                    "document {document_id:?} appears twice in one write"
                )));
            }
            for c in chunks {
                if c.chunk_id.is_empty() {
                    return Err(IndexError::Invalid("a chunk id is empty".into()));
                }
                if !seen_chunks.insert(c.chunk_id.as_str()) {
                    return Err(IndexError::Invalid(format!(
                        "chunk {:?} appears twice in one write",
                        c.chunk_id
                    )));
                }
                if c.text.len() > MAX_CHUNK_TEXT_BYTES
                    || c.return_text
                        .as_ref()
                        .is_some_and(|t| t.len() > MAX_CHUNK_TEXT_BYTES)
                {
                    return Err(IndexError::Invalid(format!(
                        "chunk {:?} is longer than {MAX_CHUNK_TEXT_BYTES} bytes",
                        c.chunk_id
                    )));
                }
                self.check_vector(&c.vector)?;
            }
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let insert = tx.prepare_cached(&self.sql.insert).await.map_err(pg_err)?;
        for (document_id, chunks) in &documents {
            tx.execute(&self.sql.delete_document, &[document_id])
                .await
                .map_err(pg_err)?;
            if self.pk_is_uuid {
                let ids: Vec<Uuid> = chunks.iter().map(|c| chunk_uuid(&c.chunk_id)).collect();
                tx.execute(&self.sql.delete_ids, &[&ids]).await
            } else {
                let ids: Vec<&str> = chunks.iter().map(|c| c.chunk_id.as_str()).collect();
                tx.execute(&self.sql.delete_ids, &[&ids]).await
            }
            .map_err(pg_err)?;
            for c in chunks {
                self.insert_chunk(&tx, &insert, document_id, c).await?;
            }
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn insert_chunk(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        insert: &tokio_postgres::Statement,
        document_id: &str,
        c: &Chunk,
    ) -> Result<(), IndexError> {
        let mut metadata = c.metadata.clone();
        metadata.retain(|k, _| !k.starts_with(PRIVATE_PREFIX));
        let custom: Map<String, Value> = metadata
            .iter()
            .filter(|(k, _)| is_user_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.insert(DOCUMENT_ID_KEY.into(), document_id.into());
        metadata.insert(CHUNK_ID_KEY.into(), c.chunk_id.as_str().into());
        if let Some(rt) = &c.return_text {
            metadata.insert(RETURN_TEXT_KEY.into(), rt.as_str().into());
        }
        let vector = pgvector::Vector::from(c.vector.clone());
        let metadata = Value::Object(metadata);
        let custom = Value::Object(custom);
        let uuid_pk;
        let pk: &(dyn ToSql + Sync) = if self.pk_is_uuid {
            uuid_pk = chunk_uuid(&c.chunk_id);
            &uuid_pk
        } else {
            &c.chunk_id
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![pk, &vector, &c.text, &metadata];
        if self.mapping.custom_metadata_field.is_some() {
            params.push(&custom);
        }
        tx.execute(insert, &params).await.map_err(pg_err)?;
        Ok(())
    }

    /// Deletes every chunk of `document_id`; returns how many there were.
    pub async fn delete_document(&self, document_id: &str) -> Result<usize, IndexError> {
        let client = self.client().await?;
        let n = client
            .execute(&self.sql.delete_document, &[&document_id])
            .await
            .map_err(pg_err)?;
        Ok(n as usize)
    }

    /// Rows in the table.
    pub async fn count(&self) -> Result<usize, IndexError> {
        let client = self.client().await?;
        let row = client
            .query_one(&self.sql.count, &[])
            .await
            .map_err(pg_err)?;
        let n: i64 = row.try_get(0).map_err(pg_err)?;
        Ok(n.max(0) as usize)
    }

    /// Ids of the chunks that pass `filter` (all without one), sorted; an exact
    /// scan, no ranking.
    pub async fn chunk_ids(&self, filter: Option<&Filter>) -> Result<Vec<String>, IndexError> {
        let mut p = Params::default();
        let s = &self.sql;
        let sql = format!(
            "{} FROM {} WHERE {}",
            s.select,
            s.table,
            self.where_sql(filter, &mut p)
        );
        let client = self.client().await?;
        let rows = client.query(&sql, &p.refs()).await.map_err(pg_err)?;
        let mut ids = rows
            .iter()
            .map(|r| row_hit(r, 0.0).map(|h| h.chunk_id))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// The best `limit` hits after skipping `offset`, ordered by score, ties
    /// by chunk id (as the embedded index orders them).
    pub async fn search(&self, req: &SearchRequest) -> Result<Vec<Hit>, IndexError> {
        self.check_vector(&req.vector)?;
        let want = req.checked_want()?;
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        let mut hits = match req.search_type {
            SearchType::Semantic => self.semantic(req, want).await?,
            SearchType::Hybrid => self.hybrid(req, want.max(HYBRID_CANDIDATES)).await?,
        };
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.chunk_id.cmp(&b.chunk_id))
        });
        Ok(hits.into_iter().skip(req.offset).take(req.limit).collect())
    }

    /// The `k` nearest chunks that pass the filter.
    async fn semantic(&self, req: &SearchRequest, k: usize) -> Result<Vec<Hit>, IndexError> {
        let s = &self.sql;
        let mut p = Params::default();
        let q = p.push(pgvector::Vector::from(req.vector.clone()));
        let filter = self.where_sql(req.filter.as_ref(), &mut p);
        let sql = format!(
            "{}, ({} <=> {q})::float8 FROM {} WHERE {filter} ORDER BY {} <=> {q} LIMIT {}",
            s.select,
            s.vector,
            s.table,
            s.vector,
            p.push(k as i64)
        );
        let client = self.client().await?;
        let rows = client.query(&sql, &p.refs()).await.map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let distance: Option<f64> = r.try_get(3).map_err(pg_err)?;
                row_hit(r, semantic_score(distance))
            })
            .collect()
    }

    /// The union of the `k` nearest chunks and the `k` best by full-text rank,
    /// scored as the embedded index does: half the semantic score plus half
    /// the text rank over the best text rank.
    ///
    /// The text side ranks a bounded sample: up to `text_candidates` rows
    /// holding every query word, and as many holding any (the GIN index finds
    /// them; without it the scan stops at that many matches). Rows holding
    /// every word come first because they rank highest with `ts_rank_cd` and
    /// BM25 alike, and the sample of any-word rows is what a query of common
    /// words would otherwise spend its time on.
    async fn hybrid(&self, req: &SearchRequest, k: usize) -> Result<Vec<Hit>, IndexError> {
        let s = &self.sql;
        let mut p = Params::default();
        let q = p.push(pgvector::Vector::from(req.vector.clone()));
        let all_words = format!(
            "plainto_tsquery('{TEXT_SEARCH_CONFIG}', {}::text)",
            p.push(req.text.clone())
        );
        // plainto_tsquery ANDs the words; OR them, as BM25 ranks any of them.
        let any_word = format!("replace({all_words}::text, ' & ', ' | ')::tsquery");
        // The expression of the GIN index, so PostgreSQL uses it.
        let doc = format!("to_tsvector('{TEXT_SEARCH_CONFIG}', {})", s.text);
        let filter = self.where_sql(req.filter.as_ref(), &mut p);
        let k = p.push(k as i64);
        let cap = p.push(self.options.text_candidates as i64);
        let (pk, table, vector, text) = (&s.pk, &s.table, &s.vector, &s.text);
        let rank = |body: &str| {
            format!("ts_rank_cd(to_tsvector('{TEXT_SEARCH_CONFIG}', {body}), {any_word})::float8")
        };
        let (rank_sampled, rank_row) = (rank("basalt_body"), rank(text));
        // One word: the all-words tier would repeat the any-word one.
        let sql = format!(
            "WITH by_vector AS (SELECT {pk} AS basalt_id FROM {table} WHERE {filter} \
               ORDER BY {vector} <=> {q} LIMIT {k}), \
             all_sample AS (SELECT {pk} AS basalt_id, {text} AS basalt_body FROM {table} \
               WHERE numnode({all_words}) > 1 AND {doc} @@ {all_words} AND {filter} LIMIT {cap}), \
             any_sample AS (SELECT {pk} AS basalt_id, {text} AS basalt_body FROM {table} \
               WHERE {doc} @@ {any_word} AND {filter} LIMIT {cap}), \
             by_text AS ( \
               (SELECT basalt_id, {rank_sampled} AS basalt_rank FROM all_sample \
                 ORDER BY 2 DESC, 1 LIMIT {k}) \
               UNION \
               (SELECT basalt_id, {rank_sampled} AS basalt_rank FROM any_sample \
                 ORDER BY 2 DESC, 1 LIMIT {k})), \
             candidates AS (SELECT basalt_id, max(basalt_rank) AS basalt_rank FROM \
               (SELECT basalt_id, NULL::float8 AS basalt_rank FROM by_vector \
                UNION ALL SELECT basalt_id, basalt_rank FROM by_text) u GROUP BY basalt_id) \
             {select}, ({vector} <=> {q})::float8, COALESCE(c.basalt_rank, {rank_row}) \
             FROM {table} JOIN candidates c ON {pk} = c.basalt_id",
            select = s.select,
        );
        let client = self.client().await?;
        let rows = client.query(&sql, &p.refs()).await.map_err(pg_err)?;
        let mut scored = Vec::with_capacity(rows.len());
        for r in &rows {
            let distance: Option<f64> = r.try_get(3).map_err(pg_err)?;
            let rank: Option<f64> = r.try_get(4).map_err(pg_err)?;
            scored.push((r, semantic_score(distance), rank.unwrap_or(0.0)));
        }
        let best_rank = scored.iter().map(|(_, _, t)| *t).fold(0.0, f64::max);
        scored
            .into_iter()
            .map(|(r, sem, rank)| {
                let kw = if best_rank > 0.0 {
                    (rank / best_rank).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                row_hit(r, (0.5 * sem + 0.5 * kw).clamp(0.0, 1.0))
            })
            .collect()
    }

    fn where_sql(&self, filter: Option<&Filter>, p: &mut Params) -> String {
        match filter {
            Some(f) => filter_sql(f, &self.sql.meta, p),
            None => "true".into(),
        }
    }

    /// The embedded index's checks: the dimension count, finite, not all zeros.
    fn check_vector(&self, v: &[f32]) -> Result<(), IndexError> {
        if v.len() != self.dimensions {
            return Err(IndexError::Dimensions {
                expected: self.dimensions,
                got: v.len(),
            });
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::Invalid(
                "a vector holds a value that is not a finite number".into(),
            ));
        }
        if v.iter().all(|x| *x == 0.0) {
            return Err(IndexError::Invalid("a vector is all zeros".into()));
        }
        Ok(())
    }

    /// A pooled connection; one the server closed (a restart) is replaced.
    async fn client(&self) -> Result<deadpool_postgres::Client, IndexError> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_err(e, self.options.pool_size))
    }
}

/// `(1 + cos) / 2` from pgvector's cosine distance `1 - cos`; a zero vector
/// (NaN distance) scores 0.
fn semantic_score(distance: Option<f64>) -> f64 {
    match distance {
        Some(d) if d.is_finite() => (1.0 - d / 2.0).clamp(0.0, 1.0),
        _ => 0.0,
    }
}

/// A hit from a `SELECT pk::text, text, metadata` row.
fn row_hit(row: &tokio_postgres::Row, score: f64) -> Result<Hit, IndexError> {
    let pk: String = row.try_get(0).map_err(pg_err)?;
    let text: Option<String> = row.try_get(1).map_err(pg_err)?;
    let metadata: Option<Value> = row.try_get(2).map_err(pg_err)?;
    let mut metadata = match metadata {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let take = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let chunk_id = take(&mut metadata, CHUNK_ID_KEY).unwrap_or(pk);
    let document_id = take(&mut metadata, DOCUMENT_ID_KEY).unwrap_or_default();
    let return_text = take(&mut metadata, RETURN_TEXT_KEY);
    metadata.retain(|k, _| !k.starts_with(PRIVATE_PREFIX));
    Ok(Hit {
        chunk_id,
        document_id,
        text: return_text.or(text).unwrap_or_default(),
        metadata,
        score,
    })
}

fn chunk_uuid(chunk_id: &str) -> Uuid {
    Uuid::new_v5(&CHUNK_NAMESPACE, chunk_id.as_bytes())
}

async fn open(conn_str: &str) -> Result<Client, IndexError> {
    let (client, connection) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .map_err(pg_err)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection closed: {e}");
        }
    });
    set_up_session(&client).await;
    Ok(client)
}

/// Every session's settings.
async fn set_up_session(client: &Client) {
    // pgvector >= 0.8: keep scanning the HNSW graph until a filtered query has
    // its LIMIT (else it stops at ef_search candidates). Older versions lack it.
    if let Err(e) = client
        .batch_execute("SET hnsw.iterative_scan = strict_order")
        .await
    {
        tracing::debug!("hnsw.iterative_scan not set: {e}");
    }
}

/// A pool of at most `size` connections; each is set up as [`open`] sets one
/// up, and one the server closed is dropped when next taken.
fn pool(conn_str: &str, size: usize) -> Result<Pool, IndexError> {
    let mut config: tokio_postgres::Config = conn_str.parse().map_err(pg_err)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .post_create(Hook::async_fn(|client: &mut ClientWrapper, _| {
            Box::pin(async move {
                set_up_session(client).await;
                Ok(())
            })
        }))
        .build()
        .map_err(|e| IndexError::Backend(format!("PostgreSQL connection pool: {e}")))
}

fn pool_err(e: PoolError, size: usize) -> IndexError {
    match e {
        PoolError::Backend(e) => pg_err(e),
        PoolError::Timeout(_) => IndexError::Backend(format!(
            "PostgreSQL: no connection came free or opened within {} s ({} at most are open \
             per knowledge base)",
            POOL_WAIT.as_secs(),
            size
        )),
        e => IndexError::Backend(format!("PostgreSQL connection pool: {e}")),
    }
}

/// The full-text index HYBRID wants, as Bedrock's Aurora guide creates it.
pub fn text_index_ddl(mapping: &RdsMapping) -> String {
    format!(
        "CREATE INDEX ON {} USING gin (to_tsvector('{TEXT_SEARCH_CONFIG}', {}));",
        mapping.quoted_table(),
        quote_ident(&mapping.text_field)
    )
}

/// Whether a valid, whole-table GIN index on the text column's
/// `to_tsvector('simple', ...)` exists (a `varchar` column's shows a cast).
async fn has_text_index(client: &Client, mapping: &RdsMapping) -> Result<bool, IndexError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i \
               JOIN pg_class c ON c.oid = i.indexrelid \
               JOIN pg_am am ON am.oid = c.relam \
               WHERE i.indrelid = to_regclass($1::text) AND am.amname = 'gin' \
                 AND i.indnatts = 1 AND i.indisvalid AND i.indpred IS NULL \
                 AND pg_get_indexdef(i.indexrelid, 1, false) IN ( \
                   format('to_tsvector(%L::regconfig, %s)', $2::text, quote_ident($3::text)), \
                   format('to_tsvector(%L::regconfig, (%s)::text)', $2::text, quote_ident($3::text))))",
            &[
                &mapping.quoted_table(),
                &TEXT_SEARCH_CONFIG,
                &mapping.text_field,
            ],
        )
        .await
        .map_err(pg_err)?;
    row.try_get(0).map_err(pg_err)
}

/// Checks the mapped table and columns; returns whether the primary key is a
/// `uuid` (else text).
async fn check_table(
    client: &Client,
    mapping: &RdsMapping,
    dimensions: usize,
) -> Result<bool, IndexError> {
    let (schema, table) = mapping.split_table();
    let rows = client
        .query(
            "SELECT a.attname::text, t.typname::text, a.atttypmod \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             WHERE c.relname = $2::text AND c.relkind IN ('r', 'p', 'v', 'f') \
               AND CASE WHEN $1::text IS NULL THEN pg_table_is_visible(c.oid) \
                        ELSE n.nspname = $1::text END \
               AND a.attnum > 0 AND NOT a.attisdropped",
            &[&schema, &table],
        )
        .await
        .map_err(pg_err)?;
    if rows.is_empty() {
        return Err(IndexError::Backend(format!(
            "table {} (rdsConfiguration.tableName) does not exist",
            mapping.table_name
        )));
    }
    let mut columns: HashMap<String, (String, i32)> = HashMap::new();
    for r in &rows {
        let name: String = r.try_get(0).map_err(pg_err)?;
        let ty: String = r.try_get(1).map_err(pg_err)?;
        let typmod: i32 = r.try_get(2).map_err(pg_err)?;
        columns.insert(name, (ty, typmod));
    }
    let column = |member: &str, name: &str, allowed: &[&str]| -> Result<String, IndexError> {
        let Some((ty, _)) = columns.get(name) else {
            return Err(IndexError::Backend(format!(
                "table {} has no column {name:?} (rdsConfiguration.fieldMapping.{member})",
                mapping.table_name
            )));
        };
        if !allowed.contains(&ty.as_str()) {
            return Err(IndexError::Backend(format!(
                "column {name:?} of table {} (rdsConfiguration.fieldMapping.{member}) has type \
                 {ty}; expected {}",
                mapping.table_name,
                allowed.join(" or ")
            )));
        }
        Ok(ty.clone())
    };
    let pk = column(
        "primaryKeyField",
        &mapping.primary_key_field,
        &["uuid", "text", "varchar"],
    )?;
    column("vectorField", &mapping.vector_field, &["vector"])?;
    column("textField", &mapping.text_field, &["text", "varchar"])?;
    column("metadataField", &mapping.metadata_field, &["json", "jsonb"])?;
    if let Some(c) = &mapping.custom_metadata_field {
        column("customMetadataField", c, &["jsonb", "json"])?;
    }
    // pgvector keeps the dimension count as the type modifier (-1: unconstrained).
    if let Some((_, typmod)) = columns.get(&mapping.vector_field) {
        if *typmod > 0 && *typmod as usize != dimensions {
            return Err(IndexError::Backend(format!(
                "column {:?} of table {} holds vectors of {typmod} dimensions but the \
                 embedding model makes {dimensions}",
                mapping.vector_field, mapping.table_name
            )));
        }
    }
    Ok(pk == "uuid")
}

fn pg_err(e: tokio_postgres::Error) -> IndexError {
    match e.as_db_error() {
        Some(db) => IndexError::Backend(format!(
            "PostgreSQL: {}{}",
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        )),
        None => IndexError::Backend(format!("PostgreSQL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mapping_reads_bedrocks_rds_configuration() {
        let m: RdsMapping = serde_json::from_value(json!({
            "resourceArn": "arn:aws:rds:us-east-1:000000000000:cluster:kb",
            "credentialsSecretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:kb",
            "databaseName": "postgres",
            "tableName": "bedrock_integration.bedrock_kb",
            "fieldMapping": {
                "primaryKeyField": "id",
                "vectorField": "embedding",
                "textField": "chunks",
                "metadataField": "metadata",
                "customMetadataField": "custom_metadata"
            }
        }))
        .expect("parses");
        assert_eq!(
            m,
            RdsMapping::bedrock_default("bedrock_integration.bedrock_kb")
        );
        assert_eq!(m.quoted_table(), "\"bedrock_integration\".\"bedrock_kb\"");
        let back: RdsMapping =
            serde_json::from_value(serde_json::to_value(&m).expect("serialises")).expect("parses");
        assert_eq!(back, m);

        let e = serde_json::from_value::<RdsMapping>(json!({
            "tableName": "t",
            "fieldMapping": {"primaryKeyField": "id", "vectorField": "", "textField": "c", "metadataField": "m"}
        }))
        .expect_err("refused")
        .to_string();
        assert!(
            e.contains("fieldMapping.vectorField must not be empty"),
            "{e}"
        );
        let e = serde_json::from_value::<RdsMapping>(json!({
            "tableName": "t",
            "fieldMapping": {"primaryKeyField": "id", "textField": "c", "metadataField": "m"}
        }))
        .expect_err("refused")
        .to_string();
        assert!(e.contains("vectorField"), "{e}");
    }

    #[test]
    fn semantic_scores() {
        assert_eq!(semantic_score(Some(0.0)), 1.0);
        assert_eq!(semantic_score(Some(1.0)), 0.5);
        assert_eq!(semantic_score(Some(2.0)), 0.0);
        assert_eq!(semantic_score(Some(f64::NAN)), 0.0);
        assert_eq!(semantic_score(None), 0.0);
    }
}
