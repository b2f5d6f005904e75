//! Guardrails: the control-plane operations (CreateGuardrail and friends, kept in
//! the data directory's database), ApplyGuardrail, and the lookup that the runtime
//! operations use to evaluate a guardrail version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use basalt_catalog::LocalModelKind;
use basalt_engine::EmbeddingModel;
use basalt_guardrails::assess::{Compiled, Content, OutputScope, Qualifier};
use basalt_guardrails::config::{Definition, GuardrailRequest, Source};
use basalt_guardrails::screen::{Screened, StaticVectors, STATIC_RECIPE};
use basalt_guardrails::{Embedder, GuardrailError};
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_store::{Key, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::auth::Caller;
use crate::edge::{engine_error, query_map, ApiError, Label};
use crate::idempotency::Token;
use crate::listing::ListQuery;
use crate::loaded::Loaded;
use crate::runtime::json_body;
use crate::AppState;

const KIND: &str = "guardrail";
const DRAFT: &str = "DRAFT";
/// Most text one evaluation reads (characters over all content blocks).
pub const MAX_GUARDED_CHARS: usize = 100_000;
/// Most content blocks in one ApplyGuardrail request.
const MAX_CONTENT_BLOCKS: usize = 100;
/// Texts per engine call: the engine makes its own forward passes, and this bounds
/// what one call holds.
const EMBED_CALL: usize = 256;

/// One stored guardrail version.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    arn: String,
    #[serde(flatten)]
    definition: Definition,
    created_at: String,
    updated_at: String,
    /// DRAFT only: the number the next CreateGuardrailVersion takes.
    #[serde(default = "first_version")]
    next_version: u32,
}

fn first_version() -> u32 {
    1
}

/// Most compiled guardrail versions held at once. Each keeps up to 8 MiB of vectors of
/// the texts it has checked, so the least recently used is dropped past this.
const MAX_COMPILED: usize = 64;

/// Compiled guardrail versions by (id, version), each with the `updatedAt` it was
/// compiled from (an update to DRAFT recompiles it) and when it was last used.
struct CompiledCache<T> {
    entries: HashMap<(String, String), CompiledEntry<T>>,
    capacity: usize,
    clock: u64,
}

struct CompiledEntry<T> {
    updated_at: String,
    compiled: T,
    used: u64,
}

impl<T: Clone> CompiledCache<T> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Drops every version of guardrail `id` (it was deleted).
    fn forget(&mut self, id: &str) {
        self.entries.retain(|(cached, _), _| cached != id);
    }

    /// The version compiled from `updated_at`, compiling it on a miss.
    fn get_or_compile<E>(
        &mut self,
        key: (String, String),
        updated_at: &str,
        compile: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.clock += 1;
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.updated_at == updated_at {
                entry.used = self.clock;
                return Ok(entry.compiled.clone());
            }
        }
        let compiled = compile()?;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            key,
            CompiledEntry {
                updated_at: updated_at.to_string(),
                compiled: compiled.clone(),
                used: self.clock,
            },
        );
        Ok(compiled)
    }
}

/// Guardrail state shared by the control plane and the runtime. A guardrail belongs
/// to the account that created it (the one its ARN names); to every other account it
/// does not exist.
pub struct Guardrails {
    store: Arc<Store>,
    /// The server's account: the owner of a stored guardrail whose ARN names none.
    account: String,
    compiled: Mutex<CompiledCache<Arc<Compiled>>>,
}

/// A guardrail version named by a request, ready to evaluate.
#[derive(Clone)]
pub struct Resolved {
    pub id: String,
    pub version: String,
    pub arn: String,
    pub guardrail: Arc<Compiled>,
}

fn store_error(e: StoreError) -> BedrockError {
    BedrockError::internal(format!("The guardrail store failed: {e}"))
}

