//! The embedding models knowledge bases use: a catalog model ID or ARN, served by
//! the engine, at the width the knowledge base asks for.

use std::sync::Arc;

use basalt_catalog::{BodyFormat, Catalog};
use basalt_engine::EmbeddingModel;
use basalt_knowledge::{Embedder, Embedders};
use basalt_proto::{BedrockError, ErrorCode};

use crate::loaded::{Loaded, LoadedModels};

pub struct EngineEmbedders {
    pub catalog: Catalog,
    pub models: LoadedModels,
}

/// The width a knowledge base's vectors get from `format` when it names none, and
/// the widths it may name: Bedrock's for each model family.
pub fn widths(format: BodyFormat) -> (usize, &'static [usize]) {
    match format {
        BodyFormat::TitanEmbedV2 => (1024, &[256, 512, 1024]),
        BodyFormat::TitanEmbedV1 => (1536, &[1536]),
        _ => (1024, &[1024]),
    }
}

/// Checks that `model_arn` names an embedding model and `dimensions` suits it.
pub fn check_model(
    catalog: &Catalog,
    model_arn: &str,
    dimensions: Option<usize>,
) -> Result<usize, BedrockError> {
    let entry = catalog.resolve(model_arn).map_err(|_| {
        BedrockError::validation(format!(
            "The embedding model {model_arn} is not one this server serves. List them with ListFoundationModels (byOutputModality=EMBEDDING)."
        ))
    })?;
    if !entry.format.is_embedding() {
        return Err(BedrockError::validation(format!(
            "{model_arn} generates text; embeddingModelArn must name an embedding model."
        )));
    }
    let (default, allowed) = widths(entry.format);
    match dimensions {
        None => Ok(default),
        Some(d) if allowed.contains(&d) => Ok(d),
        Some(d) => Err(BedrockError::validation(format!(
            "{model_arn} supports dimensions {allowed:?}, not {d}."
        ))),
    }
}

impl Embedders for EngineEmbedders {
    fn embedder(
        &self,
        model_arn: &str,
        dimensions: Option<usize>,
    ) -> Result<Option<Arc<dyn Embedder>>, BedrockError> {
        let width = check_model(&self.catalog, model_arn, dimensions)?;
        let entry = self.catalog.resolve(model_arn)?;
        match self.models.get(entry.local()?) {
            Ok(Loaded::Embed(model)) => Ok(Some(Arc::new(ModelEmbedder { model, width }))),
            Ok(Loaded::Text(_) | Loaded::Image(_)) => Err(BedrockError::validation(format!(
                "{model_arn} is not an embedding model."
            ))),
            Err(e) if e.code == ErrorCode::ModelNotReady => Ok(None),
            Err(e) => Err(e),
        }
    }
}

struct ModelEmbedder {
    model: EmbeddingModel,
    width: usize,
}

impl Embedder for ModelEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let embedded = self
            .model
            .embed_blocking(texts)
            .map_err(|e| e.to_string())?;
        self.model
            .fit(embedded.vectors, self.width, true)
            .map_err(|e| e.to_string())
    }

    fn dimensions(&self) -> usize {
        self.width
    }

    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        self.model.token_spans(text).unwrap_or_default()
    }
}
