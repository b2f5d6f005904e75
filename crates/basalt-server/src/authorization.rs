//! What IAM would check for a request: the `bedrock:` action its operation needs and
//! the ARN of the resource it acts on (`*` for operations on no one resource).

use basalt_catalog::Catalog;

/// One action on one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `bedrock:InvokeModel`.
    pub action: String,
    pub resource: String,
}

/// The IAM action an operation is authorized as. Bedrock authorizes Converse as
/// InvokeModel, ConverseStream as InvokeModelWithResponseStream, StartAsyncInvoke as
/// InvokeModel and RetrieveAndGenerateStream as RetrieveAndGenerate; every other
/// operation as itself.
pub fn action(operation: &str) -> &str {
    match operation {
        "Converse" | "StartAsyncInvoke" => "InvokeModel",
        "ConverseStream" => "InvokeModelWithResponseStream",
        "RetrieveAndGenerateStream" => "RetrieveAndGenerate",
        other => other,
    }
}

/// Where the caller is: ARNs of resources named by ID take this region and account.
pub struct Scope<'a> {
    pub region: &'a str,
    pub account: &'a str,
    pub catalog: &'a Catalog,
}

/// Every check `operation` needs: its own action, and `iam:PassRole` on the role it
/// hands to a job, for the operations that take a `roleArn`.
pub fn checks(operation: &str, labels: &[(&str, &str)], body: &[u8], scope: &Scope) -> Vec<Check> {
    let mut all = vec![check(operation, labels, body, scope)];
    if matches!(
        operation,
        "CreateModelInvocationJob" | "CreateModelImportJob" | "CreateKnowledgeBase"
    ) {
        if let Some(role) = body_string(body, "roleArn") {
            all.push(Check {
                action: basalt_policy::PASS_ROLE.into(),
                resource: role,
            });
        }
    }
    all
}

/// The check for `operation` with its (decoded) path `labels` and request `body`.
pub fn check(operation: &str, labels: &[(&str, &str)], body: &[u8], scope: &Scope) -> Check {
    let label = |name: &str| labels.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let owned = |kind: &str, id: Option<&str>| match id {
        Some(id) => owned_arn(scope, kind, id),
        None => "*".to_string(),
    };
    let resource = match operation {
        "InvokeModel"
        | "InvokeModelWithResponseStream"
        | "Converse"
        | "ConverseStream"
        | "CountTokens" => label("model_id").map_or_else(|| "*".into(), |id| model_arn(scope, id)),
        "StartAsyncInvoke" => {
            body_string(body, "modelId").map_or_else(|| "*".into(), |id| model_arn(scope, &id))
        }
        "GetAsyncInvoke" => owned("async-invoke", label("invocation_arn")),
        "GetFoundationModel" => label("model_identifier")
            .map_or_else(|| "*".into(), |id| foundation_model_arn(scope, id)),
        "GetModelInvocationJob" | "StopModelInvocationJob" => {
            owned("model-invocation-job", label("job_identifier"))
        }
        "GetModelImportJob" => owned("model-import-job", label("job_identifier")),
        "GetImportedModel" | "DeleteImportedModel" => {
            owned("imported-model", label("model_identifier"))
        }
        "GetProvisionedModelThroughput"
        | "UpdateProvisionedModelThroughput"
        | "DeleteProvisionedModelThroughput" => {
            owned("provisioned-model", label("provisioned_model_id"))
        }
        _ => match (label("guardrail_identifier"), label("knowledge_base_id")) {
            (Some(id), _) => owned_arn(scope, "guardrail", id),
            (None, Some(id)) => owned_arn(scope, "knowledge-base", id),
            (None, None) => "*".into(),
        },
    };
    Check {
        action: format!("{}:{}", basalt_policy::SERVICE, action(operation)),
        resource,
    }
}

