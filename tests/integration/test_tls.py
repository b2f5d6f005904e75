"""HTTPS: a server with --tls-self-signed (a local CA generated into the data dir) and
one with --tls-cert/--tls-key, reached by boto3, the AWS CLI and curl that trust the CA.
Plain HTTP stays on 127.0.0.1 beside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import SSLError

import harness


@pytest.fixture(scope="module")
def tls_server(start_server):
    port = harness.free_port()
    srv = start_server("tls", BASALT_TLS_SELF_SIGNED="1", BASALT_TLS_BIND=f"127.0.0.1:{port}")
    srv.tls_url = f"https://localhost:{port}"
    srv.ca = srv.data_dir / "tls" / "ca.pem"
    return srv


def _client(srv, service, url, verify):
    return boto3.session.Session().client(
        service, endpoint_url=url, region_name=harness.REGION, verify=verify,
        aws_access_key_id=srv.access_key_id, aws_secret_access_key=srv.secret_access_key,
        config=Config(retries={"max_attempts": 1}))


def test_boto3_over_https_with_the_generated_ca(tls_server):
    assert tls_server.ca.is_file()
    key = tls_server.data_dir / "tls" / "server.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    runtime = _client(tls_server, "bedrock-runtime", tls_server.tls_url, str(tls_server.ca))
    out = runtime.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                           messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                           inferenceConfig={"maxTokens": 4})
    assert out["output"]["message"]["content"][0]["text"]
    # Plain HTTP is still served.
    assert tls_server.client("bedrock").list_foundation_models()["modelSummaries"]


def test_an_untrusted_certificate_is_refused(tls_server):
    control = _client(tls_server, "bedrock", tls_server.tls_url, True)
    with pytest.raises(SSLError):
        control.list_foundation_models()


def test_aws_cli_and_curl_with_aws_ca_bundle(tls_server, tmp_path):
    cli = harness.find_aws_cli()
    if cli is None:
        pytest.skip("aws CLI not installed (pip install -r tests/integration/requirements.txt)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=tls_server.access_key_id,
               AWS_SECRET_ACCESS_KEY=tls_server.secret_access_key,
               AWS_DEFAULT_REGION=harness.REGION, AWS_CA_BUNDLE=str(tls_server.ca),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    proc = subprocess.run([cli, "bedrock", "list-foundation-models", "--endpoint-url",
                           tls_server.tls_url], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["modelSummaries"]
    curl = shutil.which("curl")
    if curl:
        proc = subprocess.run([curl, "-sS", "--cacert", str(tls_server.ca),
                               f"{tls_server.tls_url}/health"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["status"] == "ok"


def test_operator_certificate_files(tls_server, start_server):
    port = harness.free_port()
    tls_dir = tls_server.data_dir / "tls"
    srv = start_server("tls-files", BASALT_TLS_CERT=str(tls_dir / "server.pem"),
                       BASALT_TLS_KEY=str(tls_dir / "server.key"),
                       BASALT_TLS_BIND=f"127.0.0.1:{port}")
    control = _client(srv, "bedrock", f"https://127.0.0.1:{port}", str(tls_server.ca))
    assert control.list_foundation_models()["modelSummaries"]


# ---------------------------------------------------------------------- Bedrock API keys
def _api_key(srv, *extra):
    out = srv.cli("keys", "create", "--api-key", "--data-dir", str(srv.data_dir), *extra).stdout
    line = next(l for l in out.splitlines() if l.startswith("export AWS_BEARER_TOKEN_BEDROCK="))
    return line.split("=", 1)[1]


def test_api_key_valid_revoked_and_expired(tls_server, monkeypatch):
    from botocore.exceptions import ClientError

    token = _api_key(tls_server)
    runtime = harness.bearer_client(tls_server, "bedrock-runtime", token, monkeypatch)
    out = runtime.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                           messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                           inferenceConfig={"maxTokens": 4})
    assert out["output"]["message"]["content"][0]["text"]

    listed = tls_server.cli("keys", "list", "--data-dir", str(tls_server.data_dir)).stdout
    key_id = next(l.split()[1] for l in listed.splitlines() if l.startswith("api-key "))
    assert token not in listed
    tls_server.cli("keys", "revoke", "--data-dir", str(tls_server.data_dir), key_id)
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                         messages=[{"role": "user", "content": [{"text": "Hi"}]}])
    assert harness.error_code(e.value) == "UnrecognizedClientException"
    assert "revoked" in harness.error_message(e.value)

    expired = _api_key(tls_server, "--expires-at", "2020-01-01T00:00:00Z")
    control = harness.bearer_client(tls_server, "bedrock", expired, monkeypatch)
    with pytest.raises(ClientError) as e:
        control.list_foundation_models()
    assert harness.error_code(e.value) == "UnrecognizedClientException"
    assert "expired" in harness.error_message(e.value)

    forged = harness.bearer_client(tls_server, "bedrock", token[:-4] + "AAAA", monkeypatch)
    with pytest.raises(ClientError) as e:
        forged.list_foundation_models()
    assert harness.error_code(e.value) == "UnrecognizedClientException"


def test_api_key_only_stores_a_hash(tls_server):
    token = _api_key(tls_server, "--expires-in-days", "30")
    db = (tls_server.data_dir / "basalt.db").read_bytes()
    wal = tls_server.data_dir / "basalt.db-wal"
    stored = db + (wal.read_bytes() if wal.exists() else b"")
    assert token.encode() not in stored
