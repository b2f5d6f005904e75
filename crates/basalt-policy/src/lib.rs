//! IAM-style policies for Basalt's access keys and API keys: parsing and validating
//! identity-based policy documents, and deciding a request as IAM does.
//!
//! A document is `{"Version": "2012-10-17", "Statement": [...]}`; each statement has
//! an `Effect` (`Allow` or `Deny`), `Action` or `NotAction`, and `Resource` or
//! `NotResource`, each a string or a list. `*` and `?` are wildcards. Actions match
//! without regard to case, resources with it, and ARNs segment by segment. An explicit
//! Deny wins over any Allow; a request no Allow covers is implicitly denied.
//!
//! `Condition` is refused rather than ignored: ignoring it would grant (or deny) more
//! than the document says.

use serde_json::{Map, Value};

/// Longest document, whitespace not counted (IAM's limit for managed policies).
pub const MAX_POLICY_CHARS: usize = 6144;
/// Longest document read at all, whitespace included.
pub const MAX_DOCUMENT_BYTES: usize = 65_536;
/// Most statements in one document.
pub const MAX_STATEMENTS: usize = 100;

/// The IAM service prefix of every action this server authorizes.
pub const SERVICE: &str = "bedrock";

/// The `bedrock:` actions this server authorizes, as IAM names them. Converse and
/// ConverseStream are not among them: IAM authorizes them as InvokeModel and
/// InvokeModelWithResponseStream, StartAsyncInvoke as InvokeModel, and
/// RetrieveAndGenerateStream as RetrieveAndGenerate.
pub const ACTIONS: &[&str] = &[
    "InvokeModel",
    "InvokeModelWithResponseStream",
    "CountTokens",
    "ApplyGuardrail",
    "GetAsyncInvoke",
    "ListAsyncInvokes",
    "ListFoundationModels",
    "GetFoundationModel",
    "CreateGuardrail",
    "GetGuardrail",
    "ListGuardrails",
    "UpdateGuardrail",
    "DeleteGuardrail",
    "CreateGuardrailVersion",
    "CreateModelInvocationJob",
    "GetModelInvocationJob",
    "ListModelInvocationJobs",
    "StopModelInvocationJob",
    "CreateModelImportJob",
    "GetModelImportJob",
    "ListModelImportJobs",
    "GetImportedModel",
    "ListImportedModels",
    "DeleteImportedModel",
    "CreateProvisionedModelThroughput",
    "GetProvisionedModelThroughput",
    "ListProvisionedModelThroughputs",
    "UpdateProvisionedModelThroughput",
    "DeleteProvisionedModelThroughput",
    "PutModelInvocationLoggingConfiguration",
    "GetModelInvocationLoggingConfiguration",
    "DeleteModelInvocationLoggingConfiguration",
    "CreateKnowledgeBase",
    "GetKnowledgeBase",
    "ListKnowledgeBases",
    "UpdateKnowledgeBase",
    "DeleteKnowledgeBase",
    "CreateDataSource",
    "GetDataSource",
    "ListDataSources",
    "UpdateDataSource",
    "DeleteDataSource",
    "StartIngestionJob",
    "GetIngestionJob",
    "ListIngestionJobs",
    "StopIngestionJob",
    "IngestKnowledgeBaseDocuments",
    "GetKnowledgeBaseDocuments",
    "ListKnowledgeBaseDocuments",
    "DeleteKnowledgeBaseDocuments",
    "Retrieve",
    "RetrieveAndGenerate",
];

/// The one action outside `bedrock:` this server authorizes: handing a role to a job
/// (CreateModelInvocationJob, CreateModelImportJob and CreateKnowledgeBase take a
/// `roleArn`), checked on the role's ARN as IAM checks it.
pub const PASS_ROLE: &str = "iam:PassRole";

const VERSIONS: &[&str] = &["2012-10-17", "2008-10-17"];
/// Service prefixes people reach for that IAM does not have: Bedrock's runtime and
/// agent APIs are all authorized under `bedrock:`.
const NOT_PREFIXES: &[&str] = &["bedrock-runtime", "bedrock-agent", "bedrock-agent-runtime"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy is not valid JSON: {0}")]
    Json(String),
    #[error(
        "the policy has {0} characters (whitespace not counted); the limit is {MAX_POLICY_CHARS}"
    )]
    TooLarge(usize),
    #[error("the policy has {0} statements; the limit is {MAX_STATEMENTS}")]
    TooManyStatements(usize),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        path: path.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// How a policy answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows the request.
    ImplicitDeny,
    /// A Deny statement covers the request.
    ExplicitDeny,
}

