//! Control-plane (`bedrock`) operations served from the catalog.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::Response;
use basalt_catalog::ModelEntry;
use basalt_proto::control::{
    FoundationModelSummary, GetFoundationModelResponse, ListFoundationModelsResponse,
    ModelLifecycle,
};
use basalt_proto::BedrockError;

use crate::auth::Caller;
use crate::edge::{ApiError, Label};
use crate::runtime::json_body;
use crate::AppState;

fn summary(entry: &ModelEntry, region: &str) -> FoundationModelSummary {
    let embedding = entry.format.is_embedding();
    let image = entry.format.is_image();
    FoundationModelSummary {
        model_arn: format!(
            "arn:aws:bedrock:{region}::foundation-model/{}",
            entry.model_id
        ),
        model_id: entry.model_id.clone(),
        model_name: entry.name.clone(),
        provider_name: entry.provider.clone(),
        input_modalities: vec!["TEXT"],
        output_modalities: vec![if embedding {
            "EMBEDDING"
        } else if image {
            "IMAGE"
        } else {
            "TEXT"
        }],
        response_streaming_supported: !embedding && !image,
        customizations_supported: Vec::new(),
        inference_types_supported: vec!["ON_DEMAND"],
        model_lifecycle: ModelLifecycle { status: "ACTIVE" },
    }
}

pub async fn list_foundation_models(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        BedrockError::validation(format!("The query string is invalid: {}.", e.body_text()))
    })?;
    for (key, value) in &query {
        let allowed: &[&str] = match key.as_str() {
            "byOutputModality" => &["TEXT", "IMAGE", "EMBEDDING"],
            "byInferenceType" => &["ON_DEMAND", "PROVISIONED"],
            "byCustomizationType" => &["FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION"],
            _ => continue,
        };
        if !allowed.contains(&value.as_str()) {
            return Err(BedrockError::constraint(
                key,
                value,
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ),
            )
            .into());
        }
    }
    let summaries = state
        .catalog
        .listed()
        .iter()
        .map(|e| summary(e, &caller.region))
        .filter(|s| {
            query
                .get("byProvider")
                .is_none_or(|p| s.provider_name.eq_ignore_ascii_case(p))
                && query
                    .get("byOutputModality")
                    .is_none_or(|m| s.output_modalities.contains(&m.as_str()))
                && query
                    .get("byInferenceType")
                    .is_none_or(|t| s.inference_types_supported.contains(&t.as_str()))
                && !query.contains_key("byCustomizationType")
        })
        .collect();
    Ok(json_body(&ListFoundationModelsResponse {
        model_summaries: summaries,
    }))
}

pub async fn get_foundation_model(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let entry = state
        .catalog
        .resolve(&identifier)
        .map_err(|_| BedrockError::not_found(format!("The model {identifier} does not exist.")))?;
    Ok(json_body(&GetFoundationModelResponse {
        model_details: summary(&entry, &caller.region),
    }))
}
