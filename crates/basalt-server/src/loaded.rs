//! The local models this server runs, and their loading state. The server
//! answers while models load; a request for one still loading gets
//! ModelNotReadyException, which botocore retries.
//!
//! Models may also load lazily (on the first request that needs one) and be
//! unloaded after an idle period. A request for an unloaded model starts the
//! load and gets ModelNotReadyException; a retry once it is loaded succeeds.
//! Models that provisioned throughput serves are pinned: never unloaded. The
//! decode slots provisioned throughput reserves are kept here per model, apart
//! from the loaded model, so they apply from its first load.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use basalt_catalog::{Catalog, LocalModel, LocalModelKind};
use basalt_engine::{
    EmbeddingModel, EmbeddingModelConfig, ImageModel, ImageModelConfig, Reservations, TextModel,
    TextModelConfig,
};
use basalt_proto::{BedrockError, ErrorCode};

#[derive(Clone)]
pub enum Loaded {
    Text(TextModel),
    Embed(EmbeddingModel),
    Image(ImageModel),
}

#[derive(Clone)]
enum Slot {
    /// Not resident; the next request for it starts loading it.
    Unloaded,
    Loading,
    Ready(Loaded, Arc<RwLock<Instant>>),
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
    /// Load each model on the first request that needs it, not at start.
    pub lazy_load: bool,
    /// Unload a model nobody has used for this long (pinned models excepted).
    pub idle_unload: Option<Duration>,
}

/// How long a freshly loaded model is kept before idle time starts counting: the
/// request that asked for it is coming back (the seed's client waits 5 s; botocore's
/// backoff can wait longer), and must not find it unloaded again.
const LOAD_GRACE: Duration = Duration::from_secs(30);

/// What loading a model needs: the catalog (for the spec, imported models included) and
/// the engine settings.
struct Loader {
    catalog: Catalog,
    settings: EngineSettings,
}

#[derive(Clone, Default)]
pub struct LoadedModels {
    slots: Arc<RwLock<HashMap<String, Slot>>>,
    /// Absent in tests that run without models: nothing can be (re)loaded then.
    loader: Option<Arc<Loader>>,
    pinned: Arc<RwLock<HashSet<String>>>,
    reservations: Arc<RwLock<HashMap<String, Arc<Reservations>>>>,
}

impl LoadedModels {
    /// Starts loading every local model the catalog uses (unless loading is lazy), each
    /// on its own blocking thread, and the idle reaper when models unload when idle.
    pub fn start_loading(catalog: &Catalog, settings: &EngineSettings) -> Self {
        let this = Self {
            loader: Some(Arc::new(Loader {
                catalog: catalog.clone(),
                settings: settings.clone(),
            })),
            ..Self::default()
        };
        for name in catalog.local_model_names() {
            this.add(&name, !settings.lazy_load);
        }
        if let Some(idle) = settings.idle_unload {
            let this = this.clone();
            tokio::spawn(async move {
                let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
                loop {
                    tokio::time::sleep(tick).await;
                    this.unload_idle(idle);
                }
            });
        }
        this
    }

    /// Makes a local model known (an imported one joins while serving), loading it now
    /// when `load` is set.
    pub fn add(&self, name: &str, load: bool) {
        if let Ok(mut slots) = self.slots.write() {
            slots.insert(name.to_string(), Slot::Unloaded);
        }
        if load {
            self.begin_load(name);
        }
    }

    /// Forgets a local model (a deleted import); requests holding it finish first.
    pub fn remove(&self, name: &str) {
        if let Ok(mut slots) = self.slots.write() {
            slots.remove(name);
        }
    }