/// The account an ARN names (`arn:partition:service:region:ACCOUNT:resource`), if it
/// is an ARN with one.
pub fn arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.strip_prefix("arn:")?.splitn(5, ':');
    let account = parts.nth(3)?;
    parts.next()?;
    (!account.is_empty()).then_some(account)
}

/// Whether a resource identifier is an ARN that names an account other than
/// `account`. Such a resource is not the caller's: handlers answer as Bedrock does for
/// one that does not exist in the caller's account (ResourceNotFoundException). AWS
/// might instead refuse a cross-account ARN with AccessDeniedException ("no
/// resource-based policy allows"); not-found is the choice that reveals nothing about
/// the other account.
pub fn other_account(identifier: &str, account: &str) -> bool {
    arn_account(identifier).is_some_and(|a| a != account)
}

/// A resource of the caller's account: an ARN as given, or an ID made into one.
fn owned_arn(scope: &Scope, kind: &str, id: &str) -> String {
    if id.starts_with("arn:") {
        id.to_string()
    } else {
        format!(
            "arn:aws:bedrock:{}:{}:{kind}/{id}",
            scope.region, scope.account
        )
    }
}

fn foundation_model_arn(scope: &Scope, id: &str) -> String {
    if id.starts_with("arn:") {
        id.to_string()
    } else {
        format!("arn:aws:bedrock:{}::foundation-model/{id}", scope.region)
    }
}

/// A runtime `modelId`: ARNs (inference-profile, provisioned-model, imported-model) as
/// given; an inference-profile ID (`us.anthropic...`) as its profile's ARN; any other ID
/// as a foundation model's.
fn model_arn(scope: &Scope, id: &str) -> String {
    if id.starts_with("arn:") {
        return id.to_string();
    }
    // The catalog resolves a profile ID to its base model's entry.
    let profile = scope
        .catalog
        .resolve(id)
        .is_ok_and(|entry| entry.model_id != id);
    if profile {
        owned_arn(scope, "inference-profile", id)
    } else {
        foundation_model_arn(scope, id)
    }
}