/// A list of patterns, or (for NotAction and NotResource) everything but them.
#[derive(Debug, Clone)]
struct Patterns {
    not: bool,
    patterns: Vec<String>,
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    actions: Patterns,
    resources: Patterns,
}

/// A validated policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
    document: Value,
    warnings: Vec<String>,
}

impl Policy {
    /// Parses and validates a document as written by its author.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(PolicyError::TooLarge(non_whitespace(text)));
        }
        let chars = non_whitespace(text);
        if chars > MAX_POLICY_CHARS {
            return Err(PolicyError::TooLarge(chars));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        Self::from_document(value)
    }

    /// Validates a document already parsed (one read back from storage).
    pub fn from_document(document: Value) -> Result<Self, PolicyError> {
        let chars = non_whitespace(&document.to_string());
        if chars > MAX_POLICY_CHARS {
            return Err(PolicyError::TooLarge(chars));
        }
        let Value::Object(top) = &document else {
            return Err(invalid("policy", "must be a JSON object"));
        };
        let mut warnings = Vec::new();
        let statements = parse_top(top, &mut warnings)?;
        Ok(Self {
            statements,
            document,
            warnings,
        })
    }

    /// The document, to store or show.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// What is legal but probably not meant: patterns that match no action or resource
    /// this server checks (`bedrock:Converse*`, `s3:GetObject`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Decides `action` (`bedrock:InvokeModel`) on `resource` (an ARN, or `*` for an
    /// operation on no particular resource).
    pub fn evaluate(&self, action: &str, resource: &str) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if s.actions.covers(action, action_matches) && s.resources.covers(resource, arn_matches)
            {
                match s.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

/// AccessDeniedException's message, in AWS's words, for a request `decision` refused.
pub fn denial_message(
    principal_arn: &str,
    action: &str,
    resource: &str,
    decision: Decision,
) -> String {
    let reason = match decision {
        Decision::ExplicitDeny => "with an explicit deny in an identity-based policy".to_string(),
        Decision::ImplicitDeny | Decision::Allow => {
            format!("because no identity-based policy allows the {action} action")
        }
    };
    format!("User: {principal_arn} is not authorized to perform: {action} on resource: {resource} {reason}")
}

impl Patterns {
    fn covers(&self, value: &str, matches: fn(&str, &str) -> bool) -> bool {
        self.patterns.iter().any(|p| matches(p, value)) != self.not
    }
}

fn non_whitespace(text: &str) -> usize {
    text.chars().filter(|c| !c.is_whitespace()).count()
}

fn parse_top(
    top: &Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Statement>, PolicyError> {
    for key in top.keys() {
        if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
            return Err(invalid(
                key,
                "unknown field; a policy has Version, Id and Statement",
            ));
        }
    }
    match top.get("Version") {
        None => {}
        Some(Value::String(v)) if VERSIONS.contains(&v.as_str()) => {}
        Some(other) => {
            return Err(invalid(
                "Version",
                format!("{other} is not a policy language version; use \"2012-10-17\""),
            ))
        }
    }
    if let Some(id) = top.get("Id") {
        if !id.is_string() {
            return Err(invalid("Id", "must be a string"));
        }
    }
    let raw: Vec<&Value> = match top.get("Statement") {
        None => return Err(invalid("Statement", "is required")),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => {
            return Err(invalid(
                "Statement",
                "must be a statement object or a list of them",
            ))
        }
    };
    if raw.len() > MAX_STATEMENTS {
        return Err(PolicyError::TooManyStatements(raw.len()));
    }
    raw.iter()
        .enumerate()
        .map(|(i, s)| parse_statement(&format!("Statement[{i}]"), s, warnings))
        .collect()
}

fn parse_statement(
    path: &str,
    value: &Value,
    warnings: &mut Vec<String>,
) -> Result<Statement, PolicyError> {
    let Value::Object(s) = value else {
        return Err(invalid(path, "must be an object"));
    };
    for key in s.keys() {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" => {}
            "Condition" => {
                return Err(invalid(
                    &at,
                    "is not supported: this server evaluates no condition keys, and ignoring the condition would grant or deny more than the statement says",
                ))
            }
            "Principal" | "NotPrincipal" => {
                return Err(invalid(
                    &at,
                    "is not allowed in a key's policy: it is an identity-based policy, and its principal is the key",
                ))
            }
            _ => {
                return Err(invalid(
                    &at,
                    "unknown field; a statement has Sid, Effect, Action or NotAction, and Resource or NotResource",
                ))
            }
        }
    }
    if let Some(sid) = s.get("Sid") {
        let ok = sid
            .as_str()
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_alphanumeric()));
        if !ok {
            return Err(invalid(
                &format!("{path}.Sid"),
                "must be a string of ASCII letters and digits",
            ));
        }
    }
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => {
            return Err(invalid(
                &format!("{path}.Effect"),
                "is required and must be \"Allow\" or \"Deny\"",
            ))
        }
    };
    let (actions, field) = one_of(s, path, "Action", "NotAction")?;
    for (i, a) in actions.patterns.iter().enumerate() {
        check_action(&format!("{path}.{field}[{i}]"), a, warnings)?;
    }
    let (resources, field) = one_of(s, path, "Resource", "NotResource")?;
    for (i, r) in resources.patterns.iter().enumerate() {
        check_resource(&format!("{path}.{field}[{i}]"), r, warnings)?;
    }
    Ok(Statement {
        effect,
        actions,
        resources,
    })
}

