use super::*;

fn uri(s: &str) -> S3Uri {
    S3Uri::parse(s).expect("valid URI in test")
}

fn invalid(s: &str) -> String {
    match S3Uri::parse(s) {
        Err(ObjectError::InvalidUri(m)) => m,
        other => panic!("{s}: expected InvalidUri, got {other:?}"),
    }
}

#[test]
fn parses_bucket_and_key() {
    let u = uri("s3://my-bucket/data/in/x.jsonl");
    assert_eq!(u.bucket, "my-bucket");
    assert_eq!(u.key, "data/in/x.jsonl");
    assert!(!u.is_prefix());
    assert_eq!(u.file_name(), "x.jsonl");
    assert_eq!(u.to_string(), "s3://my-bucket/data/in/x.jsonl");

    let p = uri("s3://my-bucket/data/in/");
    assert_eq!(p.key, "data/in/");
    assert!(p.is_prefix());
    assert_eq!(p.file_name(), "");

    for s in ["s3://my-bucket", "s3://my-bucket/"] {
        let b = uri(s);
        assert_eq!(b.bucket, "my-bucket");
        assert_eq!(b.key, "");
        assert!(b.is_prefix());
        assert_eq!(b.to_string(), "s3://my-bucket/");
    }
    assert_eq!(
        "s3://a.b-c/k".parse::<S3Uri>().expect("parses").bucket,
        "a.b-c"
    );
    // Keys may hold characters S3 allows; they round-trip.
    assert_eq!(uri("s3://bkt/a b/ü#1=x.txt").key, "a b/ü#1=x.txt");
}

#[test]
fn rejects_bad_uris_with_a_reason() {
    assert!(invalid("https://bkt/key").contains("expected s3://bucket/key"));
    assert!(invalid("bkt/key").contains("not an S3 URI"));
    assert!(invalid("s3://").contains("empty"));
    assert!(invalid("s3:///key").contains("empty"));
    assert!(invalid("s3://ab/k").contains("3 to 63"));
    assert!(invalid(&format!("s3://{}/k", "a".repeat(64))).contains("3 to 63"));
    assert!(invalid("s3://My_Bucket/k").contains("lowercase"));
    assert!(invalid("s3://-bkt/k").contains("start and end"));
    assert!(invalid("s3://bkt./k").contains("start and end"));
    assert!(invalid("s3://a..b/k").contains("'..'"));
    assert!(invalid("s3://bkt//etc/passwd").contains("starts with '/'"));
    assert!(invalid("s3://bkt/a//b").contains("empty path segment"));
    assert!(invalid("s3://bkt/../other/x").contains("'..'"));
    assert!(invalid("s3://bkt/a/../../x").contains("'..'"));
    assert!(invalid("s3://bkt/a/./x").contains("'.'"));
    assert!(invalid("s3://bkt/a\nb").contains("control"));
    assert!(invalid(&format!("s3://bkt/{}", "k".repeat(1025))).contains("1024"));
}

#[test]
fn join_treats_the_uri_as_a_folder() {
    assert_eq!(
        uri("s3://bkt/out").join("job1/x.jsonl.out").to_string(),
        "s3://bkt/out/job1/x.jsonl.out"
    );
    assert_eq!(uri("s3://bkt/out/").join("x").to_string(), "s3://bkt/out/x");
    assert_eq!(uri("s3://bkt").join("x").to_string(), "s3://bkt/x");
    assert_eq!(uri("s3://bkt/out").join("/x").key, "out/x");
    assert_eq!(uri("s3://bkt/out").join("sub/").key, "out/sub/");
}

