//! Custom Model Import in the bedrock control plane: CreateModelImportJob,
//! GetModelImportJob and ListModelImportJobs, and GetImportedModel, ListImportedModels
//! and DeleteImportedModel.
//!
//! A job copies the objects under its `s3Uri` (the object-storage layer: a local bucket
//! directory or an S3-compatible server) into the model cache, and `basalt_model_import`
//! checks and records them exactly as `basalt models import` does. A finished import joins
//! the running catalog, is invocable by its `imported-model` ARN, and starts loading.
//! Jobs are kept in the data directory; one a restart interrupted is marked Failed.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use basalt_model_import::{Budget, Manifest, Origin};
use basalt_objects::{ObjectStorage, S3Uri};
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_store::{Key, Store};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::authorization;
use crate::edge::{ApiError, Label};
use crate::idempotency::Token;
use crate::listing::ListQuery;
use crate::loaded::LoadedModels;
use crate::runtime::json_body;
use crate::AppState;

const KIND: &str = "model-import-job";
const CREATE: &str = "CreateModelImportJob";
const IN_PROGRESS: &str = "InProgress";
const COMPLETED: &str = "Completed";
const FAILED: &str = "Failed";
const MAX_TAGS: usize = 200;

#[allow(clippy::expect_used)]
static JOB_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9](-*[a-zA-Z0-9\+\-\.])*$").expect("job name pattern"));
#[allow(clippy::expect_used)]
static MODEL_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([0-9a-zA-Z][_-]?)+$").expect("model name pattern"));
#[allow(clippy::expect_used)]
static ROLE_ARN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+$").expect("role pattern")
});
#[allow(clippy::expect_used)]
static S3_URI: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?$")
        .expect("s3 uri pattern")
});

/// What the model-import routes need.
///
/// Accounts: an import job, and the imported-model record it makes, belong to the
/// account that created the job (the one the job's ARN names); other accounts cannot
/// see, use by ARN, or delete them. Models imported with `basalt models import` (no
/// job) are the server account's. The weights on disk are one copy per import, and a
/// model imported with `--id` serves that Bedrock model ID to every account, as the
/// catalog's own models do.
pub struct ModelImports {
    store: Arc<Store>,
    objects: ObjectStorage,
    models_dir: PathBuf,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportJob {
    id: String,
    job_arn: String,
    job_name: String,
    imported_model_name: String,
    #[serde(default)]
    imported_model_arn: Option<String>,
    role_arn: String,
    s3_uri: String,
    status: String,
    #[serde(default)]
    failure_message: Option<String>,
    creation_time: String,
    last_modified_time: String,
    #[serde(default)]
    end_time: Option<String>,
    region: String,
}

impl ImportJob {
    fn public(&self) -> Value {
        let mut v = json!({
            "jobArn": self.job_arn,
            "jobName": self.job_name,
            "importedModelName": self.imported_model_name,
            "roleArn": self.role_arn,
            "modelDataSource": {"s3DataSource": {"s3Uri": self.s3_uri}},
            "status": self.status,
            "creationTime": self.creation_time,
            "lastModifiedTime": self.last_modified_time,
        });
        if let Some(arn) = &self.imported_model_arn {
            v["importedModelArn"] = json!(arn);
        }
        if let Some(m) = &self.failure_message {
            v["failureMessage"] = json!(m);
        }
        if let Some(t) = &self.end_time {
            v["endTime"] = json!(t);
        }
        v
    }

    /// ListModelImportJobs' summary: the members GetModelImportJob shares with it.
    fn summary(&self) -> Value {
        let mut v = self.public();
        if let Value::Object(map) = &mut v {
            map.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "jobArn"
                        | "jobName"
                        | "status"
                        | "creationTime"
                        | "lastModifiedTime"
                        | "endTime"
                        | "importedModelArn"
                        | "importedModelName"
                )
            });
        }
        v
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRequest {
    job_name: String,
    imported_model_name: String,
    role_arn: String,
    model_data_source: DataSource,
    #[serde(default)]
    job_tags: Vec<Value>,
    #[serde(default)]
    imported_model_tags: Vec<Value>,
    client_request_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataSource {
    s3_data_source: S3DataSource,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3DataSource {
    s3_uri: String,
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn store_error(e: basalt_store::StoreError) -> BedrockError {
    BedrockError::internal(format!("The model import store failed: {e}"))
}

fn check(member: &str, value: &str, max: usize, pattern: &Regex) -> Result<(), BedrockError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(BedrockError::constraint(
            member,
            value,
            &format!("Member must have length between 1 and {max}"),
        ));
    }
    if !pattern.is_match(value) {
        return Err(BedrockError::constraint(
            member,
            value,
            &format!("Member must satisfy regular expression pattern: {pattern}"),
        ));
    }
    Ok(())
}

fn imports(state: &AppState) -> Result<&ModelImports, BedrockError> {
    state.model_imports.as_deref().ok_or_else(|| {
        BedrockError::new(
            ErrorCode::ServiceUnavailable,
            "Model import needs a data directory; this server was started without one.",
        )
    })
}

fn imported_model_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:bedrock:{region}:{account}:imported-model/{id}")
}

