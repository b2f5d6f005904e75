"""The ``s3_server`` fixture serves S3 on 127.0.0.1 (no Basalt server involved)."""

from __future__ import annotations

import urllib.parse


def test_s3_server_creates_buckets_and_lists_objects(s3_server):
    assert urllib.parse.urlsplit(s3_server.endpoint).hostname == "127.0.0.1"
    s3 = s3_server.client()
    s3.create_bucket(Bucket="harness-check")
    s3.put_object(Bucket="harness-check", Key="in/a.jsonl", Body=b'{"recordId": "1"}\n')
    s3.put_object(Bucket="harness-check", Key="in/b.jsonl", Body=b"")
    s3.put_object(Bucket="harness-check", Key="other.txt", Body=b"x")

    listed = s3.list_objects_v2(Bucket="harness-check", Prefix="in/")
    assert [o["Key"] for o in listed["Contents"]] == ["in/a.jsonl", "in/b.jsonl"]
    body = s3.get_object(Bucket="harness-check", Key="in/a.jsonl")["Body"].read()
    assert body == b'{"recordId": "1"}\n'
    assert "harness-check" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
