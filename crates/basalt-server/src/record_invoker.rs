//! Runs batch-job records through the engine: the [`basalt_batch::Invoker`] that
//! the server gives its batch runner. Embedding records share forward passes;
//! generation records run a few at a time through the same continuous batch as
//! online traffic, so online requests always find free slots.

use std::time::{Duration, Instant};

use basalt_batch::runner::{Invoked, Invoker};
use basalt_batch::{InvocationType, RecordError};
use basalt_catalog::{Catalog, ModelEntry};
use basalt_engine::{EmbeddingModel, Lane};
use basalt_proto::converse::ConverseRequest;
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_providers::embeddings::EmbedInvocation;
use basalt_providers::invoke::{self, Invocation};
use basalt_providers::{converse, converse::ConverseResponder, Target};
use futures::future::join_all;
use serde_json::Value;

use crate::edge::engine_error;
use crate::loaded::{Loaded, LoadedModels};
use crate::runtime::{completion, start};

/// Embedding records per chunk (the engine splits them into forward passes of its own size);
/// large, so that checkpointing costs little per record.
const EMBED_CHUNK: usize = 256;
/// How long a record waits for its model to finish loading before it fails.
const LOAD_WAIT: Duration = Duration::from_secs(600);

/// Shapes a finished generation as the record's modelOutput.
type Respond = Box<dyn Fn(&basalt_providers::Completion) -> Value + Send>;

pub struct EngineInvoker {
    catalog: Catalog,
    models: LoadedModels,
    /// Generation records in flight at once: a share of the batch slots.
    text_parallel: usize,
}

fn record_error(e: BedrockError) -> RecordError {
    RecordError {
        code: e.code.status(),
        message: e.message,
    }
}

impl EngineInvoker {
    pub fn new(catalog: Catalog, models: LoadedModels, batch_slots: usize) -> Self {
        Self {
            catalog,
            models,
            // A quarter of the slots, at least one: the rest stay free for online requests.
            text_parallel: (batch_slots / 4).max(1),
        }
    }