/// Exactly one of `name` and `not_name`, as a string or a non-empty list of strings;
/// also says which was given.
fn one_of(
    s: &Map<String, Value>,
    path: &str,
    name: &'static str,
    not_name: &'static str,
) -> Result<(Patterns, &'static str), PolicyError> {
    let (not, field, value) = match (s.get(name), s.get(not_name)) {
        (Some(v), None) => (false, name, v),
        (None, Some(v)) => (true, not_name, v),
        (Some(_), Some(_)) => {
            return Err(invalid(
                path,
                format!("has both {name} and {not_name}; a statement takes one"),
            ))
        }
        (None, None) => return Err(invalid(path, format!("needs {name} or {not_name}"))),
    };
    let at = format!("{path}.{field}");
    let patterns = match value {
        Value::String(v) => vec![v.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(&at, "must hold only strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                &at,
                "must be a string or a non-empty list of strings",
            ))
        }
    };
    Ok((Patterns { not, patterns }, field))
}

fn check_action(path: &str, action: &str, warnings: &mut Vec<String>) -> Result<(), PolicyError> {
    if action == "*" {
        return Ok(());
    }
    let lower = action.to_ascii_lowercase();
    let Some((prefix, name)) = lower.split_once(':') else {
        return Err(invalid(
            path,
            format!("{action:?} is not an action; write service:Name, such as bedrock:InvokeModel"),
        ));
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?');
    let prefix_ok = !prefix.is_empty()
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok || !prefix_ok {
        return Err(invalid(
            path,
            format!("{action:?} is not an action; write service:Name, such as bedrock:InvokeModel"),
        ));
    }
    if NOT_PREFIXES.contains(&prefix) {
        return Err(invalid(
            path,
            format!("IAM has no {prefix}: actions; Bedrock's are all bedrock:, as in bedrock:InvokeModel or bedrock:Retrieve"),
        ));
    }
    if action_matches(&lower, PASS_ROLE) {
        return Ok(());
    }
    if prefix != SERVICE {
        warnings.push(format!(
            "{path}: {action} names no {SERVICE}: action, so it applies to no call this server authorizes"
        ));
        return Ok(());
    }
    let known = ACTIONS
        .iter()
        .any(|a| action_matches(&lower, &format!("{SERVICE}:{a}")));
    if !known {
        let hint = if lower.starts_with("bedrock:converse") {
            " (IAM authorizes Converse as bedrock:InvokeModel and ConverseStream as bedrock:InvokeModelWithResponseStream)"
        } else if lower.starts_with("bedrock:startasyncinvoke") {
            " (IAM authorizes StartAsyncInvoke as bedrock:InvokeModel)"
        } else {
            ""
        };
        warnings.push(format!(
            "{path}: {action} matches no action this server authorizes{hint}"
        ));
    }
    Ok(())
}

fn check_resource(
    path: &str,
    resource: &str,
    warnings: &mut Vec<String>,
) -> Result<(), PolicyError> {
    if resource == "*" {
        return Ok(());
    }
    let parts: Vec<&str> = resource.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Err(invalid(
            path,
            format!("{resource:?} must be \"*\" or an ARN, such as arn:aws:bedrock:*::foundation-model/anthropic.*"),
        ));
    }
    if parts[2] != SERVICE && parts[2] != "iam" && parts[2] != "*" {
        warnings.push(format!(
            "{path}: {resource} is not a {SERVICE} resource, so it matches no call this server authorizes"
        ));
    }
    Ok(())
}

