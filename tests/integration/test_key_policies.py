"""Key policies: IAM-style documents attached to access keys and Bedrock API keys with
`basalt keys create --policy FILE` and `basalt keys policy KEY --file FILE | --clear`.
For each family of operations an allowed call goes through and a refused one gets
AccessDeniedException (403) with AWS's message; Converse is authorized as
bedrock:InvokeModel and ConverseStream as bedrock:InvokeModelWithResponseStream, as in
AWS. A running server applies policy changes from the next request."""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

import harness

ACCOUNT = "000000000000"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET = "anthropic.claude-3-sonnet-20240229-v1:0"
TITAN = "amazon.titan-text-express-v1"
EMBED_ARN = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
ROLE = "arn:aws:iam::123456789012:role/BedrockRole"
MESSAGES = [{"role": "user", "content": [{"text": "Hi"}]}]


def fm(model_id: str) -> str:
    return f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}"


def owned(kind: str, resource_id: str) -> str:
    return f"arn:aws:bedrock:us-east-1:{ACCOUNT}:{kind}/{resource_id}"


def doc(*statements) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource="*") -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def deny(action, resource="*") -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource}


@pytest.fixture(scope="module")
def srv(start_server):
    port = harness.free_port()
    s = start_server("policies", BASALT_TLS_SELF_SIGNED="1", BASALT_TLS_BIND=f"127.0.0.1:{port}")
    s.tls_url = f"https://localhost:{port}"
    s.ca = s.data_dir / "tls" / "ca.pem"
    return s


_files = iter(range(1_000_000))


def write_policy(srv, policy) -> str:
    path = srv.workdir / f"policy-{next(_files)}.json"
    path.write_text(policy if isinstance(policy, str) else json.dumps(policy, indent=2))
    return str(path)


def exports(out: str) -> dict:
    return dict(line.removeprefix("export ").split("=", 1)
                for line in out.splitlines() if line.startswith("export "))


class Key:
    """An access key made for one test, with clients signed by it."""

    def __init__(self, srv, policy=None):
        self.srv = srv
        args = ["keys", "create", "--data-dir", str(srv.data_dir)]
        if policy is not None:
            args += ["--policy", write_policy(srv, policy)]
        creds = exports(srv.cli(*args).stdout)
        self.id = creds["AWS_ACCESS_KEY_ID"]
        self.secret = creds["AWS_SECRET_ACCESS_KEY"]
        self.user = f"arn:aws:iam::{ACCOUNT}:user/{self.id}"

    def client(self, service):
        return self.srv.client(service, access_key_id=self.id, secret_access_key=self.secret)

    def set_policy(self, policy):
        self.srv.cli("keys", "policy", "--data-dir", str(self.srv.data_dir), self.id,
                     "--file", write_policy(self.srv, policy))

    def clear_policy(self):
        self.srv.cli("keys", "policy", "--data-dir", str(self.srv.data_dir), self.id, "--clear")


def denied(call, user, action, resource, explicit=False):
    """Asserts `call` is refused as AWS refuses it, message and all."""
    with pytest.raises(ClientError) as e:
        call()
    err = e.value
    assert harness.error_code(err) == "AccessDeniedException", err.response
    assert harness.http_status(err) == 403
    reason = ("with an explicit deny in an identity-based policy" if explicit
              else f"because no identity-based policy allows the {action} action")
    assert harness.error_message(err) == (
        f"User: {user} is not authorized to perform: {action} on resource: {resource} {reason}")