fn guardrail_error(e: GuardrailError) -> BedrockError {
    match e {
        GuardrailError::Invalid(m) => BedrockError::validation(m),
        GuardrailError::TooManyTags => BedrockError::validation(e.to_string()),
        GuardrailError::Embedding(m) => BedrockError::new(
            ErrorCode::ServiceUnavailable,
            format!("The guardrail could not be evaluated: {m}"),
        ),
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn new_id() -> String {
    const SET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| SET[rng.random_range(0..SET.len())] as char)
        .collect()
}

fn not_found(identifier: &str, version: Option<&str>) -> BedrockError {
    match version {
        Some(v) => BedrockError::not_found(format!(
            "The guardrail {identifier} with version {v} was not found. Check the identifier and version and try again."
        )),
        None => BedrockError::not_found(format!(
            "The guardrail {identifier} was not found. Check the identifier and try again."
        )),
    }
}

/// The ID in a guardrail identifier: the ID itself or a guardrail ARN.
fn parse_identifier(identifier: &str) -> Result<String, BedrockError> {
    let id = match identifier.rsplit_once(":guardrail/") {
        Some((prefix, id)) if prefix.starts_with("arn:aws") => id,
        _ => identifier,
    };
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(BedrockError::constraint(
            "guardrailIdentifier",
            identifier,
            "Member must satisfy regular expression pattern: (([a-z0-9]+)|(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+))",
        ));
    }
    Ok(id.to_string())
}

fn check_version(version: &str, allow_draft: bool) -> Result<(), BedrockError> {
    let numbered = !version.is_empty()
        && version.len() <= 8
        && version.bytes().all(|b| b.is_ascii_digit())
        && !version.starts_with('0');
    if numbered || (allow_draft && version == DRAFT) {
        return Ok(());
    }
    let pattern = if allow_draft {
        "(([1-9][0-9]{0,7})|(DRAFT))"
    } else {
        "[1-9][0-9]{0,7}"
    };
    Err(BedrockError::constraint(
        "guardrailVersion",
        version,
        &format!("Member must satisfy regular expression pattern: {pattern}"),
    ))
}

impl Guardrails {
    pub fn new(store: Arc<Store>, account: String) -> Self {
        Self {
            store,
            account,
            compiled: Mutex::new(CompiledCache::new(MAX_COMPILED)),
        }
    }

    /// Whether `account` owns a stored guardrail.
    fn owns(&self, account: &str, doc: &Stored) -> bool {
        crate::authorization::arn_account(&doc.arn).unwrap_or(&self.account) == account
    }

    /// A stored version of one of `account`'s guardrails.
    fn version(
        &self,
        account: &str,
        id: &str,
        version: &str,
    ) -> Result<Option<Stored>, BedrockError> {
        let doc: Option<Stored> = self
            .store
            .get(&Key {
                kind: KIND,
                id,
                version,
            })
            .map_err(store_error)?;
        Ok(doc.filter(|d| self.owns(account, d)))
    }

    fn draft(&self, account: &str, id: &str) -> Result<Option<Stored>, BedrockError> {
        self.version(account, id, DRAFT)
    }

    /// The ID of `account`'s guardrail that an identifier names (another account's ARN
    /// names none of the caller's), or ResourceNotFound.
    fn owned_id(&self, account: &str, identifier: &str) -> Result<String, BedrockError> {
        let id = parse_identifier(identifier)?;
        if crate::authorization::other_account(identifier, account)
            || self.draft(account, &id)?.is_none()
        {
            return Err(not_found(identifier, None));
        }
        Ok(id)
    }

    /// The stored version an identifier and version name, or ResourceNotFound.
    fn existing(
        &self,
        account: &str,
        identifier: &str,
        version: &str,
    ) -> Result<(String, Stored), BedrockError> {
        let id = parse_identifier(identifier)?;
        check_version(version, true)?;
        let stored = if crate::authorization::other_account(identifier, account) {
            None
        } else {
            self.version(account, &id, version)?
        };
        let stored = stored.ok_or_else(|| not_found(identifier, Some(version)))?;
        Ok((id, stored))
    }

    fn put(&self, id: &str, version: &str, doc: &Stored) -> Result<(), BedrockError> {
        self.store
            .put(
                &Key {
                    kind: KIND,
                    id,
                    version,
                },
                doc,
            )
            .map_err(store_error)
    }

    /// The DRAFT versions of `account`'s guardrails.
    fn drafts(&self, account: &str) -> Result<Vec<(String, Stored)>, BedrockError> {
        let drafts: Vec<(String, Stored)> = self.store.list(KIND, DRAFT).map_err(store_error)?;
        Ok(drafts
            .into_iter()
            .filter(|(_, s)| self.owns(account, s))
            .collect())
    }

