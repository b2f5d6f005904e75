//! The local models this server runs, and their loading state. The server
//! answers while models load; a request for one still loading gets
//! ModelNotReadyException, which botocore retries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use basalt_catalog::{Catalog, LocalModel, LocalModelKind};
use basalt_engine::{EmbeddingModel, EmbeddingModelConfig, TextModel, TextModelConfig};
use basalt_proto::{BedrockError, ErrorCode};

#[derive(Clone)]
pub enum Loaded {
    Text(TextModel),
    Embed(EmbeddingModel),
}

#[derive(Clone)]
enum Slot {
    Loading,
    Ready(Loaded),
    Failed(String),
}

/// How models run on this machine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub models_dir: PathBuf,
    pub threads: i32,
    /// Requests that may wait per model before ThrottlingException.
    pub max_queue: usize,
    pub batch_slots: usize,
    pub kv_cache_tokens: u32,
    pub prompt_cache_bytes: u64,
}

#[derive(Clone, Default)]
pub struct LoadedModels {
    slots: Arc<RwLock<HashMap<String, Slot>>>,
}

impl LoadedModels {
    /// Starts loading every local model the catalog uses, each on its own blocking thread.
    pub fn start_loading(catalog: &Catalog, settings: &EngineSettings) -> Self {
        let this = Self::default();
        for (name, spec) in catalog.local_models() {
            if let Ok(mut slots) = this.slots.write() {
                slots.insert(name.clone(), Slot::Loading);
            }
            let (this2, name, spec, settings) =
                (this.clone(), name.clone(), spec.clone(), settings.clone());
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let slot = match load(&spec, &settings) {
                    Ok(model) => {
                        tracing::info!(model = %name, seconds = started.elapsed().as_secs_f32(), "model loaded");
                        Slot::Ready(model)
                    }
                    Err(e) => {
                        tracing::error!(model = %name, error = %e, "model failed to load");
                        Slot::Failed(e)
                    }
                };
                if let Ok(mut slots) = this2.slots.write() {
                    slots.insert(name, slot);
                }
            });
        }
        this
    }

    /// True once every named model has finished loading successfully.
    pub fn all_ready<'a>(&self, mut names: impl Iterator<Item = &'a String>) -> bool {
        self.slots
            .read()
            .map(|s| names.all(|n| matches!(s.get(n), Some(Slot::Ready(_)))))
            .unwrap_or(false)
    }

    /// Names of models that failed, with the reason.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.slots
            .read()
            .map(|s| {
                s.iter()
                    .filter_map(|(k, v)| match v {
                        Slot::Failed(e) => Some((k.clone(), e.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Result<Loaded, BedrockError> {
        let slots = self
            .slots
            .read()
            .map_err(|_| BedrockError::internal("model table lock poisoned"))?;
        match slots.get(name) {
            Some(Slot::Ready(m)) => Ok(m.clone()),
            Some(Slot::Loading) => Err(BedrockError::new(
                ErrorCode::ModelNotReady,
                "The model is still loading. Try your request again shortly.",
            )),
            Some(Slot::Failed(reason)) => Err(BedrockError::new(
                ErrorCode::ServiceUnavailable,
                format!("The local model {name} could not be loaded: {reason}. Run `basalt models fetch` and restart."),
            )),
            None => Err(BedrockError::new(
                ErrorCode::ServiceUnavailable,
                format!("The catalog names local model {name}, which this server does not run."),
            )),
        }
    }
}

fn resolve_path(models_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        models_dir.join(p)
    }
}

fn load(spec: &LocalModel, settings: &EngineSettings) -> Result<Loaded, String> {
    let path = resolve_path(&settings.models_dir, &spec.path);
    match spec.kind {
        LocalModelKind::Gguf => TextModel::load(&TextModelConfig {
            path,
            context_window: spec.context_window,
            threads: settings.threads,
            max_queue: settings.max_queue,
            batch_slots: settings.batch_slots,
            kv_cache_tokens: settings.kv_cache_tokens,
            prompt_cache_bytes: settings.prompt_cache_bytes,
        })
        .map(Loaded::Text)
        .map_err(|e| e.to_string()),
        LocalModelKind::Bert => EmbeddingModel::load(&EmbeddingModelConfig {
            dir: path,
            max_tokens: spec.max_tokens,
            max_queue: settings.max_queue,
        })
        .map(Loaded::Embed)
        .map_err(|e| e.to_string()),
    }
}