fn time_of(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The relative file path an object key takes under the import folder, refusing keys
/// that would climb out of it.
fn relative_path(prefix: &str, key: &str) -> Option<PathBuf> {
    let rest = key.strip_prefix(prefix)?.trim_start_matches('/');
    let path = Path::new(rest);
    let safe = !rest.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    safe.then(|| path.to_path_buf())
}

impl ModelImports {
    /// Marks jobs a restart interrupted as Failed.
    pub fn new(store: Arc<Store>, objects: ObjectStorage, models_dir: PathBuf) -> Self {
        let this = Self {
            store,
            objects,
            models_dir,
        };
        if let Ok(jobs) = this.all_jobs() {
            for mut job in jobs.into_iter().filter(|j| j.status == IN_PROGRESS) {
                job.status = FAILED.into();
                job.failure_message =
                    Some("The server restarted while the import ran. Start a new job.".into());
                job.end_time = Some(now());
                let _ = this.save(&job);
            }
        }
        this
    }

    /// Brings the catalog in line with the imports in the model cache (`basalt models
    /// import` beside a running server): attaches new ones, forgets removed ones. Returns
    /// whether anything changed.
    pub fn refresh(&self, catalog: &basalt_catalog::Catalog, models: &LoadedModels) -> bool {
        let on_disk = basalt_model_import::scan(&self.models_dir);
        let mut changed = false;
        for known in catalog.imported() {
            if !on_disk.iter().any(|m| m.id == known.id) {
                catalog.detach(&known.id);
                models.remove(&known.local_name());
                changed = true;
            }
        }
        let known: Vec<String> = catalog.imported().into_iter().map(|m| m.id).collect();
        for manifest in on_disk.iter().filter(|m| !known.contains(&m.id)) {
            if let Some(model) = manifest.imported_model() {
                match catalog.attach(model) {
                    Ok(_) => changed = true,
                    Err(e) => {
                        tracing::warn!(id = %manifest.id, error = %e, "imported model skipped")
                    }
                }
            }
        }
        changed
    }

    fn key(id: &str) -> Key<'_> {
        Key {
            kind: KIND,
            id,
            version: "",
        }
    }

    fn save(&self, job: &ImportJob) -> Result<(), BedrockError> {
        self.store
            .put(&Self::key(&job.id), job)
            .map_err(store_error)
    }

    /// Every account's jobs.
    fn all_jobs(&self) -> Result<Vec<ImportJob>, BedrockError> {
        Ok(self
            .store
            .all::<ImportJob>(KIND)
            .map_err(store_error)?
            .into_iter()
            .map(|(_, _, j)| j)
            .collect())
    }

    /// The jobs of `account` (`server`: the server's account).
    fn jobs(&self, server: &str, account: &str) -> Result<Vec<ImportJob>, BedrockError> {
        Ok(self
            .all_jobs()?
            .into_iter()
            .filter(|j| owner(server, Some(&j.job_arn)) == account)
            .collect())
    }

    /// A job of `account` by ARN, ID or name.
    fn job(
        &self,
        server: &str,
        account: &str,
        identifier: &str,
    ) -> Result<ImportJob, BedrockError> {
        let not_found = || {
            BedrockError::not_found(format!(
                "The model import job {identifier} was not found. Check the job identifier and try again."
            ))
        };
        if authorization::other_account(identifier, account) {
            return Err(not_found());
        }
        let id = identifier
            .rsplit_once(":model-import-job/")
            .map_or(identifier, |(_, id)| id);
        if let Some(job) = self
            .store
            .get::<ImportJob>(&Self::key(id))
            .map_err(store_error)?
        {
            if owner(server, Some(&job.job_arn)) == account {
                return Ok(job);
            }
        }
        self.jobs(server, account)?
            .into_iter()
            .find(|j| j.job_name == identifier)
            .ok_or_else(not_found)
    }

    /// The imported models of `account`.
    fn models(&self, server: &str, account: &str) -> Vec<Manifest> {
        basalt_model_import::scan(&self.models_dir)
            .into_iter()
            .filter(|m| owner(server, m.job_arn.as_deref()) == account)
            .collect()
    }

    /// An imported model of `account` by ARN, ID or name.
    fn model(
        &self,
        server: &str,
        account: &str,
        identifier: &str,
    ) -> Result<Manifest, BedrockError> {
        let id = identifier
            .rsplit_once(":imported-model/")
            .map_or(identifier, |(_, id)| id);
        let foreign = authorization::other_account(identifier, account);
        self.models(server, account)
            .into_iter()
            .find(|m| !foreign && (m.id == id || m.name == identifier))
            .ok_or_else(|| {
                BedrockError::not_found(format!(
                    "The imported model {identifier} was not found. Check the model identifier and try again."
                ))
            })
    }

    /// Copies the objects, checks and records the import, and makes it serveable.
    async fn run(
        &self,
        mut job: ImportJob,
        account: String,
        catalog: basalt_catalog::Catalog,
        models: LoadedModels,
    ) {
        let outcome = self.fetch_and_import(&job).await;
        job.last_modified_time = now();
        job.end_time = Some(job.last_modified_time.clone());
        match outcome {
            Ok(manifest) => {
                let attached = manifest
                    .imported_model()
                    .ok_or_else(|| format!("unknown model kind {}", manifest.kind))
                    .and_then(|m| {
                        let name = m.local_name();
                        catalog.attach(m).map_err(|e| e.to_string())?;
                        Ok(name)
                    });
                match attached {
                    Ok(local) => {
                        models.add(&local, true);
                        job.status = COMPLETED.into();
                        job.imported_model_arn =
                            Some(imported_model_arn(&job.region, &account, &manifest.id));
                        tracing::info!(job = %job.job_name, model = %manifest.id, kind = %manifest.kind, "model imported");
                    }
                    Err(e) => {
                        let _ = basalt_model_import::remove(&self.models_dir, &manifest.id);
                        job.status = FAILED.into();
                        job.failure_message = Some(e);
                    }
                }
            }
            Err(message) => {
                tracing::warn!(job = %job.job_name, error = %message, "model import failed");
                job.status = FAILED.into();
                job.failure_message = Some(message);
            }
        }
        if let Err(e) = self.save(&job) {
            tracing::error!(job = %job.job_name, error = %e.message, "could not record the import job's end");
        }
    }

    async fn fetch_and_import(&self, job: &ImportJob) -> Result<Manifest, String> {
        let uri = S3Uri::parse(&job.s3_uri).map_err(|e| e.to_string())?;
        let listed = self.objects.list(&uri).await.map_err(|e| e.to_string())?;
        if listed.is_empty() {
            return Err(format!("{} holds no objects to import.", job.s3_uri));
        }
        let model_id = basalt_model_import::new_id();
        let staged = basalt_model_import::staging_dir(&self.models_dir, &model_id);
        let fetched = self.fetch(&uri, &listed, &staged).await;
        if let Err(e) = fetched {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
        let (models_dir, origin) = (
            self.models_dir.clone(),
            Origin {
                name: job.imported_model_name.clone(),
                serves: None,
                source: job.s3_uri.clone(),
                job_name: Some(job.job_name.clone()),
                job_arn: Some(job.job_arn.clone()),
            },
        );
        tokio::task::spawn_blocking(move || {
            basalt_model_import::finish(&models_dir, &model_id, origin)
        })
        .await
        .map_err(|_| "the import check stopped unexpectedly".to_string())?
        .map_err(|e| e.to_string())
    }

    async fn fetch(
        &self,
        prefix: &S3Uri,
        listed: &[basalt_objects::ObjectMeta],
        staged: &Path,
    ) -> Result<(), String> {
        let mut budget = Budget::default();
        for object in listed {
            let Some(relative) = relative_path(&prefix.key, &object.uri.key) else {
                continue;
            };
            budget.take(object.size).map_err(|e| e.to_string())?;
            let target = staged.join(&relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            self.objects
                .download(&object.uri, &target)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The account an import job, or the model it imported, belongs to: the one the job's
/// ARN names; `server` (the server's account) for a model imported without a job.
fn owner<'a>(server: &'a str, job_arn: Option<&'a str>) -> &'a str {
    job_arn
        .and_then(authorization::arn_account)
        .unwrap_or(server)
}

pub async fn create_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let imports_state = imports(&state)?;
    let req: CreateRequest = from_json(&body)?;
    check("jobName", &req.job_name, 63, &JOB_NAME)?;
    check(
        "importedModelName",
        &req.imported_model_name,
        63,
        &MODEL_NAME,
    )?;
    check("roleArn", &req.role_arn, 2048, &ROLE_ARN)?;
    let s3_uri = &req.model_data_source.s3_data_source.s3_uri;
    check("modelDataSource.s3DataSource.s3Uri", s3_uri, 1024, &S3_URI)?;
    for (member, tags) in [
        ("jobTags", &req.job_tags),
        ("importedModelTags", &req.imported_model_tags),
    ] {
        if tags.len() > MAX_TAGS {
            return Err(BedrockError::constraint(
                member,
                tags.len(),
                &format!("Member must have length less than or equal to {MAX_TAGS}"),
            )
            .into());
        }
    }
    let token = Token::new(
        &imports_state.store,
        &caller.account,
        CREATE,
        req.client_request_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay(ErrorCode::Conflict)? {
        return Ok((StatusCode::CREATED, json_body(&response)).into_response());
    }
    let jobs = imports_state.jobs(&state.account_id, &caller.account)?;
    if jobs.iter().any(|j| j.job_name == req.job_name) {
        return Err(BedrockError::new(
            ErrorCode::Conflict,
            format!(
                "A model import job named {} already exists. Use another jobName.",
                req.job_name
            ),
        )
        .into());
    }
    let name_taken = jobs
        .iter()
        .any(|j| j.imported_model_name == req.imported_model_name && j.status != FAILED)
        || imports_state
            .models(&state.account_id, &caller.account)
            .iter()
            .any(|m| m.name == req.imported_model_name);
    if name_taken {
        return Err(BedrockError::new(
            ErrorCode::Conflict,
            format!(
                "An imported model named {} already exists. Use another importedModelName, or delete that model first.",
                req.imported_model_name
            ),
        )
        .into());
    }
    let id = basalt_model_import::new_id();
    let created = now();
    let job = ImportJob {
        job_arn: format!(
            "arn:aws:bedrock:{}:{}:model-import-job/{id}",
            caller.region, caller.account
        ),
        id,
        job_name: req.job_name.clone(),
        imported_model_name: req.imported_model_name.clone(),
        imported_model_arn: None,
        role_arn: req.role_arn.clone(),
        s3_uri: s3_uri.clone(),
        status: IN_PROGRESS.into(),
        failure_message: None,
        creation_time: created.clone(),
        last_modified_time: created,
        end_time: None,
        region: caller.region.clone(),
    };
    imports_state.save(&job)?;
    let response = json!({ "jobArn": job.job_arn });
    token.remember(&response)?;
    let state2 = Arc::clone(&state);
    let account = caller.account.clone();
    tokio::spawn(async move {
        if let Some(imports) = state2.model_imports.as_deref() {
            imports
                .run(job, account, state2.catalog.clone(), state2.models.clone())
                .await;
        }
    });
    Ok((StatusCode::CREATED, json_body(&response)).into_response())
}

pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let job = imports(&state)?.job(&state.account_id, &caller.account, &identifier)?;
    Ok(json_body(&job.public()))
}

pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let imports = imports(&state)?;
    let query = ListQuery::parse(query)?;
    let page = query.page(1000)?;
    let window = query.window("creationTimeAfter", "creationTimeBefore")?;
    let status = query.one_of("statusEquals", &[IN_PROGRESS, COMPLETED, FAILED])?;
    query.one_of("sortBy", &["CreationTime"])?;
    let name = query.get("nameContains");
    let created = |j: &ImportJob| OffsetDateTime::parse(&j.creation_time, &Rfc3339).ok();
    let mut jobs: Vec<ImportJob> = imports
        .jobs(&state.account_id, &caller.account)?
        .into_iter()
        .filter(|j| {
            status.is_none_or(|s| j.status == s)
                && name.is_none_or(|n| j.job_name.contains(n))
                && window.contains(created(j))
        })
        .collect();
    jobs.sort_by(|a, b| a.creation_time.cmp(&b.creation_time).then(a.id.cmp(&b.id)));
    if query.descending()? {
        jobs.reverse();
    }
    Ok(json_body(&page.body(
        "modelImportJobSummaries",
        &jobs,
        ImportJob::summary,
    )))
}

fn model_body(state: &AppState, region: &str, m: &Manifest) -> Value {
    let account = owner(&state.account_id, m.job_arn.as_deref());
    let mut v = json!({
        "modelArn": imported_model_arn(region, account, &m.id),
        "modelName": m.name,
        "creationTime": time_of(m.created_ms),
        "modelArchitecture": m.architecture,
        "instructSupported": m.kind == "gguf",
    });
    if let Some(name) = &m.job_name {
        v["jobName"] = json!(name);
    }
    if let Some(arn) = &m.job_arn {
        v["jobArn"] = json!(arn);
    }
    if m.source.starts_with("s3://") {
        v["modelDataSource"] = json!({"s3DataSource": {"s3Uri": m.source}});
    }
    v
}

pub async fn get_model(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let m = imports(&state)?.model(&state.account_id, &caller.account, &identifier)?;
    Ok(json_body(&model_body(&state, &caller.region, &m)))
}

pub async fn list_models(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let imports = imports(&state)?;
    let query = ListQuery::parse(query)?;
    let page = query.page(1000)?;
    let window = query.window("creationTimeAfter", "creationTimeBefore")?;
    query.one_of("sortBy", &["CreationTime"])?;
    let name = query.get("nameContains");
    let created = |m: &Manifest| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(m.created_ms) * 1_000_000).ok()
    };
    let mut models: Vec<Manifest> = imports
        .models(&state.account_id, &caller.account)
        .into_iter()
        .filter(|m| name.is_none_or(|n| m.name.contains(n)) && window.contains(created(m)))
        .collect();
    if query.descending()? {
        models.reverse();
    }
    Ok(json_body(&page.body("modelSummaries", &models, |m| {
        let mut v = model_body(&state, &caller.region, m);
        if let Value::Object(map) = &mut v {
            map.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "modelArn"
                        | "modelName"
                        | "creationTime"
                        | "instructSupported"
                        | "modelArchitecture"
                )
            });
        }
        v
    })))
}

