"""Per-account resource scoping: every key belongs to an account (`basalt keys create
--account-id`, default the server's --account-id), and the knowledge bases, guardrails,
jobs, async invocations, provisioned throughputs, imported models and invocation
logging configuration one account creates are invisible to every other. Another
account's resource, by ID, name or ARN, is answered as Bedrock answers for one that
does not exist (ResourceNotFoundException; ValidationException for GetAsyncInvoke,
whose model has no not-found error), and lists never show it. ARNs carry the owner's
account ID.

One server for the module, three accounts: the root key's (the server's
000000000000), and one access key each in 111111111111 and 222222222222."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

import harness

SERVER_ACCOUNT = "000000000000"
A_ACCOUNT = "111111111111"
B_ACCOUNT = "222222222222"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
EMBED_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{TITAN_EMBED}"
ROLE = "arn:aws:iam::111111111111:role/BedrockRole"
MESSAGES = [{"role": "user", "content": [{"text": "Hi"}]}]


def exports(out: str) -> dict:
    return dict(line.removeprefix("export ").split("=", 1)
                for line in out.splitlines() if line.startswith("export "))


def account_of(arn: str) -> str:
    return arn.split(":")[4]


def not_found(call, code="ResourceNotFoundException", status=None):
    """Asserts `call` fails as it would for a resource that does not exist."""
    with pytest.raises(ClientError) as e:
        call()
    assert harness.error_code(e.value) == code, e.value.response
    if status is not None:
        assert harness.http_status(e.value) == status
    return e.value


class Account:
    """Clients signed by one key of one account."""

    def __init__(self, srv, account: str | None):
        self.srv = srv
        if account is None:  # the root key
            self.id, self.secret, self.account = srv.access_key_id, srv.secret_access_key, SERVER_ACCOUNT
        else:
            out = srv.cli("keys", "create", "--data-dir", str(srv.data_dir), "--account-id", account).stdout
            creds = exports(out)
            self.id, self.secret, self.account = creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"], account
        self.bedrock = self.client("bedrock")
        self.runtime = self.client("bedrock-runtime")
        self.agent = self.client("bedrock-agent")
        self.agent_runtime = self.client("bedrock-agent-runtime")

    def client(self, service, **kw):
        return self.srv.client(service, access_key_id=self.id, secret_access_key=self.secret, **kw)


@pytest.fixture(scope="module")
def srv(start_server, tmp_path_factory):
    """A server whose model cache links the default models, so that an import job writes
    only into this test's own cache."""
    root = tmp_path_factory.mktemp("accounts")
    models = harness.linked_models_dir(root)
    port = harness.free_port()
    s = start_server("accounts", BASALT_MODELS_DIR=str(models),
                     BASALT_TLS_SELF_SIGNED="1", BASALT_TLS_BIND=f"127.0.0.1:{port}")
    s.tls_url = f"https://localhost:{port}"
    s.ca = s.data_dir / "tls" / "ca.pem"
    return s


@pytest.fixture(scope="module")
def root(srv):
    return Account(srv, None)


@pytest.fixture(scope="module")
def a(srv):
    return Account(srv, A_ACCOUNT)


@pytest.fixture(scope="module")
def b(srv):
    return Account(srv, B_ACCOUNT)


# ---------------------------------------------------------------------- keys
def test_keys_carry_an_account_and_the_cli_checks_it(srv, a, b):
    listed = srv.cli("keys", "list", "--data-dir", str(srv.data_dir)).stdout
    assert f"{a.id} account {A_ACCOUNT}" in listed
    assert f"{b.id} account {B_ACCOUNT}" in listed
    plain = exports(srv.cli("keys", "create", "--data-dir", str(srv.data_dir)).stdout)["AWS_ACCESS_KEY_ID"]
    assert f"{plain} account server" in srv.cli("keys", "list", "--data-dir", str(srv.data_dir)).stdout
    for bad in ("12345", "1234567890123", "abcdefghijkl"):
        out = srv.cli("keys", "create", "--data-dir", str(srv.data_dir), "--account-id", bad, check=False)
        assert out.returncode != 0 and "12 digits" in out.stderr, out.stderr