    /// Moves an unloaded model to Loading and loads it on a blocking thread. Returns
    /// false when it was not unloaded (already loading, loaded or failed).
    fn begin_load(&self, name: &str) -> bool {
        let Some(loader) = self.loader.clone() else {
            return false;
        };
        let Some(spec) = loader.catalog.local_model(name) else {
            return false;
        };
        {
            let Ok(mut slots) = self.slots.write() else {
                return false;
            };
            if !matches!(slots.get(name), Some(Slot::Unloaded)) {
                return false;
            }
            slots.insert(name.to_string(), Slot::Loading);
        }
        let reservations = self.reservations(name);
        let (this, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let slot = match load(&spec, &loader.settings, reservations) {
                Ok(model) => {
                    tracing::info!(model = %name, seconds = started.elapsed().as_secs_f32(), "model loaded");
                    // A future "last use": idle time counts from the first real use,
                    // or from the end of the grace period.
                    let kept = Instant::now() + LOAD_GRACE;
                    Slot::Ready(model, Arc::new(RwLock::new(kept)))
                }
                Err(e) => {
                    tracing::error!(model = %name, error = %e, "model failed to load");
                    Slot::Failed(e)
                }
            };
            if let Ok(mut slots) = this.slots.write() {
                slots.insert(name, slot);
            }
        });
        true
    }

    /// Unloads every model idle for `idle` or longer that is neither pinned nor busy.
    /// Dropping the table's handle stops a text model's worker once requests still
    /// holding it finish, which frees its weights and KV cache.
    fn unload_idle(&self, idle: Duration) {
        let pinned = self.pinned.read().map(|p| p.clone()).unwrap_or_default();
        let Ok(mut slots) = self.slots.write() else {
            return;
        };
        for (name, slot) in slots.iter_mut() {
            let Slot::Ready(model, used) = slot else {
                continue;
            };
            // A last use in the future (a fresh load) reads as no time elapsed.
            let quiet = used
                .read()
                .map(|t| Instant::now().saturating_duration_since(*t) >= idle)
                .unwrap_or(false);
            let busy = match model {
                Loaded::Text(m) => {
                    let load = m.load_now();
                    load.running + load.queued > 0
                }
                Loaded::Embed(_) | Loaded::Image(_) => false,
            };
            if quiet && !busy && !pinned.contains(name) {
                tracing::info!(model = %name, idle_seconds = idle.as_secs_f32(), "model unloaded after being idle");
                *slot = Slot::Unloaded;
            }
        }
    }

    /// Keeps these local models loaded (provisioned throughput serves them), loading
    /// any that is not resident now.
    pub fn set_pinned(&self, names: impl IntoIterator<Item = String>) {
        let names: HashSet<String> = names.into_iter().collect();
        for name in &names {
            self.begin_load(name);
        }
        if let Ok(mut pinned) = self.pinned.write() {
            *pinned = names;
        }
    }

    /// The decode slots reserved on a local text model (the table exists before the
    /// model loads, and stays across unloads).
    pub fn reservations(&self, name: &str) -> Option<Arc<Reservations>> {
        let slots = self.loader.as_ref()?.settings.batch_slots;
        let mut table = self.reservations.write().ok()?;
        Some(Arc::clone(
            table
                .entry(name.to_string())
                .or_insert_with(|| Reservations::new(slots)),
        ))
    }

    /// Whether a local model is loaded now (without loading it, or counting as a use).
    pub fn peek(&self, name: &str) -> Option<Loaded> {
        match self.slots.read().ok()?.get(name) {
            Some(Slot::Ready(m, _)) => Some(m.clone()),
            _ => None,
        }
    }

    /// True when no named model is still loading or missing: each is loaded, or not
    /// resident on purpose (lazy loading, idle unloading) and loads on demand.
    pub fn all_ready<'a>(&self, mut names: impl Iterator<Item = &'a String>) -> bool {
        self.slots
            .read()
            .map(|s| names.all(|n| matches!(s.get(n), Some(Slot::Ready(..) | Slot::Unloaded))))
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

    /// The models directory; `None` in tests that run without models.
    pub fn models_dir(&self) -> Option<&Path> {
        self.loader
            .as_ref()
            .map(|l| l.settings.models_dir.as_path())
    }

    pub fn get(&self, name: &str) -> Result<Loaded, BedrockError> {
        let slots = self
            .slots
            .read()
            .map_err(|_| BedrockError::internal("model table lock poisoned"))?;
        match slots.get(name) {
            Some(Slot::Ready(m, used)) => {
                if let Ok(mut t) = used.write() {
                    *t = Instant::now();
                }
                Ok(m.clone())
            }
            Some(Slot::Unloaded) => {
                drop(slots);
                self.begin_load(name);
                Err(BedrockError::new(
                    ErrorCode::ModelNotReady,
                    "The model is not loaded (it is loaded on demand, or was unloaded after being idle) and is loading now. Try your request again shortly.",
                ))
            }
            Some(Slot::Loading) => Err(BedrockError::new(
                ErrorCode::ModelNotReady,
                "The model is still loading. Try your request again shortly.",
            )),
            Some(Slot::Failed(reason)) => Err(BedrockError::new(
                ErrorCode::ServiceUnavailable,
                format!("The local model {name} could not be loaded: {reason}. Run `basalt models fetch` and restart."),
            )),
            None => {
                drop(slots);
                // An import this table has not seen (made beside the running server).
                let known = self
                    .loader
                    .as_ref()
                    .is_some_and(|l| l.catalog.local_model(name).is_some());
                if !known {
                    return Err(BedrockError::new(
                        ErrorCode::ServiceUnavailable,
                        format!("The catalog names local model {name}, which this server does not run."),
                    ));
                }
                self.add(name, true);
                Err(BedrockError::new(
                    ErrorCode::ModelNotReady,
                    "The model was just imported and is loading now. Try your request again shortly.",
                ))
            }
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

fn load(
    spec: &LocalModel,
    settings: &EngineSettings,
    reservations: Option<Arc<Reservations>>,
) -> Result<Loaded, String> {
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
            reservations,
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
        LocalModelKind::Diffusion => ImageModel::load(&ImageModelConfig {
            dir: path,
            max_queue: settings.max_queue,
        })
        .map(Loaded::Image)
        .map_err(|e| e.to_string()),
    }
}