fn action_matches(pattern: &str, action: &str) -> bool {
    glob(
        &pattern.to_ascii_lowercase().chars().collect::<Vec<_>>(),
        &action.to_ascii_lowercase().chars().collect::<Vec<_>>(),
    )
}

/// ARNs match segment by segment (a wildcard does not cross a colon before the resource
/// part), as IAM matches them; `*` alone matches everything, including `*`.
fn arn_matches(pattern: &str, resource: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let r: Vec<&str> = resource.splitn(6, ':').collect();
    p.len() == r.len()
        && p.iter().zip(&r).all(|(p, r)| {
            glob(
                &p.chars().collect::<Vec<_>>(),
                &r.chars().collect::<Vec<_>>(),
            )
        })
}

/// `*` matches any run of characters, `?` any one.
fn glob(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    #[test]
    fn pass_role_is_an_action_policies_may_name() {
        let p = Policy::parse(
            r#"{"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::*:role/Bedrock*"}]}"#,
        )
        .expect("valid");
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
        assert_eq!(
            p.evaluate(
                "iam:PassRole",
                "arn:aws:iam::123456789012:role/BedrockBatch"
            ),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate("iam:PassRole", "arn:aws:iam::123456789012:role/Admin"),
            Decision::ImplicitDeny
        );
    }

    use super::*;

    const HAIKU: &str =
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0";
    const TITAN: &str = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0";

    fn policy(text: &str) -> Policy {
        Policy::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn error(text: &str) -> String {
        match Policy::parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn globs() {
        let g = |p: &str, t: &str| {
            glob(
                &p.chars().collect::<Vec<_>>(),
                &t.chars().collect::<Vec<_>>(),
            )
        };
        assert!(g("*", ""));
        assert!(g("a*c", "abbbc"));
        assert!(g("a?c", "abc"));
        assert!(!g("a?c", "ac"));
        assert!(g("*b*", "abc"));
        assert!(!g("a*d", "abc"));
        assert!(g("a**", "a"));
        assert!(g("*a*a*a", "aaaa"));
        assert!(!g("*a*a*a", "aab"));
    }

    #[test]
    fn actions_match_without_case_and_resources_with_it() {
        let p = policy(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"BEDROCK:invoke*","Resource":"arn:aws:bedrock:*::foundation-model/anthropic.*"}]}"#,
        );
        assert_eq!(p.evaluate("bedrock:InvokeModel", HAIKU), Decision::Allow);
        assert_eq!(
            p.evaluate("bedrock:InvokeModelWithResponseStream", HAIKU),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate("bedrock:InvokeModel", TITAN),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate(
                "bedrock:InvokeModel",
                "arn:aws:bedrock:us-east-1::foundation-model/Anthropic.claude"
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate("bedrock:ListGuardrails", "*"),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn arn_wildcards_stay_inside_their_segment() {
        assert!(arn_matches(
            "arn:aws:bedrock:us-*:*:guardrail/*",
            "arn:aws:bedrock:us-east-1:000000000000:guardrail/abc"
        ));
        assert!(arn_matches("arn:aws:bedrock:*:*:*", HAIKU));
        // The resource part may hold colons; a wildcard there spans them.
        assert!(arn_matches("arn:aws:bedrock:*::foundation-model/*", HAIKU));
        assert!(!arn_matches("arn:aws:bedrock:*:foundation-model/*", HAIKU));
        assert!(!arn_matches("arn:aws:bedrock:*:*:*", "*"));
        assert!(arn_matches("*", "*"));
        assert!(arn_matches(
            "arn:aws:bedrock:us-east-1:?????????????:x",
            "arn:aws:bedrock:us-east-1:0123456789012:x"
        ));
    }

    #[test]
    fn an_explicit_deny_wins_and_nothing_allowed_is_denied() {
        let p = policy(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"bedrock:*","Resource":"*"},
                {"Sid":"NoHaiku","Effect":"Deny","Action":["bedrock:InvokeModel","bedrock:InvokeModelWithResponseStream"],"Resource":"arn:aws:bedrock:*::foundation-model/anthropic.claude-3-haiku*"}
            ]}"#,
        );
        assert_eq!(
            p.evaluate("bedrock:InvokeModel", HAIKU),
            Decision::ExplicitDeny
        );
        assert_eq!(p.evaluate("bedrock:InvokeModel", TITAN), Decision::Allow);
        assert_eq!(p.evaluate("bedrock:CountTokens", HAIKU), Decision::Allow);
        assert_eq!(p.evaluate("s3:GetObject", "*"), Decision::ImplicitDeny);
        let empty = policy(r#"{"Version":"2012-10-17","Statement":[]}"#);
        assert_eq!(
            empty.evaluate("bedrock:ListFoundationModels", "*"),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn not_action_and_not_resource_cover_everything_else() {
        let p = policy(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","NotAction":["bedrock:Create*","bedrock:Delete*"],"Resource":"*"},
                {"Effect":"Deny","Action":"bedrock:InvokeModel*","NotResource":"arn:aws:bedrock:*::foundation-model/amazon.*"}
            ]}"#,
        );
        assert_eq!(p.evaluate("bedrock:ListGuardrails", "*"), Decision::Allow);
        assert_eq!(
            p.evaluate("bedrock:CreateGuardrail", "*"),
            Decision::ImplicitDeny
        );
        assert_eq!(p.evaluate("bedrock:InvokeModel", TITAN), Decision::Allow);
        assert_eq!(
            p.evaluate("bedrock:InvokeModel", HAIKU),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn a_single_statement_object_and_string_fields_are_accepted() {
        let p = policy(r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#);
        assert_eq!(
            p.evaluate(
                "bedrock:Retrieve",
                "arn:aws:bedrock:us-east-1:0:knowledge-base/X"
            ),
            Decision::Allow
        );
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn documents_are_validated_with_the_field_named() {
        assert!(error("not json").contains("not valid JSON"));
        assert!(error("[]").contains("must be a JSON object"));
        assert!(error(r#"{"Version":"2012-10-17"}"#).contains("Statement: is required"));
        assert!(error(r#"{"Version":"2024-01-01","Statement":[]}"#).contains("Version"));
        assert!(error(r#"{"Statement":[],"Extra":1}"#).contains("Extra: unknown field"));
        let e = error(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Conditions":{}}]}"#,
        );
        assert!(e.contains("Statement[0].Conditions: unknown field"), "{e}");
        let e = error(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}]}"#,
        );
        assert!(e.contains("Condition: is not supported"), "{e}");
        let e = error(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#,
        );
        assert!(e.contains("Principal"), "{e}");
        assert!(
            error(r#"{"Statement":[{"Effect":"allow","Action":"*","Resource":"*"}]}"#)
                .contains("Effect")
        );
        assert!(
            error(r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#)
                .contains("needs Action or NotAction")
        );
        assert!(error(
            r#"{"Statement":[{"Effect":"Allow","Action":"*","NotAction":"*","Resource":"*"}]}"#
        )
        .contains("both"));
        assert!(error(r#"{"Statement":[{"Effect":"Allow","Action":"*"}]}"#)
            .contains("needs Resource or NotResource"));
        assert!(
            error(r#"{"Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#)
                .contains("non-empty")
        );
        assert!(
            error(r#"{"Statement":[{"Effect":"Allow","Action":[1],"Resource":"*"}]}"#)
                .contains("only strings")
        );
        let e =
            error(r#"{"Statement":[{"Effect":"Allow","Action":"InvokeModel","Resource":"*"}]}"#);
        assert!(
            e.contains("Statement[0].Action[0]") && e.contains("service:Name"),
            "{e}"
        );
        let e = error(
            r#"{"Statement":[{"Effect":"Allow","Action":"bedrock-runtime:InvokeModel","Resource":"*"}]}"#,
        );
        assert!(e.contains("bedrock:InvokeModel"), "{e}");
        let e =
            error(r#"{"Statement":[{"Effect":"Allow","Action":"*","NotResource":"anthropic.*"}]}"#);
        assert!(
            e.contains("Statement[0].NotResource[0]") && e.contains("ARN"),
            "{e}"
        );
        assert!(error(
            r#"{"Statement":[{"Sid":"a b","Effect":"Allow","Action":"*","Resource":"*"}]}"#
        )
        .contains("Sid"));
    }

    #[test]
    fn size_and_statement_count_are_limited() {
        let statement = r#"{"Effect":"Allow","Action":"bedrock:GetGuardrail","Resource":"*"}"#;
        let many = format!(
            r#"{{"Statement":[{}]}}"#,
            vec![statement; MAX_STATEMENTS + 1].join(",")
        );
        assert!(many.len() < MAX_POLICY_CHARS * 2);
        let e = Policy::parse(&many);
        assert!(
            matches!(
                e,
                Err(PolicyError::TooManyStatements(101)) | Err(PolicyError::TooLarge(_))
            ),
            "{e:?}"
        );
        let few = format!(r#"{{"Statement":[{}]}}"#, vec![statement; 95].join(","));
        assert!(matches!(Policy::parse(&few), Err(PolicyError::TooLarge(_))));
        // Whitespace is not counted.
        let spaced = format!("{}{}", " ".repeat(MAX_POLICY_CHARS), r#"{"Statement":[]}"#);
        assert!(Policy::parse(&spaced).is_ok());
        assert!(matches!(
            Policy::parse(&" ".repeat(MAX_DOCUMENT_BYTES + 1)),
            Err(PolicyError::TooLarge(0))
        ));
        let tiny = r#"{"Effect":"Allow","Action":"*","Resource":"*"}"#;
        let counted = format!(
            r#"{{"Statement":[{}]}}"#,
            vec![tiny; MAX_STATEMENTS + 1].join(",")
        );
        assert!(matches!(
            Policy::parse(&counted),
            Err(PolicyError::TooManyStatements(101))
        ));
    }

    #[test]
    fn patterns_that_match_nothing_here_are_warned_about() {
        let p = policy(
            r#"{"Statement":[{"Effect":"Allow","Action":["bedrock:Converse*","s3:GetObject","bedrock:InvokeModel"],"Resource":["*","arn:aws:s3:::bucket/*"]}]}"#,
        );
        let w = p.warnings().join("\n");
        assert!(
            w.contains("bedrock:Converse*") && w.contains("bedrock:InvokeModel and ConverseStream"),
            "{w}"
        );
        assert!(w.contains("s3:GetObject"), "{w}");
        assert!(w.contains("arn:aws:s3:::bucket/*"), "{w}");
        assert_eq!(p.warnings().len(), 3, "{w}");
    }

    #[test]
    fn a_stored_document_round_trips() {
        let p = policy(
            r#"{ "Version": "2012-10-17", "Statement": [ {"Effect": "Deny", "Action": "bedrock:*", "Resource": "*"} ] }"#,
        );
        let again = Policy::from_document(p.document().clone()).expect("valid");
        assert_eq!(
            again.evaluate("bedrock:InvokeModel", HAIKU),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn denials_read_as_aws_writes_them() {
        let user = "arn:aws:iam::000000000000:user/BSLTEXAMPLE";
        assert_eq!(
            denial_message(user, "bedrock:InvokeModel", HAIKU, Decision::ImplicitDeny),
            format!("User: {user} is not authorized to perform: bedrock:InvokeModel on resource: {HAIKU} because no identity-based policy allows the bedrock:InvokeModel action")
        );
        assert_eq!(
            denial_message(user, "bedrock:ListGuardrails", "*", Decision::ExplicitDeny),
            format!("User: {user} is not authorized to perform: bedrock:ListGuardrails on resource: * with an explicit deny in an identity-based policy")
        );
    }
}