def not_denied(call, code=None):
    """`call` passed authorization: it succeeds, or fails for another reason (`code`)."""
    try:
        return call()
    except ClientError as e:
        assert harness.error_code(e) != "AccessDeniedException", e.response
        if code is None:
            raise
        assert harness.error_code(e) == code, e.response
        return None


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# ---------------------------------------------------------------------- runtime
def test_runtime_invoke_and_converse_with_model_arn_wildcards(srv):
    key = Key(srv, doc(
        allow(["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
              "arn:aws:bedrock:*::foundation-model/anthropic.*"),
        deny("bedrock:InvokeModel*", fm(SONNET)),
    ))
    rt = key.client("bedrock-runtime")
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 4,
                       "messages": [{"role": "user", "content": "Hi"}]})

    # Allowed: all four runtime calls on an anthropic.* model.
    assert rt.converse(modelId=HAIKU, messages=MESSAGES,
                       inferenceConfig={"maxTokens": 4})["output"]["message"]
    events = harness.stream_events(rt.converse_stream(modelId=HAIKU, messages=MESSAGES,
                                                      inferenceConfig={"maxTokens": 4}))
    assert events[-1][0] == "metadata"
    assert harness.read_json_body(rt.invoke_model(modelId=HAIKU, body=body))["content"]
    assert harness.stream_chunks(rt.invoke_model_with_response_stream(modelId=HAIKU, body=body))

    # Converse is authorized as bedrock:InvokeModel, ConverseStream as
    # bedrock:InvokeModelWithResponseStream; the explicit deny on Sonnet wins.
    denied(lambda: rt.converse(modelId=SONNET, messages=MESSAGES), key.user,
           "bedrock:InvokeModel", fm(SONNET), explicit=True)
    denied(lambda: rt.converse_stream(modelId=SONNET, messages=MESSAGES), key.user,
           "bedrock:InvokeModelWithResponseStream", fm(SONNET), explicit=True)
    denied(lambda: rt.invoke_model(modelId=SONNET, body=body), key.user,
           "bedrock:InvokeModel", fm(SONNET), explicit=True)
    denied(lambda: rt.invoke_model_with_response_stream(modelId=SONNET, body=body), key.user,
           "bedrock:InvokeModelWithResponseStream", fm(SONNET), explicit=True)
    # Outside the allowed ARNs: an implicit deny.
    denied(lambda: rt.converse(modelId=TITAN, messages=MESSAGES), key.user,
           "bedrock:InvokeModel", fm(TITAN))
    # An inference profile is its own resource, with the caller's account in its ARN.
    denied(lambda: rt.converse(modelId=f"us.{HAIKU}", messages=MESSAGES), key.user,
           "bedrock:InvokeModel", owned("inference-profile", f"us.{HAIKU}"))
    # An ARN as modelId is checked as given.
    assert rt.converse(modelId=fm(HAIKU), messages=MESSAGES,
                       inferenceConfig={"maxTokens": 4})["output"]["message"]
    # CountTokens is an action of its own.
    denied(lambda: rt.count_tokens(modelId=HAIKU, input={"converse": {"messages": MESSAGES}}),
           key.user, "bedrock:CountTokens", fm(HAIKU))
    # Authorization comes before validation, as in AWS.
    denied(lambda: rt.converse(modelId=SONNET, messages=[]), key.user,
           "bedrock:InvokeModel", fm(SONNET), explicit=True)


def test_count_tokens_allowed_by_its_own_action(srv):
    key = Key(srv, doc(allow("bedrock:CountTokens", fm("anthropic.*"))))
    rt = key.client("bedrock-runtime")
    assert rt.count_tokens(modelId=HAIKU, input={"converse": {"messages": MESSAGES}})["inputTokens"] > 0
    denied(lambda: rt.converse(modelId=HAIKU, messages=MESSAGES), key.user,
           "bedrock:InvokeModel", fm(HAIKU))