/// A top-level string member of a JSON body (StartAsyncInvoke's `modelId`, a job's
/// `roleArn`).
fn body_string(body: &[u8], member: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(value.get(member)?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_of(operation: &str, labels: &[(&str, &str)], body: &[u8]) -> Check {
        let catalog = Catalog::builtin();
        let scope = Scope {
            region: "us-west-2",
            account: "123456789012",
            catalog: &catalog,
        };
        check(operation, labels, body, &scope)
    }

    #[test]
    fn runtime_calls_check_the_model_arn_as_iam_does() {
        let haiku = "anthropic.claude-3-haiku-20240307-v1:0";
        let c = check_of("Converse", &[("model_id", haiku)], b"");
        assert_eq!(c.action, "bedrock:InvokeModel");
        assert_eq!(
            c.resource,
            format!("arn:aws:bedrock:us-west-2::foundation-model/{haiku}")
        );
        let c = check_of(
            "ConverseStream",
            &[("model_id", &format!("us.{haiku}"))],
            b"",
        );
        assert_eq!(c.action, "bedrock:InvokeModelWithResponseStream");
        assert_eq!(
            c.resource,
            format!("arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.{haiku}")
        );
        let arn = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123def456";
        assert_eq!(
            check_of("InvokeModel", &[("model_id", arn)], b"").resource,
            arn
        );
        assert_eq!(
            check_of("CountTokens", &[("model_id", haiku)], b"").action,
            "bedrock:CountTokens"
        );
        let c = check_of(
            "StartAsyncInvoke",
            &[],
            br#"{"modelId":"amazon.nova-reel-v1:0","modelInput":{}}"#,
        );
        assert_eq!(c.action, "bedrock:InvokeModel");
        assert_eq!(
            c.resource,
            "arn:aws:bedrock:us-west-2::foundation-model/amazon.nova-reel-v1:0"
        );
    }

    #[test]
    fn jobs_that_take_a_role_also_check_pass_role_on_it() {
        let catalog = Catalog::builtin();
        let scope = Scope {
            region: "us-east-1",
            account: "123456789012",
            catalog: &catalog,
        };
        let role = "arn:aws:iam::123456789012:role/BedrockBatch";
        let body = format!(r#"{{"jobName": "j", "roleArn": "{role}"}}"#);
        for operation in [
            "CreateModelInvocationJob",
            "CreateModelImportJob",
            "CreateKnowledgeBase",
        ] {
            let all = checks(operation, &[], body.as_bytes(), &scope);
            assert_eq!(all.len(), 2, "{operation}");
            assert_eq!(all[0].action, format!("bedrock:{operation}"));
            assert_eq!(
                all[1],
                Check {
                    action: "iam:PassRole".into(),
                    resource: role.into()
                }
            );
        }
        // No role in the body (the handler will refuse it), or an operation without one.
        assert_eq!(
            checks("CreateModelInvocationJob", &[], b"{}", &scope).len(),
            1
        );
        assert_eq!(
            checks("CreateGuardrail", &[], body.as_bytes(), &scope).len(),
            1
        );
    }

    #[test]
    fn owned_resources_check_their_arn_and_the_rest_star() {
        assert_eq!(
            check_of(
                "ApplyGuardrail",
                &[
                    ("guardrail_identifier", "abc123"),
                    ("guardrail_version", "1")
                ],
                b""
            )
            .resource,
            "arn:aws:bedrock:us-west-2:123456789012:guardrail/abc123"
        );
        assert_eq!(
            check_of(
                "StartIngestionJob",
                &[("knowledge_base_id", "KB1"), ("data_source_id", "DS1")],
                b""
            )
            .resource,
            "arn:aws:bedrock:us-west-2:123456789012:knowledge-base/KB1"
        );
        let c = check_of("RetrieveAndGenerateStream", &[], b"{}");
        assert_eq!(
            (c.action.as_str(), c.resource.as_str()),
            ("bedrock:RetrieveAndGenerate", "*")
        );
        assert_eq!(
            check_of(
                "StopModelInvocationJob",
                &[("job_identifier", "abcdef123456")],
                b""
            )
            .resource,
            "arn:aws:bedrock:us-west-2:123456789012:model-invocation-job/abcdef123456"
        );
        assert_eq!(
            check_of(
                "GetProvisionedModelThroughput",
                &[("provisioned_model_id", "my-capacity")],
                b""
            )
            .resource,
            "arn:aws:bedrock:us-west-2:123456789012:provisioned-model/my-capacity"
        );
        assert_eq!(check_of("ListFoundationModels", &[], b"").resource, "*");
        assert_eq!(check_of("CreateGuardrail", &[], b"{}").resource, "*");
    }

    #[test]
    fn arns_name_their_account() {
        let arn = "arn:aws:bedrock:us-east-1:111111111111:guardrail/abc";
        assert_eq!(arn_account(arn), Some("111111111111"));
        assert!(other_account(arn, "222222222222"));
        assert!(!other_account(arn, "111111111111"));
        // Foundation models have no account; IDs are not ARNs.
        assert_eq!(
            arn_account("arn:aws:bedrock:us-east-1::foundation-model/a.b"),
            None
        );
        assert!(!other_account("abc", "222222222222"));
        assert_eq!(arn_account("arn:aws:bedrock:us-east-1:1"), None);
        assert_eq!(arn_account("not an arn"), None);
    }

    #[test]
    fn every_operation_is_an_action_policies_know() {
        for op in crate::operations::all() {
            assert!(basalt_policy::ACTIONS.contains(&action(op)), "{op}");
        }
        assert_eq!(
            basalt_policy::ACTIONS.len(),
            crate::operations::all().count() - 4,
            "Converse, ConverseStream, StartAsyncInvoke and RetrieveAndGenerateStream share actions"
        );
    }
}