#[tokio::test]
async fn joined_keys_cannot_escape_the_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("s3/bkt")).expect("mkdir");
    std::fs::write(dir.path().join("secret"), b"no").expect("write");
    let storage = ObjectStorage::new(dir.path(), None);
    let base = uri("s3://bkt/in/");
    for name in ["../../secret", "../x", "a/../../b", "./x", "a//b"] {
        let escaped = base.join(name);
        for r in [
            storage.get(&escaped).await.map(|_| ()),
            storage.put(&escaped, Bytes::from_static(b"x")).await,
            storage.head(&escaped).await.map(|_| ()),
            storage.delete(&escaped).await,
            storage.list(&escaped).await.map(|_| ()),
        ] {
            assert!(
                matches!(r, Err(ObjectError::InvalidUri(_))),
                "{escaped}: {r:?}"
            );
        }
    }
    // A hand-built URI skips parse; it is checked all the same.
    let raw = S3Uri {
        bucket: "bkt".into(),
        key: "/etc/passwd".into(),
    };
    assert!(matches!(
        storage.get(&raw).await,
        Err(ObjectError::InvalidUri(_))
    ));
    let raw_bucket = S3Uri {
        bucket: "..".into(),
        key: "secret".into(),
    };
    assert!(matches!(
        storage.get(&raw_bucket).await,
        Err(ObjectError::InvalidUri(_))
    ));
    assert!(std::fs::read(dir.path().join("secret")).is_ok());
}

fn local() -> (tempfile::TempDir, ObjectStorage) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("s3/bkt")).expect("mkdir");
    let storage = ObjectStorage::new(dir.path(), None);
    (dir, storage)
}

#[tokio::test]
async fn local_put_get_head_list_delete() {
    let (dir, storage) = local();
    let a = uri("s3://bkt/data/in/a.jsonl");
    storage
        .put(&a, Bytes::from_static(b"{\"recordId\":\"1\"}\n"))
        .await
        .expect("put");
    // The object is a plain file in the bucket directory.
    assert_eq!(
        std::fs::read(dir.path().join("s3/bkt/data/in/a.jsonl")).expect("file"),
        b"{\"recordId\":\"1\"}\n"
    );
    assert_eq!(
        storage.get(&a).await.expect("get"),
        Bytes::from_static(b"{\"recordId\":\"1\"}\n")
    );
    let before = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let m = storage.head(&a).await.expect("head");
    assert_eq!(m.uri, a);
    assert_eq!(m.size, 17);
    assert!(m.last_modified > before, "{}", m.last_modified);
    assert!(storage.exists(&a).await.expect("exists"));

    for key in [
        "data/input.jsonl",
        "data/in/b/c.jsonl",
        "other/x",
        "top",
        "a b/ü.txt",
    ] {
        storage
            .put(&uri("s3://bkt/").join(key), Bytes::from(key.to_string()))
            .await
            .expect("put");
    }
    let keys = |v: Vec<ObjectMeta>| v.into_iter().map(|m| m.uri.key).collect::<Vec<_>>();
    assert_eq!(
        keys(storage.list(&uri("s3://bkt/data/in/")).await.expect("list")),
        ["data/in/a.jsonl", "data/in/b/c.jsonl"]
    );
    // A prefix without '/' is a string prefix, as in S3.
    assert_eq!(
        keys(storage.list(&uri("s3://bkt/data/in")).await.expect("list")),
        ["data/in/a.jsonl", "data/in/b/c.jsonl", "data/input.jsonl"]
    );
    assert_eq!(
        keys(storage.list(&uri("s3://bkt")).await.expect("list")),
        [
            "a b/ü.txt",
            "data/in/a.jsonl",
            "data/in/b/c.jsonl",
            "data/input.jsonl",
            "other/x",
            "top"
        ]
    );
    assert_eq!(
        storage.get(&uri("s3://bkt/a b/ü.txt")).await.expect("get"),
        Bytes::from_static("a b/ü.txt".as_bytes())
    );
    assert!(storage
        .list(&uri("s3://bkt/nothing/here/"))
        .await
        .expect("list")
        .is_empty());

    storage.delete(&a).await.expect("delete");
    assert!(matches!(
        storage.get(&a).await,
        Err(ObjectError::NotFound(_))
    ));
    assert!(!storage.exists(&a).await.expect("exists"));
    // Deleting what is not there succeeds, as in S3.
    storage.delete(&a).await.expect("delete again");
    storage
        .delete(&uri("s3://bkt/data/in/b/c.jsonl"))
        .await
        .expect("delete");
    // Folders left empty go too.
    assert!(!dir.path().join("s3/bkt/data/in").exists());
    assert!(dir.path().join("s3/bkt").is_dir());
}