    /// The catalog entry and the loaded model, waiting while the model loads.
    async fn model(&self, model_id: &str) -> Result<(ModelEntry, Loaded, bool), BedrockError> {
        let entry = self.catalog.resolve(model_id)?;
        let local = entry.local()?.to_string();
        let vision = self.catalog.local_model(&local).is_some_and(|m| m.vision);
        let waited = Instant::now();
        loop {
            match self.models.get(&local) {
                Ok(model) => return Ok((entry, model, vision)),
                Err(e) if e.code == ErrorCode::ModelNotReady && waited.elapsed() < LOAD_WAIT => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn run_text(
        &self,
        entry: &ModelEntry,
        model: &Loaded,
        vision: bool,
        kind: InvocationType,
        input: &Value,
    ) -> Result<Invoked, BedrockError> {
        let model = match model {
            Loaded::Text(model) => model,
            Loaded::Embed(_) => {
                return Err(BedrockError::validation(
                    "This model returns embeddings; a Converse job needs a text model.",
                ))
            }
            Loaded::Image(_) => {
                return Err(BedrockError::validation(
                    "Batch inference does not run image models on this server.",
                ))
            }
        };
        let target = Target {
            model_id: &entry.model_id,
            vision,
        };
        let started = Instant::now();
        let (inv, respond): (_, Respond) = match kind {
            InvocationType::InvokeModel => {
                let body = serde_json::to_vec(input).unwrap_or_default();
                match invoke::parse(entry.format, &body, target)? {
                    Invocation::Text((inv, responder)) => {
                        (inv, Box::new(move |done| responder.response(done)))
                    }
                    Invocation::Embed(_) | Invocation::Image(_) => {
                        return Err(BedrockError::internal(
                            "an embedding or image body reached the text path",
                        ))
                    }
                }
            }
            InvocationType::Converse => {
                let body = serde_json::to_vec(input).unwrap_or_default();
                let req: ConverseRequest = from_json(&body)?;
                if req.guardrail_config.is_some() {
                    return Err(BedrockError::validation(
                            "Batch jobs do not apply guardrails; remove guardrailConfig from the record.",
                        ));
                }
                let inv = converse::parse(&req, target)?;
                let responder =
                    ConverseResponder::new(&inv, req.additional_model_response_field_paths);
                (
                    inv,
                    Box::new(move |done| {
                        serde_json::to_value(responder.converse_response(done))
                            .unwrap_or(Value::Null)
                    }),
                )
            }
        };
        let (text, summary) = start(model, &inv, Lane::Shared)
            .await?
            .collect()
            .await
            .map_err(engine_error)?;
        let done = completion(text, summary, started);
        Ok(Invoked {
            output: respond(&done),
            input_tokens: done.input_tokens.into(),
            output_tokens: done.output_tokens.into(),
        })
    }

    /// Embeds every text of every record in shared forward passes, then shapes each
    /// record's own response.
    async fn run_embeddings(
        &self,
        entry: &ModelEntry,
        model: &EmbeddingModel,
        vision: bool,
        inputs: &[Value],
    ) -> Vec<Result<Invoked, RecordError>> {
        let target = Target {
            model_id: &entry.model_id,
            vision,
        };
        let parsed: Vec<Result<EmbedInvocation, RecordError>> = inputs
            .iter()
            .map(|input| {
                let body = serde_json::to_vec(input).unwrap_or_default();
                match invoke::parse(entry.format, &body, target) {
                    Ok(Invocation::Embed(inv)) => Ok(inv),
                    Ok(Invocation::Text(_) | Invocation::Image(_)) => Err(RecordError::invalid(
                        "This model makes embeddings; its records need an embedding body.",
                    )),
                    Err(e) => Err(record_error(e)),
                }
            })
            .collect();
        let texts: Vec<String> = parsed
            .iter()
            .flatten()
            .flat_map(|inv| inv.texts.iter().cloned())
            .collect();
        let embedded = match model.embed(texts).await {
            Ok(e) => e,
            Err(e) => {
                let e = record_error(engine_error(e));
                return parsed.into_iter().map(|_| Err(e.clone())).collect();
            }
        };
        // Fitting and shaping every record is CPU work: one blocking task for the chunk.
        let model = model.clone();
        let shaped = tokio::task::spawn_blocking(move || {
            let mut vectors = embedded.vectors.into_iter();
            let mut counts = embedded.token_counts.into_iter();
            parsed
                .into_iter()
                .map(|inv| {
                    let inv = inv?;
                    let n = inv.texts.len();
                    let own: Vec<Vec<f32>> = vectors.by_ref().take(n).collect();
                    let own_counts: Vec<usize> = counts.by_ref().take(n).collect();
                    let fitted = model
                        .fit(own, inv.dimensions, inv.normalize)
                        .map_err(|e| record_error(engine_error(e)))?;
                    Ok(Invoked {
                        output: inv.response(&fitted, &own_counts),
                        input_tokens: own_counts.iter().sum::<usize>() as u64,
                        output_tokens: 0,
                    })
                })
                .collect::<Vec<_>>()
        })
        .await;
        shaped.unwrap_or_else(|_| {
            let failed = RecordError {
                code: 500,
                message: "The embedding task failed.".into(),
            };
            (0..inputs.len()).map(|_| Err(failed.clone())).collect()
        })
    }
}

impl Invoker for EngineInvoker {
    fn chunk_size(&self, model_id: &str) -> usize {
        match self.catalog.resolve(model_id) {
            Ok(entry) if entry.format.is_embedding() => EMBED_CHUNK,
            _ => self.text_parallel,
        }
    }

    async fn invoke_many(
        &self,
        model_id: &str,
        kind: InvocationType,
        inputs: Vec<Value>,
    ) -> Vec<Result<Invoked, RecordError>> {
        let (entry, model, vision) = match self.model(model_id).await {
            Ok(m) => m,
            Err(e) => {
                let e = record_error(e);
                return inputs.iter().map(|_| Err(e.clone())).collect();
            }
        };
        match (&model, kind) {
            (Loaded::Embed(embedder), InvocationType::InvokeModel) => {
                self.run_embeddings(&entry, embedder, vision, &inputs).await
            }
            _ => {
                join_all(inputs.iter().map(|input| async {
                    self.run_text(&entry, &model, vision, kind, input)
                        .await
                        .map_err(record_error)
                }))
                .await
            }
        }
    }
}