pub async fn delete_model(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let imports = imports(&state)?;
    let m = imports.model(&state.account_id, &caller.account, &identifier)?;
    if let Some(model) = state.catalog.detach(&m.id) {
        state.models.remove(&model.local_name());
    }
    basalt_model_import::remove(&imports.models_dir, &m.id)
        .map_err(|e| BedrockError::internal(format!("Deleting the imported model failed: {e}")))?;
    Ok(json_body(&json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_map_to_paths_inside_the_import() {
        assert_eq!(
            relative_path("models/sd/", "models/sd/unet/config.json"),
            Some(PathBuf::from("unet/config.json"))
        );
        assert_eq!(
            relative_path("models/sd", "models/sd/vae/x.safetensors"),
            Some(PathBuf::from("vae/x.safetensors"))
        );
        assert_eq!(
            relative_path("models/sd/", "models/sd/../../etc/passwd"),
            None
        );
        assert_eq!(relative_path("models/sd/", "models/sd/"), None);
        assert_eq!(relative_path("models/sd/", "other/key"), None);
    }

    #[test]
    fn the_patterns_are_botocores() {
        assert!(JOB_NAME.is_match("import-1.v2"));
        assert!(!JOB_NAME.is_match("-bad"));
        assert!(MODEL_NAME.is_match("my_model-2"));
        assert!(!MODEL_NAME.is_match("my model"));
        assert!(ROLE_ARN.is_match("arn:aws:iam::123456789012:role/Import"));
        assert!(S3_URI.is_match("s3://bucket/models/sd/"));
        assert!(!S3_URI.is_match("s3://B/x"));
    }
}
