//! ObjectStorage against a real S3-compatible server: moto's server mode from the test
//! venv (`scripts/setup.sh --tests` installs it), started on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use basalt_objects::{ObjectError, ObjectStorage, S3Endpoint, S3Uri};
use bytes::Bytes;

/// The moto server; killed when dropped, so a failing test does not leave it running.
struct Moto {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server_bin() -> PathBuf {
    // crates/basalt-objects -> the workspace root
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .and_then(|p| p.parent())
        .expect("workspace root above crates/basalt-objects");
    let bin = root.join(".venv/bin/moto_server");
    assert!(
        bin.exists(),
        "{} is missing: run `scripts/setup.sh --tests` from the repository root to install \
         the test tools (moto's S3 server among them)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// One plain HTTP/1.1 request; moto does not check signatures, so none is needed to
/// create a bucket (object_store has no call for that).
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn start_moto(env: &[(&str, &str)]) -> Moto {
    let bin = moto_server_bin();
    let log = std::env::temp_dir().join(format!("basalt-objects-moto-{}.log", std::process::id()));
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("moto log file"))
        .stderr(
            std::fs::File::create(&log)
                .and_then(|f| f.try_clone())
                .expect("moto log file"),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http(port, "GET", "/") {
            if r.starts_with("HTTP/1.") {
                return moto;
            }
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on {} within 60 s; its log: {}\n{}",
            moto.endpoint,
            moto.log.display(),
            std::fs::read_to_string(&moto.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_bucket(moto: &Moto, bucket: &str) {
    let port = moto
        .endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let r = http(port, "PUT", &format!("/{bucket}")).expect("PUT bucket");
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {r}"
    );
}

fn endpoint(moto: &Moto) -> S3Endpoint {
    S3Endpoint {
        url: moto.endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
    }
}

fn uri(s: &str) -> S3Uri {
    S3Uri::parse(s).expect("valid URI in test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_storage_against_moto() {
    let moto = start_moto(&[]);
    create_bucket(&moto, "basalt-test");
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = ObjectStorage::new(dir.path(), Some(endpoint(&moto)));

    // put / get / head
    let a = uri("s3://basalt-test/jobs/in/a.jsonl");
    let body = Bytes::from_static(b"{\"recordId\":\"r1\",\"modelInput\":{}}\n");
    storage.put(&a, body.clone()).await.expect("put");
    assert_eq!(storage.get(&a).await.expect("get"), body);
    let m = storage.head(&a).await.expect("head");
    assert_eq!(m.uri, a);
    assert_eq!(m.size, body.len() as u64);
    assert!(m.e_tag.is_some());
    let now = time::OffsetDateTime::now_utc();
    assert!(
        (now - m.last_modified).abs() < time::Duration::minutes(5),
        "{}",
        m.last_modified
    );

    // list: recursive, sorted, string prefixes
    for key in [
        "jobs/in/b/c.jsonl",
        "jobs/input.jsonl",
        "other/x",
        "a b/ü.txt",
    ] {
        storage
            .put(
                &uri("s3://basalt-test").join(key),
                Bytes::from(key.to_string()),
            )
            .await
            .expect("put");
    }
    let keys =
        |v: Vec<basalt_objects::ObjectMeta>| v.into_iter().map(|m| m.uri.key).collect::<Vec<_>>();
    assert_eq!(
        keys(
            storage
                .list(&uri("s3://basalt-test/jobs/in/"))
                .await
                .expect("list")
        ),
        ["jobs/in/a.jsonl", "jobs/in/b/c.jsonl"]
    );
    assert_eq!(
        keys(
            storage
                .list(&uri("s3://basalt-test/jobs/in"))
                .await
                .expect("list")
        ),
        ["jobs/in/a.jsonl", "jobs/in/b/c.jsonl", "jobs/input.jsonl"]
    );
    assert_eq!(
        keys(storage.list(&uri("s3://basalt-test/")).await.expect("list")),
        [
            "a b/ü.txt",
            "jobs/in/a.jsonl",
            "jobs/in/b/c.jsonl",
            "jobs/input.jsonl",
            "other/x"
        ]
    );
    assert_eq!(
        storage
            .get(&uri("s3://basalt-test/a b/ü.txt"))
            .await
            .expect("get"),
        Bytes::from_static("a b/ü.txt".as_bytes())
    );
    let listed = storage
        .list(&uri("s3://basalt-test/jobs/in/a"))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, body.len() as u64);

    // delete, then NotFound; deleting again succeeds as in S3
    storage.delete(&a).await.expect("delete");
    match storage.get(&a).await {
        Err(ObjectError::NotFound(msg)) => {
            assert!(msg.contains("s3://basalt-test/jobs/in/a.jsonl"), "{msg}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        storage.head(&a).await,
        Err(ObjectError::NotFound(_))
    ));
    assert!(!storage.exists(&a).await.expect("exists"));
    storage.delete(&a).await.expect("delete again");

    // a bucket that does not exist, for every operation
    let missing = uri("s3://no-such-bucket-here/x");
    for (op, r) in [
        ("get", storage.get(&missing).await.map(|_| ())),
        ("put", storage.put(&missing, Bytes::new()).await),
        ("head", storage.head(&missing).await.map(|_| ())),
        ("list", storage.list(&missing).await.map(|_| ())),
    ] {
        match r {
            Err(ObjectError::NoSuchBucket(msg)) => {
                assert!(
                    msg.contains("no-such-bucket-here") && msg.contains(&moto.endpoint),
                    "{op}: {msg}"
                )
            }
            other => panic!("{op}: expected NoSuchBucket, got {other:?}"),
        }
    }

    // the size limit applies to remote objects too
    let small = ObjectStorage::with_max_get_bytes(dir.path(), storage.endpoint().cloned(), 4);
    let five = uri("s3://basalt-test/five");
    small
        .put(&five, Bytes::from_static(b"12345"))
        .await
        .expect("put");
    assert!(matches!(
        small.get(&five).await,
        Err(ObjectError::TooLarge {
            size: 5,
            limit: 4,
            ..
        })
    ));

    drop(moto);
}

/// With moto's authentication on, keys it does not know are refused (403), which must
/// read as AccessDenied and name the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_credentials_are_access_denied() {
    let moto = start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = ObjectStorage::new(dir.path(), Some(endpoint(&moto)));
    let x = uri("s3://basalt-test/x");
    for (op, r) in [
        ("get", storage.get(&x).await.map(|_| ())),
        ("head", storage.head(&x).await.map(|_| ())),
        ("put", storage.put(&x, Bytes::new()).await),
        ("list", storage.list(&x).await.map(|_| ())),
    ] {
        match r {
            Err(ObjectError::AccessDenied(msg)) => {
                assert!(
                    msg.contains("s3://basalt-test/x")
                        && msg.contains("credentials")
                        // A HEAD answer has no body to name the reason.
                        && (op == "head" || msg.contains("InvalidAccessKeyId")),
                    "{op}: {msg}"
                )
            }
            other => panic!("{op}: expected AccessDenied, got {other:?}"),
        }
    }
}