    /// Names are unique within an account.
    fn name_taken(
        &self,
        account: &str,
        name: &str,
        except: Option<&str>,
    ) -> Result<bool, BedrockError> {
        Ok(self
            .drafts(account)?
            .iter()
            .any(|(id, s)| s.definition.name == name && Some(id.as_str()) != except))
    }

    /// The guardrail version of the caller's `account` that a runtime request names.
    /// Both parts are required.
    pub fn resolve(
        &self,
        account: &str,
        identifier: &str,
        version: Option<&str>,
    ) -> Result<Resolved, BedrockError> {
        let Some(version) = version.filter(|v| !v.is_empty()) else {
            return Err(BedrockError::validation(
                "Guardrail version is required when a guardrail identifier is given: set guardrailVersion to DRAFT or a version number.",
            ));
        };
        let (id, stored) = self.existing(account, identifier, version)?;
        let key = (id.clone(), version.to_string());
        let mut cache = self
            .compiled
            .lock()
            .map_err(|_| BedrockError::internal("guardrail cache lock poisoned"))?;
        let guardrail = cache.get_or_compile(key, &stored.updated_at, || {
            Compiled::new(stored.definition)
                .map(Arc::new)
                .map_err(guardrail_error)
        })?;
        Ok(Resolved {
            id,
            version: version.to_string(),
            arn: stored.arn,
            guardrail,
        })
    }
}

/// Sentence embeddings from an embedding model, a bounded number of texts per call.
pub struct BatchedEmbedder(pub EmbeddingModel);

impl Embedder for BatchedEmbedder {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_CALL) {
            let embedded = self
                .0
                .embed(batch.to_vec())
                .await
                .map_err(|e| engine_error(e).message)?;
            out.extend(embedded.vectors);
        }
        Ok(out)
    }
}

/// A model with its screen (benchmarks and calibration): the cascade the server runs.
pub struct ScreenedEmbedder<'a> {
    pub model: &'a BatchedEmbedder,
    pub screen: &'a StaticScreen,
}

impl Embedder for ScreenedEmbedder<'_> {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        self.model.embed(texts).await
    }

    fn screen(&self, texts: &[&str]) -> Option<Screened> {
        self.screen.screen(texts)
    }
}

/// The server's embedding model, looked up only when a policy needs vectors, so that
/// lexical policies work while it is still loading.
struct ModelEmbedder<'a>(&'a AppState);

impl Embedder for ModelEmbedder<'_> {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let state = self.0;
        let name = state
            .catalog
            .local_models()
            .iter()
            .find(|(_, m)| m.kind == LocalModelKind::Bert)
            .map(|(n, _)| n.clone())
            .ok_or("no embedding model is configured")?;
        let Loaded::Embed(model) = state.models.get(&name).map_err(|e| e.message)? else {
            return Err(format!("the local model {name} is not an embedding model"));
        };
        BatchedEmbedder(model).embed(texts).await
    }

    fn screen(&self, texts: &[&str]) -> Option<Screened> {
        screen_for(self.0)?.screen(texts)
    }
}

/// The screen's static token vectors, and the tokenizer that maps text onto them.
pub struct StaticScreen {
    key: String,
    tokenizer: Tokenizer,
    table: StaticVectors,
    centre: Vec<f32>,
}

/// Static vector tables live here, under the models directory, by model digest.
const STATIC_DIR: &str = "static-vectors";
/// Vocabulary tokens per forward pass while building a table.
const STATIC_BATCH: usize = 256;
/// Most bytes a screened text may have; the guarded text is bounded already.
const MAX_SCREEN_BYTES: usize = MAX_GUARDED_CHARS * 4;