def test_api_keys_and_policies_act_in_their_account(srv, a, monkeypatch):
    out = srv.cli("keys", "create", "--data-dir", str(srv.data_dir), "--api-key",
                  "--account-id", A_ACCOUNT)
    token = exports(out.stdout)["AWS_BEARER_TOKEN_BEDROCK"]
    key_id = out.stderr.split()[2]
    listed = srv.cli("keys", "list", "--data-dir", str(srv.data_dir)).stdout
    assert any(line.startswith(f"api-key {key_id} ") and line.endswith(f"account {A_ACCOUNT}")
               for line in listed.splitlines()), listed
    mine = guardrail(a, "seen-by-the-api-key")["guardrailId"]
    root = srv.client("bedrock")
    theirs = root.create_guardrail(name="not-seen-by-the-api-key", blockedInputMessaging="Blocked.",
                                   blockedOutputsMessaging="Blocked.")["guardrailId"]
    bearer = harness.bearer_client(srv, "bedrock-runtime", token, monkeypatch)
    content = [{"text": {"text": "a forbidden word"}}]
    applied = bearer.apply_guardrail(guardrailIdentifier=mine, guardrailVersion="DRAFT",
                                     source="INPUT", content=content)
    assert applied["action"] == "GUARDRAIL_INTERVENED"
    not_found(lambda: bearer.apply_guardrail(guardrailIdentifier=theirs, guardrailVersion="DRAFT",
                                             source="INPUT", content=content))
    # botocore prefers the token for every Bedrock client while it is in the environment.
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK")
    a.bedrock.delete_guardrail(guardrailIdentifier=mine)
    root.delete_guardrail(guardrailIdentifier=theirs)

    # A refusal names the key as a user of its own account, and resources by their ARNs there.
    policy = srv.workdir / "accounts-policy.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "bedrock:GetGuardrail",
         "Resource": f"arn:aws:bedrock:*:{B_ACCOUNT}:guardrail/*"}]}))
    creds = exports(srv.cli("keys", "create", "--data-dir", str(srv.data_dir), "--account-id", A_ACCOUNT,
                            "--policy", str(policy)).stdout)
    limited = srv.client("bedrock", access_key_id=creds["AWS_ACCESS_KEY_ID"],
                         secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
    err = not_found(lambda: limited.get_guardrail(guardrailIdentifier="abc123"), "AccessDeniedException", 403)
    assert harness.error_message(err).startswith(
        f"User: arn:aws:iam::{A_ACCOUNT}:user/{creds['AWS_ACCESS_KEY_ID']} is not authorized to perform: "
        f"bedrock:GetGuardrail on resource: arn:aws:bedrock:us-east-1:{A_ACCOUNT}:guardrail/abc123")


# ---------------------------------------------------------------------- guardrails
def guardrail(acct, name, **kw):
    return acct.bedrock.create_guardrail(
        name=name, blockedInputMessaging="Blocked.", blockedOutputsMessaging="Blocked.",
        wordPolicyConfig={"wordsConfig": [{"text": "forbidden"}]}, **kw)


def test_guardrails_are_the_creating_accounts(root, a, b):
    made = guardrail(a, "scoped-guardrail", clientRequestToken="same-token")
    gid, arn = made["guardrailId"], made["guardrailArn"]
    assert account_of(arn) == A_ACCOUNT
    assert a.bedrock.get_guardrail(guardrailIdentifier=gid)["guardrailArn"] == arn
    assert gid in [g["id"] for g in a.bedrock.list_guardrails()["guardrails"]]
    version = a.bedrock.create_guardrail_version(guardrailIdentifier=gid)["version"]

    for other in (b, root):
        for identifier in (gid, arn):
            err = not_found(lambda: other.bedrock.get_guardrail(guardrailIdentifier=identifier), status=404)
            assert "was not found" in harness.error_message(err)
        not_found(lambda: other.bedrock.get_guardrail(guardrailIdentifier=gid, guardrailVersion=version))
        assert gid not in [g["id"] for g in other.bedrock.list_guardrails()["guardrails"]]
        not_found(lambda: other.bedrock.list_guardrails(guardrailIdentifier=gid))
        not_found(lambda: other.bedrock.update_guardrail(
            guardrailIdentifier=gid, name="stolen", blockedInputMessaging="x", blockedOutputsMessaging="x"))
        not_found(lambda: other.bedrock.create_guardrail_version(guardrailIdentifier=gid))
        not_found(lambda: other.bedrock.delete_guardrail(guardrailIdentifier=gid))
        not_found(lambda: other.bedrock.delete_guardrail(guardrailIdentifier=gid, guardrailVersion=version))
        # Nor can it be used: ApplyGuardrail and Converse's guardrailConfig.
        not_found(lambda: other.runtime.apply_guardrail(
            guardrailIdentifier=gid, guardrailVersion="DRAFT", source="INPUT",
            content=[{"text": {"text": "a forbidden word"}}]))
        not_found(lambda: other.runtime.converse(
            modelId=HAIKU, messages=MESSAGES, inferenceConfig={"maxTokens": 4},
            guardrailConfig={"guardrailIdentifier": arn, "guardrailVersion": "DRAFT"}))

    # The owner still uses it.
    applied = a.runtime.apply_guardrail(guardrailIdentifier=arn, guardrailVersion=version, source="INPUT",
                                        content=[{"text": {"text": "a forbidden word"}}])
    assert applied["action"] == "GUARDRAIL_INTERVENED"
    out = a.runtime.converse(
        modelId=HAIKU, messages=[{"role": "user", "content": [{"text": "say forbidden"}]}],
        inferenceConfig={"maxTokens": 4},
        guardrailConfig={"guardrailIdentifier": gid, "guardrailVersion": "DRAFT"})
    assert out["stopReason"] == "guardrail_intervened"

    # Names and client tokens are per account: the same name and token in B is a new guardrail.
    theirs = guardrail(b, "scoped-guardrail", clientRequestToken="same-token")
    assert theirs["guardrailId"] != gid and account_of(theirs["guardrailArn"]) == B_ACCOUNT
    assert [g["id"] for g in b.bedrock.list_guardrails()["guardrails"]] == [theirs["guardrailId"]]
    b.bedrock.delete_guardrail(guardrailIdentifier=theirs["guardrailId"])
    a.bedrock.delete_guardrail(guardrailIdentifier=gid)
    not_found(lambda: a.bedrock.get_guardrail(guardrailIdentifier=gid))


# ---------------------------------------------------------------------- knowledge bases
def wait(read, done, timeout=120):
    deadline = time.monotonic() + timeout
    while not done(got := read()):
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    return got


def test_knowledge_bases_data_sources_and_ingestion_jobs_are_the_creating_accounts(srv, root, a, b):
    bucket = srv.data_dir / "s3" / "accounts-kb"
    bucket.mkdir(parents=True)
    (bucket / "lambda.txt").write_text("AWS Lambda functions run for at most 15 minutes.")
    kb = a.agent.create_knowledge_base(
        name="scoped-kb", roleArn=ROLE,
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": EMBED_ARN,
            "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"dimensions": 512}}}},
    )["knowledgeBase"]
    kb_id = kb["knowledgeBaseId"]
    assert account_of(kb["knowledgeBaseArn"]) == A_ACCOUNT
    wait(lambda: a.agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"],
         lambda k: k["status"] != "CREATING")
    ds_id = a.agent.create_data_source(
        knowledgeBaseId=kb_id, name="docs",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::accounts-kb"}},
    )["dataSource"]["dataSourceId"]
    job_id = a.agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
    job = wait(lambda: a.agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                                 ingestionJobId=job_id)["ingestionJob"],
               lambda j: j["status"] in {"COMPLETE", "FAILED", "STOPPED"})
    assert job["status"] == "COMPLETE", job
    assert kb_id in [k["knowledgeBaseId"] for k in a.agent.list_knowledge_bases()["knowledgeBaseSummaries"]]
    hits = a.agent_runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": "Lambda timeout"})
    assert hits["retrievalResults"]

    ids = {"knowledgeBaseId": kb_id}
    for other in (b, root):
        err = not_found(lambda: other.agent.get_knowledge_base(**ids), status=404)
        assert harness.error_message(err) == f"Knowledge base with id {kb_id} does not exist."
        assert kb_id not in [k["knowledgeBaseId"]
                             for k in other.agent.list_knowledge_bases()["knowledgeBaseSummaries"]]
        not_found(lambda: other.agent.update_knowledge_base(
            **ids, name="stolen", roleArn=ROLE,
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": EMBED_ARN}}))
        not_found(lambda: other.agent.get_data_source(**ids, dataSourceId=ds_id))
        not_found(lambda: other.agent.list_data_sources(**ids))
        not_found(lambda: other.agent.create_data_source(
            **ids, name="mine",
            dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::accounts-kb"}}))
        not_found(lambda: other.agent.start_ingestion_job(**ids, dataSourceId=ds_id))
        not_found(lambda: other.agent.get_ingestion_job(**ids, dataSourceId=ds_id, ingestionJobId=job_id))
        not_found(lambda: other.agent.list_ingestion_jobs(**ids, dataSourceId=ds_id))
        not_found(lambda: other.agent.list_knowledge_base_documents(**ids, dataSourceId=ds_id))
        not_found(lambda: other.agent_runtime.retrieve(**ids, retrievalQuery={"text": "Lambda timeout"}))
        not_found(lambda: other.agent_runtime.retrieve_and_generate(
            input={"text": "How long can Lambda run?"},
            retrieveAndGenerateConfiguration={"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
                "knowledgeBaseId": kb_id,
                "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}"}}))
        not_found(lambda: other.agent.delete_data_source(**ids, dataSourceId=ds_id))
        not_found(lambda: other.agent.delete_knowledge_base(**ids))

    a.agent.delete_data_source(**ids, dataSourceId=ds_id)
    a.agent.delete_knowledge_base(**ids)


# ---------------------------------------------------------------------- batch and async invoke
def test_batch_jobs_are_the_creating_accounts(srv, root, a, b):
    (srv.data_dir / "s3" / "acct-in").mkdir(parents=True)
    (srv.data_dir / "s3" / "acct-out").mkdir(parents=True)
    (srv.data_dir / "s3" / "acct-in" / "in.jsonl").write_text(
        json.dumps({"recordId": "R1", "modelInput": {"inputText": "scoped"}}) + "\n")
    request = dict(modelId=TITAN_EMBED, roleArn=ROLE, clientRequestToken="batch-token",
                   inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://acct-in/in.jsonl"}},
                   outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://acct-out/"}})
    arn = a.bedrock.create_model_invocation_job(jobName="scoped-job", **request)["jobArn"]
    assert account_of(arn) == A_ACCOUNT
    assert a.bedrock.get_model_invocation_job(jobIdentifier=arn)["jobArn"] == arn
    assert arn in [j["jobArn"] for j in a.bedrock.list_model_invocation_jobs()["invocationJobSummaries"]]
    job_id = arn.rsplit("/", 1)[1]
    for other in (b, root):
        for identifier in (arn, job_id):
            not_found(lambda: other.bedrock.get_model_invocation_job(jobIdentifier=identifier), status=404)
        not_found(lambda: other.bedrock.stop_model_invocation_job(jobIdentifier=job_id))
        assert arn not in [j["jobArn"] for j in other.bedrock.list_model_invocation_jobs()["invocationJobSummaries"]]
    # The same client token in another account is another job, not A's replayed.
    theirs = b.bedrock.create_model_invocation_job(jobName="scoped-job", **request)["jobArn"]
    assert theirs != arn and account_of(theirs) == B_ACCOUNT
    assert [j["jobArn"] for j in b.bedrock.list_model_invocation_jobs()["invocationJobSummaries"]] == [theirs]


def test_async_invocations_are_the_starting_accounts(srv, root, a, b):
    (srv.data_dir / "s3" / "acct-async").mkdir(parents=True)
    arn = a.runtime.start_async_invoke(
        modelId=TITAN_EMBED, modelInput={"inputText": "scoped", "dimensions": 256},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://acct-async/out"}},
    )["invocationArn"]
    assert account_of(arn) == A_ACCOUNT
    assert a.runtime.get_async_invoke(invocationArn=arn)["invocationArn"] == arn
    assert arn in [i["invocationArn"] for i in a.runtime.list_async_invokes()["asyncInvokeSummaries"]]
    for other in (b, root):
        # GetAsyncInvoke models no ResourceNotFoundException: an unknown ARN is invalid input.
        err = not_found(lambda: other.runtime.get_async_invoke(invocationArn=arn), "ValidationException")
        assert "was not found" in harness.error_message(err)
        same_id = f"arn:aws:bedrock:us-east-1:{other.account}:async-invoke/{arn.rsplit('/', 1)[1]}"
        not_found(lambda: other.runtime.get_async_invoke(invocationArn=same_id), "ValidationException")
        assert arn not in [i["invocationArn"] for i in other.runtime.list_async_invokes()["asyncInvokeSummaries"]]


# ---------------------------------------------------------------------- provisioned throughput
def test_provisioned_throughputs_are_the_creating_accounts(root, a, b):
    arn = a.bedrock.create_provisioned_model_throughput(
        provisionedModelName="scoped-pt", modelId=HAIKU, modelUnits=1)["provisionedModelArn"]
    assert account_of(arn) == A_ACCOUNT
    got = wait(lambda: a.bedrock.get_provisioned_model_throughput(provisionedModelId="scoped-pt"),
               lambda p: p["status"] != "Creating")
    assert got["status"] == "InService" and got["provisionedModelArn"] == arn
    out = a.runtime.converse(modelId=arn, messages=MESSAGES, inferenceConfig={"maxTokens": 4})
    assert out["output"]["message"]["content"][0]["text"]

    for other in (b, root):
        for identifier in ("scoped-pt", arn, arn.rsplit("/", 1)[1]):
            err = not_found(lambda: other.bedrock.get_provisioned_model_throughput(
                provisionedModelId=identifier), status=404)
            assert "was not found" in harness.error_message(err)
        summaries = other.bedrock.list_provisioned_model_throughputs()["provisionedModelSummaries"]
        assert arn not in [p["provisionedModelArn"] for p in summaries]
        not_found(lambda: other.bedrock.update_provisioned_model_throughput(
            provisionedModelId=arn, desiredProvisionedModelName="stolen"))
        not_found(lambda: other.bedrock.delete_provisioned_model_throughput(provisionedModelId="scoped-pt"))
        # Nor can another account invoke through it, by its ARN or by the ARN with its
        # own account put in.
        for model_id in (arn, arn.replace(A_ACCOUNT, other.account)):
            not_found(lambda: other.runtime.converse(modelId=model_id, messages=MESSAGES,
                                                     inferenceConfig={"maxTokens": 4}), status=404)
            not_found(lambda: other.runtime.invoke_model(modelId=model_id, body=json.dumps({
                "anthropic_version": "bedrock-2023-05-31", "max_tokens": 4, "messages": MESSAGES})))

    # Names are per account: B may take the same name, and each sees only its own.
    theirs = b.bedrock.create_provisioned_model_throughput(
        provisionedModelName="scoped-pt", modelId=HAIKU, modelUnits=1)["provisionedModelArn"]
    assert theirs != arn and account_of(theirs) == B_ACCOUNT
    assert [p["provisionedModelArn"] for p in
            b.bedrock.list_provisioned_model_throughputs()["provisionedModelSummaries"]] == [theirs]
    b.bedrock.delete_provisioned_model_throughput(provisionedModelId="scoped-pt")
    a.bedrock.delete_provisioned_model_throughput(provisionedModelId="scoped-pt")


# ---------------------------------------------------------------------- model import
def test_import_jobs_and_imported_models_are_the_creating_accounts(srv, root, a, b):
    source = srv.data_dir / "s3" / "acct-models" / "tiny"
    srv.cli("models", "write-test-diffusion-model", str(source), timeout=120)
    arn = a.bedrock.create_model_import_job(
        jobName="scoped-import", importedModelName="scoped-model", roleArn=ROLE,
        modelDataSource={"s3DataSource": {"s3Uri": "s3://acct-models/tiny/"}},
    )["jobArn"]
    assert account_of(arn) == A_ACCOUNT
    job = wait(lambda: a.bedrock.get_model_import_job(jobIdentifier=arn), lambda j: j["status"] != "InProgress")
    assert job["status"] == "Completed", job.get("failureMessage")
    model_arn = job["importedModelArn"]
    assert account_of(model_arn) == A_ACCOUNT
    assert a.bedrock.get_imported_model(modelIdentifier="scoped-model")["modelArn"] == model_arn
    assert model_arn in [m["modelArn"] for m in a.bedrock.list_imported_models()["modelSummaries"]]

    for other in (b, root):
        for identifier in (arn, "scoped-import"):
            not_found(lambda: other.bedrock.get_model_import_job(jobIdentifier=identifier), status=404)
        assert arn not in [j["jobArn"] for j in other.bedrock.list_model_import_jobs()["modelImportJobSummaries"]]
        for identifier in (model_arn, "scoped-model", model_arn.rsplit("/", 1)[1]):
            not_found(lambda: other.bedrock.get_imported_model(modelIdentifier=identifier))
        assert "scoped-model" not in [m["modelName"] for m in other.bedrock.list_imported_models()["modelSummaries"]]
        not_found(lambda: other.bedrock.delete_imported_model(modelIdentifier=model_arn))
        # Named by the other account's own ARN, the model ID is still not theirs.
        own_arn = model_arn.replace(f":{A_ACCOUNT}:", f":{other.account}:")
        for identifier in (model_arn, own_arn):
            not_found(lambda: other.runtime.invoke_model(modelId=identifier, body=json.dumps({
                "text_prompts": [{"text": "a castle"}], "steps": 1})))

    a.bedrock.delete_imported_model(modelIdentifier=model_arn)
    not_found(lambda: a.bedrock.get_imported_model(modelIdentifier=model_arn))


# ---------------------------------------------------------------------- invocation logging
def test_invocation_logging_is_configured_per_account(srv, root, a, b):
    config = {"cloudWatchConfig": {"logGroupName": "/acct/a", "roleArn": ROLE},
              "textDataDeliveryEnabled": True}
    a.bedrock.put_model_invocation_logging_configuration(loggingConfig=config)
    try:
        got = a.bedrock.get_model_invocation_logging_configuration()
        assert got["loggingConfig"]["cloudWatchConfig"]["logGroupName"] == "/acct/a"
        for other in (b, root):
            assert "loggingConfig" not in other.bedrock.get_model_invocation_logging_configuration()
        # B's call is not logged under A's configuration; A's is, as A's account.
        b.runtime.converse(modelId=HAIKU, messages=MESSAGES, inferenceConfig={"maxTokens": 2})
        resp = a.runtime.converse(modelId=HAIKU, messages=MESSAGES, inferenceConfig={"maxTokens": 2})
        request_id = resp["ResponseMetadata"]["RequestId"]
        folder = srv.data_dir / "logs" / "acct" / "a" / "aws" / "bedrock" / "modelinvocations"
        deadline = time.monotonic() + 20
        while True:
            records = [json.loads(line) for f in sorted(folder.glob("*.jsonl"))
                       for line in f.read_text().splitlines() if line]
            mine = [r for r in records if r.get("requestId") == request_id]
            if mine:
                break
            assert time.monotonic() < deadline, records
            time.sleep(0.2)
        assert mine[0]["accountId"] == A_ACCOUNT
        assert mine[0]["identity"]["arn"] == f"arn:aws:iam::{A_ACCOUNT}:user/{a.id}"
        assert {r["accountId"] for r in records} == {A_ACCOUNT}
        # Deleting B's (absent) configuration leaves A's alone.
        b.bedrock.delete_model_invocation_logging_configuration()
        assert "loggingConfig" in a.bedrock.get_model_invocation_logging_configuration()
    finally:
        a.bedrock.delete_model_invocation_logging_configuration()
    assert "loggingConfig" not in a.bedrock.get_model_invocation_logging_configuration()
