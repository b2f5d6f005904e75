//! Provisioned throughput: the control-plane operations
//! (CreateProvisionedModelThroughput and friends, kept in the data directory's
//! database) and the lookup that lets runtime operations take a
//! provisioned-model ARN as their model ID.
//!
//! A provisioned model is `Creating` until the local model behind it is loaded
//! (asking for it starts the load when models load lazily), then `InService`.
//! While it exists, its local model is pinned: idle unloading skips it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use basalt_catalog::LocalModelKind;
use basalt_proto::{from_json, BedrockError, ErrorCode};
use basalt_store::{Key, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::authorization;
use crate::edge::{ApiError, Label};
use crate::idempotency::Token;
use crate::listing::ListQuery;
use crate::runtime::json_body;
use crate::AppState;

const KIND: &str = "provisioned-model";
const CREATING: &str = "Creating";
const IN_SERVICE: &str = "InService";
const FAILED: &str = "Failed";
const STATUSES: &[&str] = &[CREATING, IN_SERVICE, "Updating", FAILED];
/// Tags per request (the TagList shape's limit).
const MAX_TAGS: usize = 200;
const MAX_NAME_LEN: usize = 63;
const MAX_TOKEN_LEN: usize = 256;
const MAX_MODEL_ID_LEN: usize = 2048;

/// Account-wide limits on provisioned throughput (ServiceQuotaExceededException beyond them).
#[derive(Debug, Clone, Copy)]
pub struct ProvisionedLimits {
    /// Provisioned throughputs per account.
    pub max_throughputs: usize,
    /// Model units summed over every provisioned throughput of the account.
    pub max_model_units: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tag {
    key: String,
    value: String,
}

/// One stored provisioned throughput.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    id: String,
    name: String,
    arn: String,
    /// The foundation-model ID it serves.
    model_id: String,
    model_arn: String,
    model_units: u32,
    status: String,
    #[serde(default)]
    failure_message: Option<String>,
    commitment_duration: Option<String>,
    commitment_expiration_time: Option<String>,
    created_at: String,
    updated_at: String,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// What a runtime request made through a provisioned-model ARN runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provision {
    pub arn: String,
    pub name: String,
    pub model_id: String,
    pub model_units: u32,
}

/// Provisioned-throughput state, shared by the control plane and the runtime. Each
/// throughput belongs to the account that created it; the others never see it.
pub struct ProvisionedThroughputs {
    store: Arc<Store>,
    /// The server's account: the owner of a stored throughput whose ARN names none.
    account: String,
    limits: ProvisionedLimits,
    /// Serialises the name and quota checks of create, update and delete with their writes.
    writes: Mutex<()>,
}

fn store_error(e: StoreError) -> BedrockError {
    BedrockError::internal(format!("The provisioned throughput store failed: {e}"))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn timestamp(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse_time(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

fn new_id() -> String {
    const SET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| SET[rng.random_range(0..SET.len())] as char)
        .collect()
}

fn not_found(identifier: &str) -> BedrockError {
    BedrockError::not_found(format!(
        "The provisioned model {identifier} was not found. Check the name or ARN and try again."
    ))
}

/// `([0-9a-zA-Z][_-]?)+`: alphanumerics, each optionally followed by one `_` or `-`.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .windows(2)
            .all(|w| w[0].is_ascii_alphanumeric() || w[1].is_ascii_alphanumeric())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

fn check_name(path: &str, name: &str) -> Result<(), BedrockError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(BedrockError::constraint(
            path,
            name,
            "Member must have length between 1 and 63",
        ));
    }
    if !valid_name(name) {
        return Err(BedrockError::constraint(
            path,
            name,
            "Member must satisfy regular expression pattern: ([0-9a-zA-Z][_-]?)+",
        ));
    }
    Ok(())
}

/// The name or ID in a provisioned-model identifier: a name, or an ARN whose resource
/// is `provisioned-model/<id or name>`.
fn parse_identifier(identifier: &str) -> Result<String, BedrockError> {
    let key = match identifier.split_once(":provisioned-model/") {
        Some((prefix, key)) if prefix.starts_with("arn:aws") => key,
        _ => identifier,
    };
    if key.is_empty() || key.len() > MAX_NAME_LEN || !valid_name(key) {
        return Err(BedrockError::constraint(
            "provisionedModelId",
            identifier,
            "Member must satisfy regular expression pattern: ((([0-9a-zA-Z][_-]?)+)|(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:provisioned-model/[a-z0-9]{12}))",
        ));
    }
    Ok(key.to_string())
}

/// The resource part of a runtime model ID when it is a provisioned-model ARN.
fn provisioned_arn_key(model_id: &str) -> Option<&str> {
    let rest = model_id.strip_prefix("arn:")?;
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    let [partition, service, _region, _account, resource] = parts.as_slice() else {
        return None;
    };
    if !partition.starts_with("aws") || *service != "bedrock" {
        return None;
    }
    resource.strip_prefix("provisioned-model/")
}

fn foundation_arn(region: &str, model_id: &str) -> String {
    format!("arn:aws:bedrock:{region}::foundation-model/{model_id}")
}

fn is_text_model(state: &AppState, local: &str) -> bool {
    state
        .catalog
        .local_model(local)
        .is_some_and(|m| m.kind == LocalModelKind::Gguf)
}

/// The local model a foundation model ID runs on.
fn local_model(state: &AppState, model_id: &str) -> Option<String> {
    state.catalog.resolve(model_id).ok()?.local_model
}

/// The decode slots each local model reserves: one per model unit of every
/// throughput it serves, held under the throughput's ARN.
fn reservation_tables(
    state: &AppState,
    docs: &[Stored],
) -> HashMap<String, BTreeMap<Arc<str>, usize>> {
    let mut tables: HashMap<String, BTreeMap<Arc<str>, usize>> = HashMap::new();
    for doc in docs {
        let Some(local) = local_model(state, &doc.model_id) else {
            continue;
        };
        let table = tables.entry(local.clone()).or_default();
        if is_text_model(state, &local) {
            table.insert(Arc::from(doc.arn.as_str()), doc.model_units as usize);
        }
    }
    tables
}

/// Refuses a new throughput whose model units would not fit its text model's decode
/// slots beside the units already reserved there (by any account).
fn check_capacity(state: &AppState, existing: &[Stored], new: &Stored) -> Result<(), BedrockError> {
    let mut docs = existing.to_vec();
    docs.push(new.clone());
    let tables = reservation_tables(state, &docs);
    let Some(local) = local_model(state, &new.model_id) else {
        return Ok(());
    };
    let (Some(table), Some(reservations)) = (tables.get(&local), state.models.reservations(&local))
    else {
        return Ok(());
    };
    if !is_text_model(state, &local) || reservations.fits(table) {
        return Ok(());
    }
    let wanted: usize = table.values().sum();
    Err(BedrockError::new(
        ErrorCode::ServiceQuotaExceeded,
        format!(
            "{} more model units for {} would exceed this server's capacity for that model: each model unit reserves one of its decode slots, {} can be reserved in all (one always stays on demand), and {} already are. Lower modelUnits, delete another provisioned throughput for this model, or start the server with more --batch-slots.",
            new.model_units,
            new.model_id,
            reservations.reservable(),
            wanted - new.model_units as usize,
        ),
    ))
}

impl ProvisionedThroughputs {
    pub fn new(store: Arc<Store>, account: String, limits: ProvisionedLimits) -> Self {
        Self {
            store,
            account,
            limits,
            writes: Mutex::new(()),
        }
    }

    fn key<'a>(id: &'a str, account: &'a str) -> Key<'a> {
        // The version slot holds the owning account, so one account's list is one query.
        Key {
            kind: KIND,
            id,
            version: account,
        }
    }

    /// The account that owns a stored throughput: the one its ARN names.
    fn owner<'a>(&'a self, doc: &'a Stored) -> &'a str {
        authorization::arn_account(&doc.arn).unwrap_or(&self.account)
    }

    /// The throughputs of `account`.
    fn all(&self, account: &str) -> Result<Vec<Stored>, BedrockError> {
        Ok(self
            .store
            .list::<Stored>(KIND, account)
            .map_err(store_error)?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    fn put(&self, doc: &Stored) -> Result<(), BedrockError> {
        self.store
            .put(&Self::key(&doc.id, self.owner(doc)), doc)
            .map_err(store_error)
    }

    /// The stored throughput of `account` that a generated ID or a name names.
    fn find(&self, account: &str, key: &str) -> Result<Option<Stored>, BedrockError> {
        if let Some(doc) = self
            .store
            .get::<Stored>(&Self::key(key, account))
            .map_err(store_error)?
        {
            return Ok(Some(doc));
        }
        Ok(self.all(account)?.into_iter().find(|s| s.name == key))
    }

    /// The caller's throughput an identifier names. It is looked for among `account`'s
    /// throughputs only, so another account's is not found, as it would not be in the
    /// caller's account on AWS. The account an ARN names is not compared: the seed
    /// writes its ARN by hand, with an account that need not be the server's.
    fn existing(&self, account: &str, identifier: &str) -> Result<Stored, BedrockError> {
        let key = parse_identifier(identifier)?;
        self.find(account, &key)?
            .ok_or_else(|| not_found(identifier))
    }

    /// Every account's throughputs: the engine they share is one.
    fn every(&self) -> Result<Vec<Stored>, BedrockError> {
        Ok(self
            .store
            .all::<Stored>(KIND)
            .map_err(store_error)?
            .into_iter()
            .map(|(_, _, s)| s)
            .collect())
    }

    /// Pins the local models that provisioned throughputs serve (loading any that is
    /// not resident), so that idle unloading never takes their capacity away, and
    /// reserves each throughput's model units as decode slots of its text model.
    pub fn apply(&self, state: &AppState) -> Result<(), BedrockError> {
        let tables = reservation_tables(state, &self.every()?);
        state.models.set_pinned(tables.keys().cloned());
        for name in state.catalog.local_model_names() {
            if !is_text_model(state, &name) {
                continue;
            }
            let Some(reservations) = state.models.reservations(&name) else {
                continue;
            };
            let table = tables.get(&name).cloned().unwrap_or_default();
            if let Err(e) = reservations.replace(table) {
                // Only a restart with fewer --batch-slots gets here: create checks first.
                tracing::error!(model = %name, error = %e, "provisioned model units do not fit this model's decode slots; none are reserved");
            }
        }
        Ok(())
    }

    /// Moves a `Creating` throughput on once its local model is loaded (or failed),
    /// asking for the model, which starts loading it when it is not resident.
    fn settle(&self, state: &AppState, mut doc: Stored) -> Result<Stored, BedrockError> {
        if doc.status != CREATING {
            return Ok(doc);
        }
        let entry = state.catalog.resolve(&doc.model_id)?;
        let next = match entry.local().and_then(|local| state.models.get(local)) {
            Ok(_) => IN_SERVICE,
            Err(e) if e.code == ErrorCode::ModelNotReady => return Ok(doc),
            Err(e) => {
                doc.failure_message = Some(e.message);
                FAILED
            }
        };
        let _w = self
            .writes
            .lock()
            .map_err(|_| BedrockError::internal("provisioned throughput lock poisoned"))?;
        // Deleted meanwhile: report it as it was, write nothing back.
        if self
            .store
            .get::<Stored>(&Self::key(&doc.id, self.owner(&doc)))
            .map_err(store_error)?
            .is_none()
        {
            return Ok(doc);
        }
        doc.status = next.to_string();
        doc.updated_at = timestamp(now());
        self.put(&doc)?;
        Ok(doc)
    }

    /// The provisioned throughput a runtime model ID names, if it is a provisioned-model
    /// ARN naming one of the caller's `account`'s throughputs by generated ID or by name
    /// (the ARN's region and account are not compared, as in `existing`). `Ok(None)`:
    /// not such an ARN, or none of the caller's, so the catalog decides (and answers
    /// ResourceNotFoundException for a provisioned model it does not know): another
    /// account's throughput is not the caller's to use.
    pub fn lookup(
        &self,
        state: &AppState,
        account: &str,
        model_id: &str,
    ) -> Result<Option<Provision>, BedrockError> {
        let Some(key) = provisioned_arn_key(model_id) else {
            return Ok(None);
        };
        if key.is_empty() || key.len() > MAX_NAME_LEN || !valid_name(key) {
            return Ok(None);
        }
        let Some(doc) = self.find(account, key)? else {
            return Ok(None);
        };
        let doc = self.settle(state, doc)?;
        match doc.status.as_str() {
            IN_SERVICE => Ok(Some(Provision {
                arn: doc.arn,
                name: doc.name,
                model_id: doc.model_id,
                model_units: doc.model_units,
            })),
            CREATING => Err(BedrockError::new(
                ErrorCode::ModelNotReady,
                format!(
                    "The provisioned model {} is still being created. Try your request again shortly.",
                    doc.name
                ),
            )),
            _ => Err(BedrockError::validation(format!(
                "The provisioned model {} is in status {} and cannot serve requests: {}",
                doc.name,
                doc.status,
                doc.failure_message.as_deref().unwrap_or("no reason recorded")
            ))),
        }
    }
}

/// The provisioned-throughput service, which needs the data directory's database.
fn service(state: &AppState) -> Result<&ProvisionedThroughputs, BedrockError> {
    state.provisioned.as_ref().ok_or_else(|| {
        BedrockError::new(
            ErrorCode::ServiceUnavailable,
            "Provisioned throughput needs a data directory; this server was started without one.",
        )
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRequest {
    client_request_token: Option<String>,
    model_units: Option<i64>,
    provisioned_model_name: Option<String>,
    model_id: Option<String>,
    commitment_duration: Option<String>,
    tags: Option<Vec<Tag>>,
}

fn check_token(token: &str) -> Result<(), BedrockError> {
    let ok = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !token.starts_with('-')
        && !token.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(BedrockError::constraint(
            "clientRequestToken",
            token,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9]([-a-zA-Z0-9]{0,254}[a-zA-Z0-9])?",
        ))
    }
}

fn check_tags(tags: &[Tag]) -> Result<(), BedrockError> {
    if tags.len() > MAX_TAGS {
        return Err(BedrockError::constraint(
            "tags",
            format!("{} tags", tags.len()),
            "Member must have length less than or equal to 200",
        ));
    }
    let allowed = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || "._:/=+@-".contains(c))
    };
    for (i, tag) in tags.iter().enumerate() {
        if tag.key.is_empty() || tag.key.len() > 128 || !allowed(&tag.key) {
            return Err(BedrockError::constraint(
                &format!("tags.{}.member.key", i + 1),
                &tag.key,
                "Member must have length between 1 and 128 and satisfy regular expression pattern: [a-zA-Z0-9\\s._:/=+@-]*",
            ));
        }
        if tag.value.len() > 256 || !allowed(&tag.value) {
            return Err(BedrockError::constraint(
                &format!("tags.{}.member.value", i + 1),
                &tag.value,
                "Member must have length between 0 and 256 and satisfy regular expression pattern: [a-zA-Z0-9\\s._:/=+@-]*",
            ));
        }
    }
    Ok(())
}

fn commitment_end(start: OffsetDateTime, duration: &str) -> Option<OffsetDateTime> {
    let months = match duration {
        "OneMonth" => 1,
        "SixMonths" => 6,
        _ => return None,
    };
    let date = start.date();
    let total = i32::from(u8::from(date.month())) - 1 + months;
    let year = date.year() + total / 12;
    let month = time::Month::try_from((total % 12 + 1) as u8).ok()?;
    let day = date.day().min(month.length(year));
    let end = time::Date::from_calendar_date(year, month, day).ok()?;
    Some(end.with_time(start.time()).assume_utc())
}

pub async fn create_provisioned_model_throughput(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = service(&state)?;
    let req: CreateRequest = from_json(&body)?;
    let name = req
        .provisioned_model_name
        .ok_or_else(|| BedrockError::missing("provisionedModelName"))?;
    let model_id = req
        .model_id
        .ok_or_else(|| BedrockError::missing("modelId"))?;
    let units = req
        .model_units
        .ok_or_else(|| BedrockError::missing("modelUnits"))?;
    check_name("provisionedModelName", &name)?;
    if model_id.is_empty() || model_id.len() > MAX_MODEL_ID_LEN {
        return Err(BedrockError::constraint(
            "modelId",
            &model_id,
            "Member must have length between 1 and 2048",
        )
        .into());
    }
    if units < 1 {
        return Err(BedrockError::constraint(
            "modelUnits",
            units,
            "Member must have value greater than or equal to 1",
        )
        .into());
    }
    if let Some(t) = &req.client_request_token {
        check_token(t)?;
    }
    if let Some(d) = &req.commitment_duration {
        if commitment_end(now(), d).is_none() {
            return Err(BedrockError::constraint(
                "commitmentDuration",
                d,
                "Member must satisfy enum value set: [OneMonth, SixMonths]",
            )
            .into());
        }
    }
    let tags = req.tags.unwrap_or_default();
    check_tags(&tags)?;
    // Foundation models only: an inference profile or another provisioned model is not
    // something capacity can be bought for.
    let base = match model_id.strip_prefix("arn:") {
        Some(_) => model_id
            .split_once(":foundation-model/")
            .map(|(_, id)| id.to_string()),
        None => Some(model_id.clone()),
    };
    let entry = base
        .as_deref()
        .and_then(|id| state.catalog.listed().iter().find(|e| e.model_id == id))
        .cloned()
        .ok_or_else(|| {
            BedrockError::not_found(format!(
                "The model {model_id} was not found. Provisioned throughput is bought for a foundation model by its ID or ARN."
            ))
        })?;

    let _w = p
        .writes
        .lock()
        .map_err(|_| BedrockError::internal("provisioned throughput lock poisoned"))?;
    let operation = "CreateProvisionedModelThroughput";
    // CreateProvisionedModelThroughput models no ConflictException.
    let token = Token::new(
        &p.store,
        &caller.account,
        operation,
        req.client_request_token.as_deref(),
        &body,
    );
    if let Some(response) = token.replay(ErrorCode::Validation)? {
        return Ok(created(response));
    }
    let existing = p.all(&caller.account)?;
    if existing.iter().any(|s| s.name == name) {
        return Err(BedrockError::validation(format!(
            "A provisioned model throughput named {name} already exists. Choose another name."
        ))
        .into());
    }
    if existing.len() >= p.limits.max_throughputs {
        return Err(BedrockError::new(
            ErrorCode::ServiceQuotaExceeded,
            format!(
                "You have reached the quota of {} provisioned model throughputs for this account. Delete one, or raise --max-provisioned-throughputs.",
                p.limits.max_throughputs
            ),
        )
        .into());
    }
    let used: u64 = existing.iter().map(|s| u64::from(s.model_units)).sum();
    let units = u32::try_from(units).unwrap_or(u32::MAX);
    if used + u64::from(units) > u64::from(p.limits.max_model_units) {
        return Err(BedrockError::new(
            ErrorCode::ServiceQuotaExceeded,
            format!(
                "Requesting {units} model units would exceed this account's quota of {} model units for provisioned throughput ({used} in use). Raise --max-provisioned-model-units or delete a provisioned throughput.",
                p.limits.max_model_units
            ),
        )
        .into());
    }
    let id = new_id();
    let created_at = now();
    let doc = Stored {
        arn: format!(
            "arn:aws:bedrock:{}:{}:provisioned-model/{id}",
            caller.region, caller.account
        ),
        id,
        name,
        model_arn: foundation_arn(&caller.region, &entry.model_id),
        model_id: entry.model_id,
        model_units: units,
        status: CREATING.to_string(),
        failure_message: None,
        commitment_expiration_time: req
            .commitment_duration
            .as_deref()
            .and_then(|d| commitment_end(created_at, d))
            .map(timestamp),
        commitment_duration: req.commitment_duration,
        created_at: timestamp(created_at),
        updated_at: timestamp(created_at),
        tags,
    };
    check_capacity(&state, &p.every()?, &doc)?;
    p.put(&doc)?;
    let response = json!({ "provisionedModelArn": doc.arn });
    token.remember(&response)?;
    drop(_w);
    p.apply(&state)?;
    p.settle(&state, doc)?;
    Ok(created(response))
}

fn created(body: Value) -> Response {
    let mut resp = json_body(&body);
    *resp.status_mut() = StatusCode::CREATED;
    resp
}

/// The fields GetProvisionedModelThroughput and the list summaries share.
fn describe(doc: &Stored) -> Value {
    // Base models only, so the model and its foundation model are one ARN.
    let mut body = json!({
        "provisionedModelName": doc.name,
        "provisionedModelArn": doc.arn,
        "modelArn": doc.model_arn,
        "desiredModelArn": doc.model_arn,
        "foundationModelArn": doc.model_arn,
        "modelUnits": doc.model_units,
        "desiredModelUnits": doc.model_units,
        "status": doc.status,
        "creationTime": doc.created_at,
        "lastModifiedTime": doc.updated_at,
    });
    if let Some(d) = &doc.commitment_duration {
        body["commitmentDuration"] = json!(d);
    }
    if let Some(t) = &doc.commitment_expiration_time {
        body["commitmentExpirationTime"] = json!(t);
    }
    body
}

pub async fn get_provisioned_model_throughput(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let p = service(&state)?;
    let doc = p.settle(&state, p.existing(&caller.account, &identifier)?)?;
    let mut body = describe(&doc);
    if let Some(m) = &doc.failure_message {
        body["failureMessage"] = json!(m);
    }
    Ok(json_body(&body))
}

pub async fn list_provisioned_model_throughputs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = service(&state)?;
    let query = ListQuery::parse(query)?;
    let page = query.page(1000)?;
    let window = query.window("creationTimeAfter", "creationTimeBefore")?;
    let status = query.one_of("statusEquals", STATUSES)?;
    query.one_of("sortBy", &["CreationTime"])?;
    let descending = query.descending()?;
    if let Some(n) = query.get("nameContains") {
        check_name("nameContains", n)?;
    }
    let model_arn = query.get("modelArnEquals");
    if let Some(a) = model_arn {
        if a.len() < 20 || a.len() > 1011 {
            return Err(BedrockError::constraint(
                "modelArnEquals",
                a,
                "Member must have length between 20 and 1011",
            )
            .into());
        }
    }
    let mut rows: Vec<(OffsetDateTime, Stored)> = Vec::new();
    for doc in p.all(&caller.account)? {
        let doc = p.settle(&state, doc)?;
        let created = parse_time(&doc.created_at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let keep = window.contains(Some(created))
            && status.is_none_or(|s| doc.status == s)
            && model_arn.is_none_or(|a| doc.model_arn == a)
            && query
                .get("nameContains")
                .is_none_or(|n| doc.name.contains(n));
        if keep {
            rows.push((created, doc));
        }
    }
    // Stable: equal times keep creation order.
    rows.sort_by_key(|(t, _)| *t);
    if descending {
        rows.reverse();
    }
    Ok(json_body(&page.body(
        "provisionedModelSummaries",
        &rows,
        |(_, doc)| describe(doc),
    )))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateRequest {
    desired_provisioned_model_name: Option<String>,
    desired_model_id: Option<String>,
}

pub async fn update_provisioned_model_throughput(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = service(&state)?;
    let req: UpdateRequest = if body.is_empty() {
        UpdateRequest {
            desired_provisioned_model_name: None,
            desired_model_id: None,
        }
    } else {
        from_json(&body)?
    };
    if let Some(n) = &req.desired_provisioned_model_name {
        check_name("desiredProvisionedModelName", n)?;
    }
    let _w = p
        .writes
        .lock()
        .map_err(|_| BedrockError::internal("provisioned throughput lock poisoned"))?;
    let mut doc = p.existing(&caller.account, &identifier)?;
    if let Some(m) = &req.desired_model_id {
        let same = *m == doc.model_id || *m == doc.model_arn;
        if !same {
            return Err(BedrockError::validation(
                "desiredModelId can't be specified for a provisioned throughput associated with a base model.",
            )
            .into());
        }
    }
    if let Some(n) = req.desired_provisioned_model_name {
        if n != doc.name && p.all(&caller.account)?.iter().any(|s| s.name == n) {
            return Err(BedrockError::validation(format!(
                "A provisioned model throughput named {n} already exists. Choose another name."
            ))
            .into());
        }
        doc.name = n;
    }
    doc.updated_at = timestamp(now());
    p.put(&doc)?;
    Ok(json_body(&json!({})))
}

pub async fn delete_provisioned_model_throughput(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Label(identifier): Label,
) -> Result<Response, ApiError> {
    let p = service(&state)?;
    let _w = p
        .writes
        .lock()
        .map_err(|_| BedrockError::internal("provisioned throughput lock poisoned"))?;
    let doc = p.existing(&caller.account, &identifier)?;
    if let Some(end) = doc
        .commitment_expiration_time
        .as_deref()
        .and_then(parse_time)
    {
        if end > now() {
            return Err(BedrockError::new(
                ErrorCode::Conflict,
                format!(
                    "The provisioned model {} has a commitment term that ends at {}; it can't be deleted before then.",
                    doc.name,
                    timestamp(end)
                ),
            )
            .into());
        }
    }
    p.store
        .delete(&ProvisionedThroughputs::key(&doc.id, p.owner(&doc)))
        .map_err(store_error)?;
    drop(_w);
    p.apply(&state)?;
    Ok(json_body(&json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_bedrocks_pattern() {
        for ok in ["my-claude-capacity", "a", "A_1-b", "abc123def456"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a--b", "a_-b", "a b", "a/b", "ü"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn identifiers_are_names_ids_or_arns() {
        assert_eq!(parse_identifier("my-pt").expect("name"), "my-pt");
        assert_eq!(
            parse_identifier(
                "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123def456"
            )
            .expect("arn"),
            "abc123def456"
        );
        assert_eq!(
            parse_identifier(
                "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/my-claude-capacity"
            )
            .expect("arn with the name"),
            "my-claude-capacity"
        );
        for bad in ["", "a/b", "arn:aws:bedrock:us-east-1:1:provisioned-model/"] {
            assert_eq!(
                parse_identifier(bad).expect_err(bad).code,
                ErrorCode::Validation,
                "{bad}"
            );
        }
    }

    #[test]
    fn runtime_ids_are_provisioned_only_as_arns() {
        assert_eq!(
            provisioned_arn_key("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/x1"),
            Some("x1")
        );
        assert_eq!(provisioned_arn_key("my-claude-capacity"), None);
        assert_eq!(
            provisioned_arn_key("arn:aws:bedrock:us-east-1::foundation-model/a.b"),
            None
        );
        assert_eq!(
            provisioned_arn_key("arn:aws:s3:::provisioned-model/x"),
            None
        );
    }

    #[test]
    fn commitments_end_whole_months_later() {
        let start = time::macros::datetime!(2024-01-31 10:00 UTC);
        assert_eq!(
            commitment_end(start, "OneMonth"),
            Some(time::macros::datetime!(2024-02-29 10:00 UTC))
        );
        assert_eq!(
            commitment_end(start, "SixMonths"),
            Some(time::macros::datetime!(2024-07-31 10:00 UTC))
        );
        let december = time::macros::datetime!(2024-12-15 00:00 UTC);
        assert_eq!(
            commitment_end(december, "OneMonth"),
            Some(time::macros::datetime!(2025-01-15 00:00 UTC))
        );
        assert_eq!(commitment_end(start, "Forever"), None);
    }

    #[test]
    fn tokens_and_tags_are_checked() {
        check_token("abc-123").expect("ok");
        for bad in ["", "-a", "a-", "a b", &"a".repeat(257)] {
            check_token(bad).expect_err(bad);
        }
        check_tags(&[Tag {
            key: "team".into(),
            value: "ml ops".into(),
        }])
        .expect("ok");
        let bad = Tag {
            key: String::new(),
            value: "v".into(),
        };
        check_tags(&[bad]).expect_err("empty key");
        let many: Vec<Tag> = (0..201)
            .map(|i| Tag {
                key: format!("k{i}"),
                value: String::new(),
            })
            .collect();
        check_tags(&many).expect_err("too many");
    }
}
