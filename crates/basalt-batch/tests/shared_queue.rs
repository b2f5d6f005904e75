//! Job state in a real PostgreSQL (`basalt_pgvector::test_server`): several nodes
//! claiming records of one job never get the same record, a lapsed lease hands
//! records over, and two runners on one database finish a job together with every
//! record written once and the outputs written by one of them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use basalt_batch::job::{job_arn, new_job_id, CreateJobRequest};
use basalt_batch::postgres::PgJobs;
use basalt_batch::runner::{Invoked, Invoker, MANIFEST_NAME};
use basalt_batch::store::JobStore;
use basalt_batch::{InvocationType, Job, JobStatus, RecordError, Runner, RunnerSettings};
use basalt_objects::ObjectStorage;
use basalt_pgvector::test_server::TestPostgres;
use basalt_store::Checkpoint;
use serde_json::{json, Value};
use time::OffsetDateTime;

fn server() -> Option<TestPostgres> {
    TestPostgres::start().expect("a PostgreSQL server for the test")
}

fn checkpoint(file: u32, line: u64, node: &str) -> Checkpoint {
    Checkpoint {
        file,
        line,
        ok: true,
        input_tokens: 1,
        output_tokens: 1,
        output: format!("{file}:{line} by {node}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_overlap_and_every_record_is_saved_once() {
    let Some(pg) = server() else { return };
    let store: Arc<dyn JobStore> = Arc::new(
        PgJobs::connect(&pg.conn_str("postgres"))
            .await
            .expect("connects"),
    );
    // Two nodes starting together both create the schema without tripping.
    PgJobs::connect(&pg.conn_str("postgres"))
        .await
        .expect("second connect");
    let lines: Vec<u64> = (0..600).collect();
    store
        .seed_records("job", 0, lines.clone())
        .await
        .expect("seed");
    store.seed_records("job", 1, lines).await.expect("seed");
    store
        .seed_records("job", 1, vec![0, 1])
        .await
        .expect("seeding again is harmless");

    let mut nodes = Vec::new();
    for n in 0..8 {
        let store = Arc::clone(&store);
        nodes.push(tokio::spawn(async move {
            let node = format!("node-{n}");
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim_records("job", &node, 7, Duration::from_secs(60))
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return mine;
                }
                tokio::task::yield_now().await;
                let done = claimed
                    .iter()
                    .map(|&(f, l)| checkpoint(f, l, &node))
                    .collect();
                let saved = store
                    .complete_records("job", &node, done)
                    .await
                    .expect("complete");
                assert_eq!(saved, claimed.len(), "{node} keeps what it claimed");
                mine.extend(claimed);
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut workers = 0;
    for node in nodes {
        let mine = node.await.expect("node task");
        workers += usize::from(!mine.is_empty());
        for record in mine {
            assert!(seen.insert(record), "{record:?} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 1200);
    assert!(workers > 1, "the records were shared out");
    let saved = store.checkpoints("job").await.expect("checkpoints");
    assert_eq!(saved.len(), 1200);
    assert!(saved
        .windows(2)
        .all(|w| (w[0].file, w[0].line) < (w[1].file, w[1].line)));
    let totals = store.totals("job").await.expect("totals");
    assert_eq!((totals.processed, totals.input_tokens), (1200, 1200));
    let left = store.pending_records("job", "node-0").await.expect("left");
    assert_eq!((left.pending, left.held_by_others), (0, 0));
}

#[tokio::test]
async fn a_lapsed_lease_hands_the_records_to_another_node() {
    let Some(pg) = server() else { return };
    let store = PgJobs::connect(&pg.conn_str("postgres"))
        .await
        .expect("connects");
    store
        .seed_records("j", 0, (0..6).collect())
        .await
        .expect("seed");
    let short = Duration::from_millis(400);
    let a = store
        .claim_records("j", "a", 4, short)
        .await
        .expect("claim");
    assert_eq!(a, [(0, 0), (0, 1), (0, 2), (0, 3)]);
    let b = store
        .claim_records("j", "b", 10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(b, [(0, 4), (0, 5)], "a's live claims are not handed out");
    let left = store.pending_records("j", "b").await.expect("left");
    assert_eq!((left.pending, left.held_by_others), (6, 4));

    // A renewed lease holds past its first term.
    store.renew_claims("j", "a", short).await.expect("renew");
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.renew_claims("j", "a", short).await.expect("renew");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store
        .claim_records("j", "b", 10, Duration::from_secs(60))
        .await
        .expect("claim")
        .is_empty());

    // a stops renewing (it died): after the lease, b takes its records.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = store
        .claim_records("j", "b", 10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(taken, a);
    // a's late results are not kept; b's are.
    let late = a.iter().map(|&(f, l)| checkpoint(f, l, "a")).collect();
    assert_eq!(
        store.complete_records("j", "a", late).await.expect("late"),
        0
    );
    let all = (0..6).map(|l| checkpoint(0, l, "b")).collect();
    assert_eq!(store.complete_records("j", "b", all).await.expect("b"), 6);
    let outputs: Vec<String> = store
        .checkpoints("j")
        .await
        .expect("checkpoints")
        .into_iter()
        .map(|c| c.output)
        .collect();
    assert!(outputs.iter().all(|o| o.ends_with("by b")), "{outputs:?}");

    // A node that restarts frees what it held at once.
    store.seed_records("k", 0, vec![0]).await.expect("seed");
    store
        .claim_records("k", "c", 1, Duration::from_secs(3600))
        .await
        .expect("claim");
    store.release_claims("c").await.expect("release");
    assert_eq!(
        store
            .claim_records("k", "d", 1, Duration::from_secs(60))
            .await
            .expect("claim"),
        [(0, 0)]
    );
}

#[tokio::test]
async fn documents_update_atomically_and_tokens_keep_the_first_answer() {
    let Some(pg) = server() else { return };
    let store: Arc<dyn JobStore> = Arc::new(
        PgJobs::connect(&pg.conn_str("postgres"))
            .await
            .expect("connects"),
    );
    store.put("kind", "b", json!({"n": 0})).await.expect("put");
    store.put("kind", "a", json!({"n": 0})).await.expect("put");
    let mut adds = Vec::new();
    for _ in 0..20 {
        let store = Arc::clone(&store);
        adds.push(tokio::spawn(async move {
            store
                .update(
                    "kind",
                    "b",
                    Box::new(|d: &mut Value| d["n"] = json!(d["n"].as_i64().unwrap_or(0) + 1)),
                )
                .await
                .expect("update")
        }));
    }
    for add in adds {
        add.await.expect("task");
    }
    let listed = store.list("kind").await.expect("list");
    assert_eq!(
        listed,
        [json!({"n": 20}), json!({"n": 0})],
        "creation order, no lost update"
    );
    assert!(store
        .update("kind", "none", Box::new(|_| {}))
        .await
        .expect("update")
        .is_none());
    store
        .remember_response("Op", "t", "req".into(), json!({"arn": 1}))
        .await
        .expect("remember");
    store
        .remember_response("Op", "t", "other".into(), json!({"arn": 2}))
        .await
        .expect("remember");
    assert_eq!(
        store.idempotent_response("Op", "t").await.expect("token"),
        Some(("req".to_string(), json!({"arn": 1})))
    );
}

/// Echoes each record's text after a short pause, as a model would take time.
struct SlowEcho {
    calls: AtomicUsize,
}

impl Invoker for SlowEcho {
    fn chunk_size(&self, _: &str) -> usize {
        2
    }

    async fn invoke_many(
        &self,
        _: &str,
        _: InvocationType,
        inputs: Vec<Value>,
    ) -> Vec<Result<Invoked, RecordError>> {
        self.calls.fetch_add(inputs.len(), Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        inputs
            .into_iter()
            .map(|i| {
                Ok(Invoked {
                    output: json!({"echo": i["inputText"]}),
                    input_tokens: 1,
                    output_tokens: 1,
                })
            })
            .collect()
    }
}

fn runner(store: &Arc<dyn JobStore>, dir: &std::path::Path, node: &str) -> Arc<Runner<SlowEcho>> {
    Runner::with_settings(
        Arc::clone(store),
        ObjectStorage::new(dir, None),
        SlowEcho {
            calls: AtomicUsize::new(0),
        },
        RunnerSettings {
            node: node.into(),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(50),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_on_one_database_share_a_job_and_one_writes_the_output() {
    let Some(pg) = server() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    for bucket in ["in-bucket", "out-bucket"] {
        std::fs::create_dir_all(dir.path().join("s3").join(bucket)).expect("bucket");
    }
    let lines: Vec<String> = (0..60)
        .map(|i| {
            json!({"recordId": format!("R{i:02}"), "modelInput": {"inputText": format!("t{i}")}})
                .to_string()
        })
        .collect();
    std::fs::write(
        dir.path().join("s3/in-bucket/records.jsonl"),
        lines.join("\n"),
    )
    .expect("input");

    let url = pg.conn_str("postgres");
    let a_store: Arc<dyn JobStore> = Arc::new(PgJobs::connect(&url).await.expect("a"));
    let b_store: Arc<dyn JobStore> = Arc::new(PgJobs::connect(&url).await.expect("b"));
    let a = runner(&a_store, dir.path(), "node-a");
    let b = runner(&b_store, dir.path(), "node-b");

    let req: CreateJobRequest = serde_json::from_value(json!({
        "jobName": "shared",
        "roleArn": "arn:aws:iam::123456789012:role/R",
        "modelId": "amazon.titan-embed-text-v2:0",
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://in-bucket/records.jsonl"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out-bucket/"}}
    }))
    .expect("request");
    let valid = req.validate().expect("valid");
    let id = new_job_id();
    let job = Job::new(
        &req,
        &valid,
        job_arn("us-east-1", "123456789012", &id),
        req.model_id.clone(),
        OffsetDateTime::now_utc(),
    );
    a.spawn();
    b.spawn();
    a.submit(&job).await.expect("submit on a");
    // Created on a, seen on b.
    assert!(b.get(&id).await.expect("get").is_some());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let job = b.get(&id).await.expect("get").expect("job");
        if job.status.is_terminal() {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.message);
    assert_eq!(done.processed_record_count, Some(60));
    let ran_a = a.invoker().calls.load(Ordering::SeqCst);
    let ran_b = b.invoker().calls.load(Ordering::SeqCst);
    assert_eq!(ran_a + ran_b, 60, "no record ran twice");
    assert!(
        ran_a > 0 && ran_b > 0,
        "both nodes ran records ({ran_a}, {ran_b})"
    );

    let out = std::fs::read_to_string(
        dir.path()
            .join("s3/out-bucket")
            .join(&id)
            .join("records.jsonl.out"),
    )
    .expect("output");
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("line")["recordId"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let expected: Vec<String> = (0..60).map(|i| format!("R{i:02}")).collect();
    assert_eq!(ids, expected, "every record once, in input order");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(
            dir.path()
                .join("s3/out-bucket")
                .join(&id)
                .join(MANIFEST_NAME),
        )
        .expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["processedRecordCount"], 60);
    assert_eq!(manifest["successRecordCount"], 60);

    // Both ran records, each once; the ended job's per-record rows are removed.
    assert!(
        ran_a > 0 && ran_b > 0 && ran_a + ran_b == 60,
        "{ran_a} + {ran_b}"
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(conn);
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM basalt_batch_records WHERE job = $1",
            &[&id],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(left, 0);

    // Stopped from b, a job created on a ends Stopped for both.
    let stopped = Job::new(
        &req,
        &valid,
        job_arn("us-east-1", "123456789012", &new_job_id()),
        req.model_id.clone(),
        OffsetDateTime::now_utc(),
    );
    a.submit(&stopped).await.expect("submit");
    b.stop(stopped.id()).await.expect("stop");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = a.get(stopped.id()).await.expect("get").expect("job");
        if job.status == JobStatus::Stopped {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