impl StaticScreen {
    /// Loads the table for the model in `model_dir` from `<models_dir>/static-vectors/`,
    /// or builds it (each vocabulary token through `model` once, about a minute on two
    /// cores) and writes it there. Blocking.
    pub fn load_or_build(
        model: &EmbeddingModel,
        model_dir: &Path,
        models_dir: &Path,
    ) -> Result<Self, String> {
        let weights = model_dir.join("model.safetensors");
        let digest = sha256_file(&weights)?;
        let key = format!("{digest}-{STATIC_RECIPE}");
        let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(|e| format!("{}: {e}", model_dir.join("tokenizer.json").display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("tokenizer truncation: {e}"))?;
        let path = models_dir.join(STATIC_DIR).join(format!("{key}.bin"));
        let table = match std::fs::read(&path) {
            Ok(bytes) => StaticVectors::from_bytes(&bytes)
                .map_err(|e| format!("{}: {e} (delete it to rebuild)", path.display()))?,
            Err(_) => {
                let table = build_static(model, &tokenizer)?;
                let dir = models_dir.join(STATIC_DIR);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                // Written whole, then renamed: a reader never sees half a table.
                let tmp = dir.join(format!("{key}.tmp{}", std::process::id()));
                std::fs::write(&tmp, table.to_bytes())
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                table
            }
        };
        if table.len() != tokenizer.get_vocab_size(true) {
            return Err(format!(
                "{}: {} rows for a vocabulary of {} (delete it to rebuild)",
                path.display(),
                table.len(),
                tokenizer.get_vocab_size(true)
            ));
        }
        Ok(Self {
            key,
            tokenizer,
            centre: table.centre(),
            table,
        })
    }

    /// `<model sha256>-<recipe>`, as the calibration records it.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Token vectors in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The screen vectors of `texts`; `None` if the tokenizer fails on one.
    pub fn screen(&self, texts: &[&str]) -> Option<Screened> {
        let vectors = texts
            .iter()
            .map(|t| {
                let t = t.get(..t.len().min(MAX_SCREEN_BYTES)).unwrap_or(t);
                self.tokenizer
                    .encode(t, false)
                    .ok()
                    .map(|e| self.table.pool(e.get_ids(), &self.centre))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Screened {
            key: self.key.clone(),
            vectors,
        })
    }
}

/// Each vocabulary token's vector: the token's text (without the `##` of a word piece)
/// embedded alone, as a unit vector. Special and unused tokens get zeros, so that
/// pooling leaves them out.
fn build_static(model: &EmbeddingModel, tokenizer: &Tokenizer) -> Result<StaticVectors, String> {
    let n = tokenizer.get_vocab_size(true);
    let texts: Vec<Option<String>> = (0..n as u32)
        .map(|id| {
            tokenizer
                .id_to_token(id)
                .filter(|t| !(t.starts_with('[') && t.ends_with(']')))
                .map(|t| t.strip_prefix("##").unwrap_or(&t).to_string())
                .filter(|t| !t.is_empty())
        })
        .collect();
    let dim = model.dimensions();
    let mut rows = vec![0.0f32; n * dim];
    let wanted: Vec<usize> = (0..n).filter(|&i| texts[i].is_some()).collect();
    for chunk in wanted.chunks(STATIC_BATCH) {
        let batch: Vec<String> = chunk.iter().filter_map(|&i| texts[i].clone()).collect();
        let got = model.embed_blocking(&batch).map_err(|e| e.to_string())?;
        if got.vectors.len() != chunk.len() {
            return Err("the embedding model returned too few vectors".into());
        }
        for (&i, v) in chunk.iter().zip(got.vectors) {
            let v = basalt_guardrails::normalise(v);
            if v.len() == dim {
                rows[i * dim..(i + 1) * dim].copy_from_slice(&v);
            }
        }
    }
    StaticVectors::new(dim, rows)
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

enum ScreenSlot {
    Idle,
    Building,
    Ready(Arc<StaticScreen>),
    Failed,
}

/// The server's one screen (it has one embedding model for guardrails).
static SCREEN: Mutex<ScreenSlot> = Mutex::new(ScreenSlot::Idle);

/// The screen, once ready. The first call starts loading or building it on a thread of
/// its own; until it is ready (or if it fails) every window goes to the model.
fn screen_for(state: &AppState) -> Option<Arc<StaticScreen>> {
    // Without a calibrated screen there is nothing to load the table for.
    basalt_guardrails::calibration::Calibration::embedded()?
        .screen
        .as_ref()?;
    let mut slot = SCREEN.lock().unwrap_or_else(|e| e.into_inner());
    match &*slot {
        ScreenSlot::Ready(s) => return Some(Arc::clone(s)),
        ScreenSlot::Building | ScreenSlot::Failed => return None,
        ScreenSlot::Idle => {}
    }
    let models_dir = state.models.models_dir()?.to_path_buf();
    let (name, spec) = state
        .catalog
        .local_models()
        .iter()
        .find(|(_, m)| m.kind == LocalModelKind::Bert)?;
    let Ok(Loaded::Embed(model)) = state.models.get(name) else {
        return None;
    };
    let model_dir = if Path::new(&spec.path).is_absolute() {
        PathBuf::from(&spec.path)
    } else {
        models_dir.join(&spec.path)
    };
    *slot = ScreenSlot::Building;
    let spawned = std::thread::Builder::new()
        .name("guardrail-screen".into())
        .spawn(move || {
            let next = match StaticScreen::load_or_build(&model, &model_dir, &models_dir) {
                Ok(s) => {
                    tracing::info!("guardrail screen ready ({} token vectors)", s.table.len());
                    ScreenSlot::Ready(Arc::new(s))
                }
                Err(e) => {
                    tracing::warn!(
                        "guardrail screen unavailable, the model sees every window: {e}"
                    );
                    ScreenSlot::Failed
                }
            };
            *SCREEN.lock().unwrap_or_else(|e| e.into_inner()) = next;
        });
    if spawned.is_err() {
        *slot = ScreenSlot::Failed;
    }
    None
}

impl Resolved {
    /// Evaluates texts with this guardrail version.
    pub async fn evaluate(
        &self,
        state: &AppState,
        source: Source,
        contents: &[Content],
        scope: OutputScope,
    ) -> Result<basalt_guardrails::Evaluation, BedrockError> {
        let chars: usize = contents.iter().map(|c| c.text.len()).sum();
        if chars > MAX_GUARDED_CHARS {
            return Err(BedrockError::validation(format!(
                "The guarded text is {chars} bytes; a guardrail evaluates at most {MAX_GUARDED_CHARS}."
            )));
        }
        self.guardrail
            .evaluate(source, contents, &ModelEmbedder(state), scope)
            .await
            .map_err(guardrail_error)
    }
}

fn accepted(body: Value) -> Response {
    let mut resp = json_body(&body);
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

fn arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:bedrock:{region}:{account}:guardrail/{id}")
}

/// The guardrail service, which needs the data directory's database.
pub(crate) fn service(state: &AppState) -> Result<&Guardrails, BedrockError> {
    state.guardrails.as_ref().ok_or_else(|| {
        BedrockError::new(
            ErrorCode::ServiceUnavailable,
            "Guardrails need a data directory; this server was started without one.",
        )
    })
}

pub async fn create_guardrail(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let g = service(&state)?;
    let req: GuardrailRequest = from_json(&body)?;
    let client_token = req.client_request_token.clone();
    let token = Token::new(
        &g.store,
        &caller.account,
        "CreateGuardrail",
        client_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay(ErrorCode::Conflict)? {
        return Ok(accepted(response));
    }
    let definition = req.validate().map_err(guardrail_error)?;
    if g.name_taken(&caller.account, &definition.name, None)? {
        return Err(BedrockError::new(
            ErrorCode::Conflict,
            format!("A guardrail named {} already exists.", definition.name),
        )
        .into());
    }
    let id = new_id();
    let created = now();
    let doc = Stored {
        arn: arn(&caller.region, &caller.account, &id),
        definition,
        created_at: created.clone(),
        updated_at: created.clone(),
        next_version: 1,
    };
    g.put(&id, DRAFT, &doc)?;
    let response = json!({
        "guardrailId": id,
        "guardrailArn": doc.arn,
        "version": DRAFT,
        "createdAt": created,
    });
    token.remember(&response)?;
    Ok(accepted(response))
}

fn get_body(id: &str, version: &str, doc: &Stored) -> Value {
    let mut body = serde_json::to_value(&doc.definition).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut body {
        map.insert("guardrailId".into(), json!(id));
        map.insert("guardrailArn".into(), json!(doc.arn));
        map.insert("version".into(), json!(version));
        map.insert("status".into(), json!("READY"));
        map.insert("createdAt".into(), json!(doc.created_at));
        map.insert("updatedAt".into(), json!(doc.updated_at));
    }
    body
}

pub async fn get_guardrail(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let g = service(&state)?;
    let query = query_map(query)?;
    let version = query.get("guardrailVersion").map_or(DRAFT, String::as_str);
    let (id, doc) = g.existing(&caller.account, &identifier, version)?;
    Ok(json_body(&get_body(&id, version, &doc)))
}

pub async fn list_guardrails(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let g = service(&state)?;
    let query = ListQuery::parse(query)?;
    let page = query.page(20)?;
    let rows: Vec<(String, String, Stored)> = match query.get("guardrailIdentifier") {
        Some(identifier) => {
            let id = parse_identifier(identifier)?;
            let versions: Vec<(String, Stored)> =
                if crate::authorization::other_account(identifier, &caller.account) {
                    Vec::new()
                } else {
                    g.store.versions(KIND, &id).map_err(store_error)?
                };
            let versions: Vec<(String, Stored)> = versions
                .into_iter()
                .filter(|(_, s)| g.owns(&caller.account, s))
                .collect();
            if versions.is_empty() {
                return Err(not_found(identifier, None).into());
            }
            versions
                .into_iter()
                .map(|(v, s)| (id.clone(), v, s))
                .collect()
        }
        None => g
            .drafts(&caller.account)?
            .into_iter()
            .map(|(id, s)| (id, DRAFT.to_string(), s))
            .collect(),
    };
    let body = page.body("guardrails", &rows, |(id, version, s)| {
        let mut summary = json!({
            "id": id,
            "arn": s.arn,
            "status": "READY",
            "name": s.definition.name,
            "version": version,
            "createdAt": s.created_at,
            "updatedAt": s.updated_at,
        });
        if let Some(d) = &s.definition.description {
            summary["description"] = json!(d);
        }
        summary
    });
    Ok(json_body(&body))
}

pub async fn update_guardrail(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
    body: Bytes,
) -> Result<Response, ApiError> {
    let g = service(&state)?;
    let id = g.owned_id(&caller.account, &identifier)?;
    let mut doc = g
        .draft(&caller.account, &id)?
        .ok_or_else(|| not_found(&identifier, None))?;
    let req: GuardrailRequest = from_json(&body)?;
    let definition = req.validate().map_err(guardrail_error)?;
    if g.name_taken(&caller.account, &definition.name, Some(&id))? {
        return Err(BedrockError::new(
            ErrorCode::Conflict,
            format!("A guardrail named {} already exists.", definition.name),
        )
        .into());
    }
    doc.definition = definition;
    doc.updated_at = now();
    g.put(&id, DRAFT, &doc)?;
    Ok(accepted(json!({
        "guardrailId": id,
        "guardrailArn": doc.arn,
        "version": DRAFT,
        "updatedAt": doc.updated_at,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateVersionRequest {
    description: Option<String>,
    client_request_token: Option<String>,
}

pub async fn create_guardrail_version(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
    body: Bytes,
) -> Result<Response, ApiError> {
    let g = service(&state)?;
    let id = g.owned_id(&caller.account, &identifier)?;
    let req: CreateVersionRequest = if body.is_empty() {
        CreateVersionRequest {
            description: None,
            client_request_token: None,
        }
    } else {
        from_json(&body)?
    };
    if let Some(d) = &req.description {
        if d.is_empty() || d.chars().count() > 200 {
            return Err(BedrockError::constraint(
                "description",
                d,
                "Member must have length between 1 and 200",
            )
            .into());
        }
    }
    let operation = format!("CreateGuardrailVersion/{id}");
    // Tokens are the caller's account's (see idempotency).
    let scoped_token = req
        .client_request_token
        .as_deref()
        .map(|t| crate::idempotency::scoped(&caller.account, t));
    if let Some(t) = &scoped_token {
        if let Some((_, response)) = g
            .store
            .idempotent_response(&operation, t)
            .map_err(store_error)?
        {
            return Ok(accepted(response));
        }
    }
    let mut draft = g
        .draft(&caller.account, &id)?
        .ok_or_else(|| not_found(&identifier, None))?;
    let number = draft.next_version;
    let mut snapshot = draft.clone();
    if req.description.is_some() {
        snapshot.definition.description = req.description.clone();
    }
    snapshot.created_at = now();
    snapshot.updated_at = snapshot.created_at.clone();
    g.put(&id, &number.to_string(), &snapshot)?;
    draft.next_version = number + 1;
    g.put(&id, DRAFT, &draft)?;
    let response = json!({ "guardrailId": id, "version": number.to_string() });
    if let Some(t) = &scoped_token {
        g.store
            .remember_response(&operation, t, "", &response)
            .map_err(store_error)?;
    }
    Ok(accepted(response))
}

pub async fn delete_guardrail(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let g = service(&state)?;
    let query = query_map(query)?;
    if let Some(version) = query.get("guardrailVersion") {
        check_version(version, false)?;
    }
    // Another account's guardrail is answered as one that does not exist.
    let id = g.owned_id(&caller.account, &identifier).map_err(|e| {
        match query.get("guardrailVersion") {
            Some(v) if e.code == ErrorCode::ResourceNotFound => {
                not_found(&identifier, Some(v.as_str()))
            }
            _ => e,
        }
    })?;
    match query.get("guardrailVersion") {
        Some(version) => {
            let gone = g
                .store
                .delete(&Key {
                    kind: KIND,
                    id: &id,
                    version,
                })
                .map_err(store_error)?;
            if !gone {
                return Err(not_found(&identifier, Some(version)).into());
            }
        }
        None => {
            if g.store.delete_all(KIND, &id).map_err(store_error)? == 0 {
                return Err(not_found(&identifier, None).into());
            }
        }
    }
    if let Ok(mut cache) = g.compiled.lock() {
        cache.forget(&id);
    }
    Ok(accepted(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplyRequest {
    source: Option<String>,
    content: Option<Vec<Value>>,
    output_scope: Option<String>,
}

/// The ApplyGuardrail content blocks as evaluation input.
fn contents(blocks: &[Value]) -> Result<Vec<Content>, BedrockError> {
    if blocks.len() > MAX_CONTENT_BLOCKS {
        return Err(BedrockError::validation(format!(
            "content has {} blocks; at most {MAX_CONTENT_BLOCKS} are allowed.",
            blocks.len()
        )));
    }
    blocks
        .iter()
        .enumerate()
        .map(|(i, block)| {
            if block.get("image").is_some() {
                return Err(BedrockError::validation(format!(
                    "content.{i}.image: this server's guardrails evaluate text only; send the image's text, or omit it."
                )));
            }
            let text = block
                .get("text")
                .and_then(|t| t.get("text"))
                .and_then(Value::as_str)
                .ok_or_else(|| BedrockError::missing(&format!("content.{i}.text.text")))?;
            let qualifiers = block
                .get("text")
                .and_then(|t| t.get("qualifiers"))
                .and_then(Value::as_array)
                .map(|qs| {
                    qs.iter()
                        .map(|q| {
                            q.as_str().and_then(Qualifier::parse).ok_or_else(|| {
                                BedrockError::constraint(
                                    &format!("content.{i}.text.qualifiers"),
                                    q,
                                    "Member must satisfy enum value set: [grounding_source, query, guard_content]",
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            Ok(Content {
                text: text.to_string(),
                qualifiers,
            })
        })
        .collect()
}

pub fn parse_source(value: &str) -> Result<Source, BedrockError> {
    match value {
        "INPUT" => Ok(Source::Input),
        "OUTPUT" => Ok(Source::Output),
        other => Err(BedrockError::constraint(
            "source",
            other,
            "Member must satisfy enum value set: [INPUT, OUTPUT]",
        )),
    }
}

pub async fn apply_guardrail(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    path: Result<axum::extract::Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let g = service(&state)?;
    let axum::extract::Path((identifier, version)) = path.map_err(|e| {
        BedrockError::validation(format!("The request path is invalid: {}.", e.body_text()))
    })?;
    let req: ApplyRequest = from_json(&body)?;
    let source = parse_source(
        req.source
            .as_deref()
            .ok_or_else(|| BedrockError::missing("source"))?,
    )?;
    let blocks = req
        .content
        .ok_or_else(|| BedrockError::missing("content"))?;
    let scope = match req.output_scope.as_deref() {
        None | Some("INTERVENTIONS") => OutputScope::Interventions,
        Some("FULL") => OutputScope::Full,
        Some(other) => {
            return Err(BedrockError::constraint(
                "outputScope",
                other,
                "Member must satisfy enum value set: [INTERVENTIONS, FULL]",
            )
            .into())
        }
    };
    let contents = contents(&blocks)?;
    let resolved = g.resolve(&caller.account, &identifier, Some(&version))?;
    let evaluation = resolved.evaluate(&state, source, &contents, scope).await?;
    Ok(json_body(&evaluation.apply_guardrail_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_ids_or_guardrail_arns() {
        assert_eq!(parse_identifier("abc123").expect("id"), "abc123");
        assert_eq!(
            parse_identifier("arn:aws:bedrock:us-east-1:000000000000:guardrail/abc123")
                .expect("arn"),
            "abc123"
        );
        for bad in [
            "",
            "ABC",
            "a/b",
            "arn:aws:bedrock:us-east-1:0:guardrail/",
            "x:guardrail/ab",
        ] {
            let err = parse_identifier(bad).expect_err(bad);
            assert_eq!(err.code, ErrorCode::Validation, "{bad}");
        }
    }

    #[test]
    fn versions_follow_bedrocks_pattern() {
        for ok in ["DRAFT", "1", "12345678"] {
            check_version(ok, true).expect(ok);
        }
        for bad in ["0", "01", "123456789", "draft", "1.0", ""] {
            check_version(bad, true).expect_err(bad);
        }
        check_version("DRAFT", false).expect_err("DeleteGuardrail takes numbered versions only");
    }

    #[test]
    fn compiled_cache_recompiles_updates_and_drops_the_least_recently_used() {
        let mut cache = CompiledCache::new(2);
        let key = |id: &str| (id.to_string(), DRAFT.to_string());
        let mut compiles = 0;
        let mut get = |cache: &mut CompiledCache<String>, id: &str, updated: &str| {
            cache
                .get_or_compile(key(id), updated, || {
                    compiles += 1;
                    Ok::<_, ()>(format!("{id}@{updated}#{compiles}"))
                })
                .expect("compiles")
        };
        assert_eq!(get(&mut cache, "a", "t1"), "a@t1#1");
        assert_eq!(get(&mut cache, "a", "t1"), "a@t1#1", "kept");
        assert_eq!(get(&mut cache, "a", "t2"), "a@t2#2", "an update recompiles");
        assert_eq!(get(&mut cache, "b", "t1"), "b@t1#3");
        // "a" was used last: adding "c" drops "b".
        assert_eq!(get(&mut cache, "a", "t2"), "a@t2#2");
        assert_eq!(get(&mut cache, "c", "t1"), "c@t1#4");
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(get(&mut cache, "a", "t2"), "a@t2#2");
        assert_eq!(get(&mut cache, "b", "t1"), "b@t1#5", "compiled again");
        cache.forget("a");
        assert!(!cache.entries.contains_key(&key("a")));
        // A failed compile keeps nothing.
        let err = cache.get_or_compile(key("d"), "t1", || Err::<String, _>("bad"));
        assert_eq!(err, Err("bad"));
        assert!(!cache.entries.contains_key(&key("d")));
    }

    #[test]
    fn resolve_needs_a_version_and_finds_stored_ones() {
        let g = Guardrails::new(
            Arc::new(Store::in_memory().expect("store")),
            "000000000000".into(),
        );
        const OWNER: &str = "000000000000";
        let err = g
            .resolve(OWNER, "abc", None)
            .map(|_| ())
            .expect_err("no version");
        assert_eq!(err.code, ErrorCode::Validation);
        let err = g
            .resolve(OWNER, "abc", Some("DRAFT"))
            .map(|_| ())
            .expect_err("missing");
        assert_eq!(err.code, ErrorCode::ResourceNotFound);

        let req: GuardrailRequest = serde_json::from_value(json!({
            "name": "n", "blockedInputMessaging": "i", "blockedOutputsMessaging": "o"
        }))
        .expect("parses");
        let doc = Stored {
            arn: arn("us-east-1", "000000000000", "abc"),
            definition: req.validate().expect("valid"),
            created_at: now(),
            updated_at: now(),
            next_version: 1,
        };
        g.put("abc", DRAFT, &doc).expect("put");
        let first = g.resolve(OWNER, "abc", Some("DRAFT")).expect("found");
        let again = g.resolve(OWNER, "abc", Some("DRAFT")).expect("found");
        assert!(
            Arc::ptr_eq(&first.guardrail, &again.guardrail),
            "compiled once"
        );
        assert!(first.arn.ends_with(":guardrail/abc"));
        // Another account sees no such guardrail, by ID or by the owner's ARN.
        for identifier in ["abc", first.arn.as_str()] {
            let err = g
                .resolve("111111111111", identifier, Some("DRAFT"))
                .map(|_| ())
                .expect_err("another account's");
            assert_eq!(err.code, ErrorCode::ResourceNotFound);
        }
    }
}