# ---------------------------------------------------------------------- guardrails
def test_guardrails(srv):
    root = srv.client("bedrock")

    def make(name):
        return root.create_guardrail(name=name, blockedInputMessaging="no", blockedOutputsMessaging="no",
                                     wordPolicyConfig={"wordsConfig": [{"text": "forbidden"}]})["guardrailId"]

    mine, other = make("policy-mine"), make("policy-other")
    key = Key(srv, doc(
        allow(["bedrock:ApplyGuardrail", "bedrock:GetGuardrail"], owned("guardrail", mine)),
        allow("bedrock:ListGuardrails"),
        deny("bedrock:DeleteGuardrail", "arn:aws:bedrock:*:*:guardrail/*"),
    ))
    control, rt = key.client("bedrock"), key.client("bedrock-runtime")
    out = rt.apply_guardrail(guardrailIdentifier=mine, guardrailVersion="DRAFT", source="INPUT",
                             content=[{"text": {"text": "a forbidden word"}}])
    assert out["action"] == "GUARDRAIL_INTERVENED"
    assert control.get_guardrail(guardrailIdentifier=mine)["guardrailId"] == mine
    assert {g["id"] for g in control.list_guardrails()["guardrails"]} >= {mine, other}

    denied(lambda: rt.apply_guardrail(guardrailIdentifier=other, guardrailVersion="DRAFT",
                                      source="INPUT", content=[{"text": {"text": "x"}}]),
           key.user, "bedrock:ApplyGuardrail", owned("guardrail", other))
    denied(lambda: control.create_guardrail(name="policy-new", blockedInputMessaging="no",
                                            blockedOutputsMessaging="no"),
           key.user, "bedrock:CreateGuardrail", "*")
    denied(lambda: control.delete_guardrail(guardrailIdentifier=mine), key.user,
           "bedrock:DeleteGuardrail", owned("guardrail", mine), explicit=True)
    # A guardrail named by its ARN is checked by that ARN.
    assert control.get_guardrail(guardrailIdentifier=owned("guardrail", mine))["guardrailId"] == mine


# ---------------------------------------------------------------------- knowledge bases
def test_knowledge_bases(srv):
    agent = srv.client("bedrock-agent")

    def make(name):
        kb = agent.create_knowledge_base(
            name=name, roleArn=ROLE,
            knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": EMBED_ARN,
                "embeddingModelConfiguration": {"bedrockEmbeddingModelConfiguration": {"dimensions": 512}}}},
        )["knowledgeBase"]
        return kb["knowledgeBaseId"]

    mine, other = make("policy-kb-mine"), make("policy-kb-other")
    key = Key(srv, doc(
        allow(["bedrock:Retrieve", "bedrock:GetKnowledgeBase", "bedrock:ListDataSources"],
              owned("knowledge-base", mine)),
        allow("bedrock:ListKnowledgeBases"),
    ))
    kb_agent, kb_runtime = key.client("bedrock-agent"), key.client("bedrock-agent-runtime")
    assert kb_agent.get_knowledge_base(knowledgeBaseId=mine)["knowledgeBase"]["knowledgeBaseId"] == mine
    assert {k["knowledgeBaseId"] for k in kb_agent.list_knowledge_bases()["knowledgeBaseSummaries"]} \
        >= {mine, other}
    assert kb_agent.list_data_sources(knowledgeBaseId=mine)["dataSourceSummaries"] == []

    def wait_ready():
        return agent.get_knowledge_base(knowledgeBaseId=mine)["knowledgeBase"]["status"] != "CREATING"

    assert wait_until(wait_ready, 120)
    out = not_denied(lambda: kb_runtime.retrieve(knowledgeBaseId=mine, retrievalQuery={"text": "hello"}))
    assert out["retrievalResults"] == []

    denied(lambda: kb_runtime.retrieve(knowledgeBaseId=other, retrievalQuery={"text": "hello"}),
           key.user, "bedrock:Retrieve", owned("knowledge-base", other))
    denied(lambda: kb_agent.get_knowledge_base(knowledgeBaseId=other), key.user,
           "bedrock:GetKnowledgeBase", owned("knowledge-base", other))
    denied(lambda: kb_agent.create_knowledge_base(
        name="policy-kb-new", roleArn=ROLE,
        knowledgeBaseConfiguration={"type": "VECTOR",
                                    "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": EMBED_ARN}}),
           key.user, "bedrock:CreateKnowledgeBase", "*")
    denied(lambda: kb_agent.start_ingestion_job(knowledgeBaseId=mine, dataSourceId="DS00000001"),
           key.user, "bedrock:StartIngestionJob", owned("knowledge-base", mine))
    # RetrieveAndGenerate (and its stream) is one action, on no one resource.
    config = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": mine, "modelArn": fm(HAIKU)}}
    denied(lambda: kb_runtime.retrieve_and_generate(input={"text": "hi"},
                                                    retrieveAndGenerateConfiguration=config),
           key.user, "bedrock:RetrieveAndGenerate", "*")
    denied(lambda: kb_runtime.retrieve_and_generate_stream(input={"text": "hi"},
                                                           retrieveAndGenerateConfiguration=config),
           key.user, "bedrock:RetrieveAndGenerate", "*")