#[tokio::test]
async fn local_errors_say_what_to_do() {
    let (dir, storage) = local();
    let missing = uri("s3://bkt/nope.txt");
    match storage.get(&missing).await {
        Err(ObjectError::NotFound(m)) => assert!(m.contains("s3://bkt/nope.txt"), "{m}"),
        other => panic!("{other:?}"),
    }
    match storage.head(&missing).await {
        Err(ObjectError::NotFound(_)) => {}
        other => panic!("{other:?}"),
    }

    let nobucket = uri("s3://no-bucket/x");
    let want = dir.path().join("s3/no-bucket").display().to_string();
    for r in [
        storage.get(&nobucket).await.map(|_| ()),
        storage.put(&nobucket, Bytes::new()).await,
        storage.head(&nobucket).await.map(|_| ()),
        storage.list(&nobucket).await.map(|_| ()),
        storage.delete(&nobucket).await,
    ] {
        match r {
            Err(ObjectError::NoSuchBucket(m)) => {
                assert!(m.contains(&want) && m.contains("create"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
    // A bucket made while the storage is in use is seen at once.
    std::fs::create_dir_all(dir.path().join("s3/no-bucket")).expect("mkdir");
    storage.put(&nobucket, Bytes::new()).await.expect("put");

    match storage.get(&uri("s3://bkt/prefix/")).await {
        Err(ObjectError::InvalidUri(m)) => assert!(m.contains("prefix"), "{m}"),
        other => panic!("{other:?}"),
    }
    // object_store keeps `name#<digits>` for its own staging files.
    assert!(matches!(
        storage.put(&uri("s3://bkt/x#1"), Bytes::new()).await,
        Err(ObjectError::InvalidUri(_))
    ));
}

#[tokio::test]
async fn get_refuses_objects_over_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("s3/bkt")).expect("mkdir");
    let storage = ObjectStorage::with_max_get_bytes(dir.path(), None, 4);
    let small = uri("s3://bkt/small");
    let big = uri("s3://bkt/big");
    storage
        .put(&small, Bytes::from_static(b"1234"))
        .await
        .expect("put");
    storage
        .put(&big, Bytes::from_static(b"12345"))
        .await
        .expect("put");
    assert_eq!(storage.get(&small).await.expect("get").len(), 4);
    match storage.get(&big).await {
        Err(
            e @ ObjectError::TooLarge {
                size: 5, limit: 4, ..
            },
        ) => {
            assert!(e.to_string().contains("s3://bkt/big"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn storage_is_cheap_to_share() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<ObjectStorage>();
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = S3Endpoint {
        url: "http://127.0.0.1:9".into(),
        region: "us-east-1".into(),
        access_key_id: "AKID".into(),
        secret_access_key: "very-secret".into(),
    };
    let storage = ObjectStorage::new(dir.path(), Some(ep));
    assert!(!format!("{storage:?}").contains("very-secret"));
}

#[test]
fn reads_s3_error_codes() {
    let body = "403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code>\
                <Message>The AWS Access Key Id you provided does not exist</Message></Error>";
    assert_eq!(
        xml_field(body, "Code").as_deref(),
        Some("InvalidAccessKeyId")
    );
    assert_eq!(
        xml_field(body, "Message").as_deref(),
        Some("The AWS Access Key Id you provided does not exist")
    );
    assert_eq!(xml_field(body, "BucketName"), None);
    assert_eq!(xml_field("no xml", "Code"), None);
}
