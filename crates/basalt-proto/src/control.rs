//! Control-plane (`bedrock`) shapes that Basalt serves.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FoundationModelSummary {
    pub model_arn: String,
    pub model_id: String,
    pub model_name: String,
    pub provider_name: String,
    pub input_modalities: Vec<&'static str>,
    pub output_modalities: Vec<&'static str>,
    pub response_streaming_supported: bool,
    pub customizations_supported: Vec<&'static str>,
    pub inference_types_supported: Vec<&'static str>,
    pub model_lifecycle: ModelLifecycle,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelLifecycle {
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFoundationModelsResponse {
    pub model_summaries: Vec<FoundationModelSummary>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetFoundationModelResponse {
    pub model_details: FoundationModelSummary,
}
