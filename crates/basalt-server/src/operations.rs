//! The Bedrock operation each route serves, by method and matched route template.
//! Metrics label requests with it and key policies authorize by it.

/// A route's knowledge base, and one data source in it.
const KB: &str = "/knowledgebases/{knowledge_base_id}";
const DS: &str = "/knowledgebases/{knowledge_base_id}/datasources/{data_source_id}";

/// (method, route template or its part after `KB` or `DS`, operation); `*` is any method.
const ROUTES: &[(&str, &str, &str)] = &[
    ("*", "/model/{model_id}/invoke", "InvokeModel"),
    (
        "*",
        "/model/{model_id}/invoke-with-response-stream",
        "InvokeModelWithResponseStream",
    ),
    ("*", "/model/{model_id}/converse", "Converse"),
    ("*", "/model/{model_id}/converse-stream", "ConverseStream"),
    ("*", "/model/{model_id}/count-tokens", "CountTokens"),
    (
        "*",
        "/guardrail/{guardrail_identifier}/version/{guardrail_version}/apply",
        "ApplyGuardrail",
    ),
    ("GET", "/async-invoke", "ListAsyncInvokes"),
    ("POST", "/async-invoke", "StartAsyncInvoke"),
    ("GET", "/async-invoke/{invocation_arn}", "GetAsyncInvoke"),
    ("*", "/foundation-models", "ListFoundationModels"),
    (
        "*",
        "/foundation-models/{model_identifier}",
        "GetFoundationModel",
    ),
    ("GET", "/guardrails", "ListGuardrails"),
    ("POST", "/guardrails", "CreateGuardrail"),
    ("GET", "/guardrails/{guardrail_identifier}", "GetGuardrail"),
    (
        "PUT",
        "/guardrails/{guardrail_identifier}",
        "UpdateGuardrail",
    ),
    (
        "DELETE",
        "/guardrails/{guardrail_identifier}",
        "DeleteGuardrail",
    ),
    (
        "POST",
        "/guardrails/{guardrail_identifier}",
        "CreateGuardrailVersion",
    ),
    ("POST", "/model-invocation-job", "CreateModelInvocationJob"),
    (
        "GET",
        "/model-invocation-job/{job_identifier}",
        "GetModelInvocationJob",
    ),
    (
        "POST",
        "/model-invocation-job/{job_identifier}/stop",
        "StopModelInvocationJob",
    ),
    ("GET", "/model-invocation-jobs", "ListModelInvocationJobs"),
    ("POST", "/model-import-jobs", "CreateModelImportJob"),
    ("GET", "/model-import-jobs", "ListModelImportJobs"),
    (
        "GET",
        "/model-import-jobs/{job_identifier}",
        "GetModelImportJob",
    ),
    ("GET", "/imported-models", "ListImportedModels"),
    (
        "GET",
        "/imported-models/{model_identifier}",
        "GetImportedModel",
    ),
    (
        "DELETE",
        "/imported-models/{model_identifier}",
        "DeleteImportedModel",
    ),
    (
        "POST",
        "/provisioned-model-throughput",
        "CreateProvisionedModelThroughput",
    ),
    (
        "GET",
        "/provisioned-model-throughput/{provisioned_model_id}",
        "GetProvisionedModelThroughput",
    ),
    (
        "PATCH",
        "/provisioned-model-throughput/{provisioned_model_id}",
        "UpdateProvisionedModelThroughput",
    ),
    (
        "DELETE",
        "/provisioned-model-throughput/{provisioned_model_id}",
        "DeleteProvisionedModelThroughput",
    ),
    (
        "GET",
        "/provisioned-model-throughputs",
        "ListProvisionedModelThroughputs",
    ),
    (
        "PUT",
        "/logging/modelinvocations",
        "PutModelInvocationLoggingConfiguration",
    ),
    (
        "GET",
        "/logging/modelinvocations",
        "GetModelInvocationLoggingConfiguration",
    ),
    (
        "DELETE",
        "/logging/modelinvocations",
        "DeleteModelInvocationLoggingConfiguration",
    ),
    ("PUT", "/knowledgebases/", "CreateKnowledgeBase"),
    ("POST", "/knowledgebases/", "ListKnowledgeBases"),
    ("*", "/retrieveAndGenerate", "RetrieveAndGenerate"),
    (
        "*",
        "/retrieveAndGenerateStream",
        "RetrieveAndGenerateStream",
    ),
];

/// Routes under `KB`.
const KB_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "", "GetKnowledgeBase"),
    ("PUT", "", "UpdateKnowledgeBase"),
    ("DELETE", "", "DeleteKnowledgeBase"),
    ("PUT", "/datasources/", "CreateDataSource"),
    ("POST", "/datasources/", "ListDataSources"),
    ("*", "/retrieve", "Retrieve"),
];

/// Routes under `DS`.
const DS_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "", "GetDataSource"),
    ("PUT", "", "UpdateDataSource"),
    ("DELETE", "", "DeleteDataSource"),
    ("PUT", "/ingestionjobs/", "StartIngestionJob"),
    ("POST", "/ingestionjobs/", "ListIngestionJobs"),
    (
        "GET",
        "/ingestionjobs/{ingestion_job_id}",
        "GetIngestionJob",
    ),
    (
        "POST",
        "/ingestionjobs/{ingestion_job_id}/stop",
        "StopIngestionJob",
    ),
    ("PUT", "/documents", "IngestKnowledgeBaseDocuments"),
    ("POST", "/documents", "ListKnowledgeBaseDocuments"),
    (
        "POST",
        "/documents/getDocuments",
        "GetKnowledgeBaseDocuments",
    ),
    (
        "POST",
        "/documents/deleteDocuments",
        "DeleteKnowledgeBaseDocuments",
    ),
];

/// The operation `method` on the matched `route` serves, if it is one this server has.
pub fn name(method: &str, route: &str) -> Option<&'static str> {
    let (table, rest) = if let Some(rest) = route.strip_prefix(DS) {
        (DS_ROUTES, rest)
    } else if let Some(rest) = route.strip_prefix(KB) {
        (KB_ROUTES, rest)
    } else {
        (ROUTES, route)
    };
    table
        .iter()
        .find(|(m, r, _)| (*m == "*" || *m == method) && *r == rest)
        .map(|(_, _, name)| *name)
}

/// Every operation name, once.
pub fn all() -> impl Iterator<Item = &'static str> {
    ROUTES
        .iter()
        .chain(KB_ROUTES)
        .chain(DS_ROUTES)
        .map(|(_, _, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_operations() {
        assert_eq!(name("POST", "/model/{model_id}/converse"), Some("Converse"));
        assert_eq!(
            name("PUT", "/guardrails/{guardrail_identifier}"),
            Some("UpdateGuardrail")
        );
        assert_eq!(name("PUT", KB), Some("UpdateKnowledgeBase"));
        assert_eq!(
            name("POST", &format!("{DS}/documents/deleteDocuments")),
            Some("DeleteKnowledgeBaseDocuments")
        );
        assert_eq!(
            name("PUT", &format!("{DS}/ingestionjobs/")),
            Some("StartIngestionJob")
        );
        assert_eq!(name("POST", &format!("{KB}/retrieve")), Some("Retrieve"));
        assert_eq!(name("GET", "/elsewhere"), None);
        assert_eq!(name("PATCH", KB), None);
    }

    #[test]
    fn names_are_unique() {
        let names: Vec<&str> = all().collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len());
    }
}