# ---------------------------------------------------------------------- batch jobs
def test_batch_jobs(srv):
    key = Key(srv, doc(
        allow(["bedrock:ListModelInvocationJobs", "bedrock:GetModelInvocationJob"]),
        deny("bedrock:StopModelInvocationJob", owned("model-invocation-job", "*")),
    ))
    control = key.client("bedrock")
    assert harness.http_status(control.list_model_invocation_jobs()) == 200
    # Allowed, so the answer is the job's own: there is none.
    not_denied(lambda: control.get_model_invocation_job(jobIdentifier="abcdef123456"),
               "ResourceNotFoundException")
    denied(lambda: control.create_model_invocation_job(
        jobName="policy-job", modelId=HAIKU, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://in/x.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://out/"}}),
           key.user, "bedrock:CreateModelInvocationJob", "*")
    denied(lambda: control.stop_model_invocation_job(jobIdentifier="abcdef123456"), key.user,
           "bedrock:StopModelInvocationJob", owned("model-invocation-job", "abcdef123456"),
           explicit=True)


def test_creating_a_job_needs_pass_role_on_its_role(srv):
    key = Key(srv, doc(allow(["bedrock:CreateModelInvocationJob", "bedrock:CreateModelImportJob"])))
    control = key.client("bedrock")
    create_batch = lambda: control.create_model_invocation_job(  # noqa: E731
        jobName="pass-role-job", modelId=HAIKU, roleArn=ROLE,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://in/x.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://out/"}})
    create_import = lambda: control.create_model_import_job(  # noqa: E731
        jobName="pass-role-import", importedModelName="pass-role-model", roleArn=ROLE,
        modelDataSource={"s3DataSource": {"s3Uri": "s3://models/none/"}})
    denied(create_batch, key.user, "iam:PassRole", ROLE)
    denied(create_import, key.user, "iam:PassRole", ROLE)
    # With PassRole on that role the calls reach their handlers (which create the jobs).
    key.set_policy(doc(allow(["bedrock:CreateModelInvocationJob", "bedrock:CreateModelImportJob"]),
                       allow("iam:PassRole", ROLE)))
    assert wait_until(lambda: _passes(create_batch))
    not_denied(create_import)
    # PassRole on another role only does not do.
    key.set_policy(doc(allow("bedrock:CreateModelInvocationJob"),
                       allow("iam:PassRole", "arn:aws:iam::*:role/SomeoneElse")))
    assert wait_until(lambda: not _passes(create_batch))


def _passes(call) -> bool:
    try:
        call()
        return True
    except ClientError as e:
        return harness.error_code(e) != "AccessDeniedException"


# ---------------------------------------------------------------------- provisioned throughput
def test_provisioned_throughput(srv):
    root = srv.client("bedrock")
    arn = root.create_provisioned_model_throughput(
        modelId=HAIKU, provisionedModelName="policy-pt", modelUnits=1)["provisionedModelArn"]
    pt_id = arn.rsplit("/", 1)[1]
    try:
        key = Key(srv, doc(
            allow(["bedrock:GetProvisionedModelThroughput", "bedrock:ListProvisionedModelThroughputs"]),
            allow("bedrock:InvokeModel", "arn:aws:bedrock:*:*:provisioned-model/*"),
        ))
        control, rt = key.client("bedrock"), key.client("bedrock-runtime")
        assert control.get_provisioned_model_throughput(provisionedModelId=arn)["provisionedModelArn"] == arn
        assert arn in [p["provisionedModelArn"] for p in
                       control.list_provisioned_model_throughputs()["provisionedModelSummaries"]]

        def in_service():
            return root.get_provisioned_model_throughput(provisionedModelId=arn)["status"] == "InService"

        assert wait_until(in_service, 120)
        # Invoking through the provisioned ARN checks that ARN, not the model's.
        assert rt.converse(modelId=arn, messages=MESSAGES, inferenceConfig={"maxTokens": 4})["output"]
        denied(lambda: rt.converse(modelId=HAIKU, messages=MESSAGES), key.user,
               "bedrock:InvokeModel", fm(HAIKU))
        denied(lambda: control.create_provisioned_model_throughput(
            modelId=HAIKU, provisionedModelName="policy-pt-2", modelUnits=1),
               key.user, "bedrock:CreateProvisionedModelThroughput", "*")
        denied(lambda: control.delete_provisioned_model_throughput(provisionedModelId=pt_id), key.user,
               "bedrock:DeleteProvisionedModelThroughput", owned("provisioned-model", pt_id))
    finally:
        root.delete_provisioned_model_throughput(provisionedModelId=arn)


# ---------------------------------------------------------------------- control-plane listing
def test_control_plane_listing_and_not_action(srv):
    key = Key(srv, doc(
        {"Effect": "Allow", "Action": "bedrock:List*", "Resource": "*"},
        {"Effect": "Deny", "NotAction": "bedrock:List*", "Resource": "*"},
    ))
    control = key.client("bedrock")
    assert control.list_foundation_models()["modelSummaries"]
    assert harness.http_status(control.list_imported_models()) == 200
    denied(lambda: control.get_foundation_model(modelIdentifier=HAIKU), key.user,
           "bedrock:GetFoundationModel", fm(HAIKU), explicit=True)
    denied(lambda: control.get_model_invocation_logging_configuration(), key.user,
           "bedrock:GetModelInvocationLoggingConfiguration", "*", explicit=True)

    # NotResource: everything but the Titan models.
    key = Key(srv, doc({"Effect": "Allow", "Action": "bedrock:GetFoundationModel",
                        "NotResource": fm("amazon.titan-*")}))
    control = key.client("bedrock")
    assert control.get_foundation_model(modelIdentifier=HAIKU)["modelDetails"]["modelId"] == HAIKU
    denied(lambda: control.get_foundation_model(modelIdentifier=TITAN), key.user,
           "bedrock:GetFoundationModel", fm(TITAN))
    denied(lambda: control.list_foundation_models(), key.user, "bedrock:ListFoundationModels", "*")


# ---------------------------------------------------------------------- changes while running
def test_a_policy_change_is_seen_by_the_running_server(srv):
    key = Key(srv, doc(allow("bedrock:ListFoundationModels")))
    rt = key.client("bedrock-runtime")
    denied(lambda: rt.converse(modelId=HAIKU, messages=MESSAGES), key.user,
           "bedrock:InvokeModel", fm(HAIKU))

    def converses():
        try:
            rt.converse(modelId=HAIKU, messages=MESSAGES, inferenceConfig={"maxTokens": 4})
            return True
        except ClientError as e:
            assert harness.error_code(e) == "AccessDeniedException", e.response
            return False

    key.set_policy(doc(allow("bedrock:InvokeModel", fm(HAIKU))))
    assert wait_until(converses), "the running server did not pick up the new policy"
    key.set_policy(doc(allow("bedrock:*"), deny("bedrock:InvokeModel", fm("anthropic.*"))))
    assert wait_until(lambda: not converses())
    denied(lambda: rt.converse(modelId=HAIKU, messages=MESSAGES), key.user,
           "bedrock:InvokeModel", fm(HAIKU), explicit=True)
    key.clear_policy()
    assert wait_until(converses), "a key without a policy may call anything"

    # A key created without a policy may be restricted later.
    plain = Key(srv)
    assert plain.client("bedrock").list_foundation_models()["modelSummaries"]
    plain.set_policy(doc(deny("bedrock:*")))
    control = plain.client("bedrock")

    def refused():
        try:
            control.list_foundation_models()
            return False
        except ClientError as e:
            return harness.error_code(e) == "AccessDeniedException"

    assert wait_until(refused)
    # The root key is never restricted.
    assert srv.client("bedrock").list_foundation_models()["modelSummaries"]


# ---------------------------------------------------------------------- the CLI
def test_cli_validates_shows_and_lists_policies(srv):
    data = ["--data-dir", str(srv.data_dir)]
    bad = srv.cli("keys", "create", *data, "--policy", write_policy(srv, doc(
        {"Effect": "Allow", "Action": "bedrock:InvokeModel", "Resource": "*", "Conditions": {}})),
        check=False)
    assert bad.returncode != 0
    assert "Statement[0].Conditions: unknown field" in bad.stderr, bad.stderr
    assert "export" not in bad.stdout

    for text, expected in [
        ("{not json", "not valid JSON"),
        (json.dumps(doc(allow("bedrock:InvokeModel", "anthropic.*"))), "must be \"*\" or an ARN"),
        (json.dumps(doc(allow("bedrock-runtime:InvokeModel"))), "IAM has no bedrock-runtime: actions"),
        (json.dumps(doc({**allow("*"), "Condition": {"Bool": {"aws:SecureTransport": "true"}}})),
         "Condition: is not supported"),
        (json.dumps(doc(*[allow("*")] * 101)), "limit is 100"),
        (json.dumps(doc(allow([f"bedrock:GetGuardrail{i:05}" for i in range(400)]))), "limit is 6144"),
    ]:
        out = srv.cli("keys", "create", *data, "--policy", write_policy(srv, text), check=False)
        assert out.returncode != 0 and expected in out.stderr, (expected, out.stderr)

    # Legal but matching nothing here: a warning, not an error.
    made = srv.cli("keys", "create", *data, "--policy",
                   write_policy(srv, doc(allow("bedrock:Converse*"))))
    assert "IAM authorizes Converse as bedrock:InvokeModel" in made.stderr, made.stderr
    akid = exports(made.stdout)["AWS_ACCESS_KEY_ID"]

    shown = json.loads(srv.cli("keys", "policy", *data, akid).stdout)
    assert shown["Statement"][0]["Action"] == "bedrock:Converse*"
    assert f"{akid} policy" in srv.cli("keys", "list", *data).stdout
    srv.cli("keys", "policy", *data, akid, "--clear")
    assert "no policy" in srv.cli("keys", "policy", *data, akid).stdout
    assert f"{akid} policy" not in srv.cli("keys", "list", *data).stdout

    root = srv.cli("keys", "policy", *data, srv.access_key_id, "--clear", check=False)
    assert root.returncode != 0 and "root key" in root.stderr
    missing = srv.cli("keys", "policy", *data, "nosuchkey", "--clear", check=False)
    assert missing.returncode != 0 and "no access key or API key nosuchkey" in missing.stderr


# ---------------------------------------------------------------------- API keys
def test_api_keys_carry_policies_too(srv, monkeypatch):
    data = ["--data-dir", str(srv.data_dir)]
    made = srv.cli("keys", "create", "--api-key", *data, "--policy",
                   write_policy(srv, doc(allow("bedrock:ListFoundationModels"))))
    token = exports(made.stdout)["AWS_BEARER_TOKEN_BEDROCK"]
    key_id = made.stderr.split("API key ", 1)[1].split()[0]
    assert token not in made.stderr
    user = f"arn:aws:iam::{ACCOUNT}:user/{key_id}"
    control = harness.bearer_client(srv, "bedrock", token, monkeypatch)
    rt = harness.bearer_client(srv, "bedrock-runtime", token, monkeypatch)
    assert control.list_foundation_models()["modelSummaries"]
    denied(lambda: rt.converse(modelId=HAIKU, messages=MESSAGES), user,
           "bedrock:InvokeModel", fm(HAIKU))
    assert f"api-key {key_id} " in srv.cli("keys", "list", *data).stdout

    # A change applies from the next request.
    srv.cli("keys", "policy", *data, key_id, "--file",
            write_policy(srv, doc(allow("bedrock:InvokeModel", fm("anthropic.*")))))
    assert rt.converse(modelId=HAIKU, messages=MESSAGES, inferenceConfig={"maxTokens": 4})["output"]
    denied(lambda: control.list_foundation_models(), user, "bedrock:ListFoundationModels", "*")
    srv.cli("keys", "policy", *data, key_id, "--clear")
    assert control.list_foundation_models()["modelSummaries"]
