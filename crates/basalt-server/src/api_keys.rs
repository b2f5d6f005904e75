//! Bedrock API keys: bearer tokens that botocore sends (over HTTPS, when
//! `AWS_BEARER_TOKEN_BEDROCK` is set) instead of a SigV4 signature. Only a SHA-256
//! of each key is stored, in the data directory's database; keys can expire and be
//! revoked, and a running server sees both at once. Like access keys, an API key may
//! carry a policy; it is read with the key on every request, so changes apply at once.

use std::sync::Arc;

use basalt_proto::{BedrockError, ErrorCode};
use basalt_store::{Key, Store, StoreError};
use base64::Engine as _;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::keys::{valid_account_id, Access, Policy};

const KIND: &str = "api-key";
const VERSION: &str = "-";
/// Like Bedrock's long-term keys: "ABSK" and base64 of "<name>-<id>:<secret>".
const PREFIX: &str = "ABSK";
const NAME: &str = "BasaltAPIKey";
/// Longest token read; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no API key {0}")]
    Unknown(String),
    #[error("the account ID must be 12 digits, not {0:?}")]
    Account(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub id: String,
    /// Hex SHA-256 of the whole token.
    sha256: String,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<String>,
    /// The account the key acts in; none (keys made before keys had accounts, and keys
    /// made without one) means the server's `--account-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The key's policy document; none means unrestricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<serde_json::Value>,
}

impl ApiKeyRecord {
    /// What the key may do. A stored account that is not one (an edited database)
    /// refuses every request, as an unreadable policy does.
    pub fn access(&self) -> Access {
        match &self.account_id {
            Some(a) if !valid_account_id(a) => {
                Access::Unreadable(format!("the stored account ID {a:?} is not 12 digits"))
            }
            _ => Access::of(self.policy.as_ref()),
        }
    }
}

pub struct ApiKeys {
    store: Arc<Store>,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn unrecognized(message: &str) -> BedrockError {
    BedrockError::new(ErrorCode::UnrecognizedClient, message)
}

/// Equal-time comparison, so that timing does not reveal how much of a hash matched.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl ApiKeys {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// Issues a key; returns its record and the token, which is shown only now.
    pub fn create(
        &self,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(ApiKeyRecord, String), ApiKeyError> {
        self.create_with_policy(expires_at, None)
    }

    /// Issues a key that may do only what `policy` allows (anything, without one).
    pub fn create_with_policy(
        &self,
        expires_at: Option<OffsetDateTime>,
        policy: Option<&Policy>,
    ) -> Result<(ApiKeyRecord, String), ApiKeyError> {
        self.create_in(None, expires_at, policy)
    }

    /// Issues a key of `account` (none: the server's) that may do only what `policy`
    /// allows (anything, without one).
    pub fn create_in(
        &self,
        account: Option<&str>,
        expires_at: Option<OffsetDateTime>,
        policy: Option<&Policy>,
    ) -> Result<(ApiKeyRecord, String), ApiKeyError> {
        if let Some(a) = account.filter(|a| !valid_account_id(a)) {
            return Err(ApiKeyError::Account(a.to_string()));
        }
        const ID_SET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let id: String = (0..16)
            .map(|_| ID_SET[rng.random_range(0..ID_SET.len())] as char)
            .collect();
        let secret: [u8; 32] = rng.random();
        let inner = format!(
            "{NAME}-{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(secret)
        );
        let token = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(inner)
        );
        let record = ApiKeyRecord {
            id: id.clone(),
            sha256: digest(&token),
            created_at: now().format(&Rfc3339).unwrap_or_default(),
            expires_at: expires_at.and_then(|t| t.format(&Rfc3339).ok()),
            revoked_at: None,
            account_id: account.map(str::to_string),
            policy: policy.map(|p| p.document().clone()),
        };
        self.store.put(
            &Key {
                kind: KIND,
                id: &id,
                version: VERSION,
            },
            &record,
        )?;
        Ok((record, token))
    }

    pub fn list(&self) -> Result<Vec<ApiKeyRecord>, ApiKeyError> {
        Ok(self
            .store
            .list::<ApiKeyRecord>(KIND, VERSION)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// The record of key `id`, if there is one.
    pub fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>, ApiKeyError> {
        Ok(self.store.get(&Key {
            kind: KIND,
            id,
            version: VERSION,
        })?)
    }

    /// Sets (or, with `None`, removes) a key's policy; the next request sees it.
    pub fn set_policy(&self, id: &str, policy: Option<&Policy>) -> Result<(), ApiKeyError> {
        self.update(id, |record| {
            record.policy = policy.map(|p| p.document().clone())
        })
    }

    /// Marks a key revoked; it is refused from the next request on.
    pub fn revoke(&self, id: &str) -> Result<(), ApiKeyError> {
        self.update(id, |record| {
            if record.revoked_at.is_none() {
                record.revoked_at = Some(now().format(&Rfc3339).unwrap_or_default());
            }
        })
    }

    /// Reads a key's record, changes it, and writes it back.
    fn update(&self, id: &str, change: impl FnOnce(&mut ApiKeyRecord)) -> Result<(), ApiKeyError> {
        let key = Key {
            kind: KIND,
            id,
            version: VERSION,
        };
        let mut record: ApiKeyRecord = self
            .store
            .get(&key)?
            .ok_or_else(|| ApiKeyError::Unknown(id.to_string()))?;
        change(&mut record);
        self.store.put(&key, &record)?;
        Ok(())
    }

    /// Checks a bearer token: known, not revoked, not expired.
    pub fn verify(&self, token: &str) -> Result<ApiKeyRecord, BedrockError> {
        let invalid = || unrecognized("The API key in the request is invalid.");
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let id = id_of(token).ok_or_else(invalid)?;
        let record: ApiKeyRecord = self
            .store
            .get(&Key {
                kind: KIND,
                id: &id,
                version: VERSION,
            })
            .map_err(|e| BedrockError::internal(format!("The key store failed: {e}")))?
            .ok_or_else(invalid)?;
        if !same(&record.sha256, &digest(token)) {
            return Err(invalid());
        }
        if record.revoked_at.is_some() {
            return Err(unrecognized("The API key in the request has been revoked."));
        }
        if let Some(expires) = &record.expires_at {
            let expired = OffsetDateTime::parse(expires, &Rfc3339).map_or(true, |t| t <= now());
            if expired {
                return Err(unrecognized(&format!(
                    "The API key in the request expired at {expires}."
                )));
            }
        }
        Ok(record)
    }
}

/// The key ID a token names, if it has our shape.
fn id_of(token: &str) -> Option<String> {
    let encoded = token.strip_prefix(PREFIX)?;
    let inner = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let inner = String::from_utf8(inner).ok()?;
    let (name, _secret) = inner.split_once(':')?;
    let id = name.strip_prefix(NAME)?.strip_prefix('-')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(Arc::new(Store::in_memory().expect("store")))
    }

    #[test]
    fn a_created_key_verifies_and_a_changed_one_does_not() {
        let k = keys();
        let (record, token) = k.create(None).expect("created");
        assert!(token.starts_with("ABSK"));
        assert_eq!(k.verify(&token).expect("valid").id, record.id);
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            k.verify(&forged).map(|_| ()).expect_err("forged").code,
            ErrorCode::UnrecognizedClient
        );
        assert!(k.verify("ABSKnot-base64!").is_err());
        assert!(k.verify(&"A".repeat(4096)).is_err());
        assert!(!serde_json::to_string(&record)
            .expect("json")
            .contains(&token));
    }

    #[test]
    fn revoked_and_expired_keys_are_refused_with_the_reason() {
        let k = keys();
        let (record, token) = k.create(None).expect("created");
        k.revoke(&record.id).expect("revoked");
        let err = k.verify(&token).map(|_| ()).expect_err("revoked");
        assert!(err.message.contains("revoked"), "{}", err.message);

        let past = now() - time::Duration::seconds(1);
        let (_, old) = k.create(Some(past)).expect("created");
        let err = k.verify(&old).map(|_| ()).expect_err("expired");
        assert!(err.message.contains("expired"), "{}", err.message);
        assert!(matches!(k.revoke("nope"), Err(ApiKeyError::Unknown(_))));
        assert_eq!(k.list().expect("list").len(), 2);
    }

    #[test]
    fn a_policy_is_kept_with_the_key_and_can_be_replaced() {
        let k = keys();
        let policy = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"bedrock:*","Resource":"*"}]}"#,
        )
        .expect("policy");
        let (record, token) = k.create_with_policy(None, Some(&policy)).expect("created");
        assert!(matches!(
            k.verify(&token).expect("valid").access(),
            Access::Policy(_)
        ));
        k.set_policy(&record.id, None).expect("cleared");
        assert!(matches!(
            k.verify(&token).expect("valid").access(),
            Access::Unrestricted
        ));
        assert!(k
            .get(&record.id)
            .expect("read")
            .is_some_and(|r| r.policy.is_none()));
        assert!(matches!(
            k.set_policy("nope", Some(&policy)),
            Err(ApiKeyError::Unknown(_))
        ));
    }

    #[test]
    fn a_key_carries_its_account_and_a_bad_one_is_refused() {
        let k = keys();
        let (record, token) = k
            .create_in(Some("111111111111"), None, None)
            .expect("created");
        assert_eq!(record.account_id.as_deref(), Some("111111111111"));
        let verified = k.verify(&token).expect("valid");
        assert_eq!(verified.account_id.as_deref(), Some("111111111111"));
        assert!(matches!(verified.access(), Access::Unrestricted));
        let (plain, _) = k.create(None).expect("created");
        assert_eq!(plain.account_id, None);
        assert!(matches!(
            k.create_in(Some("not-an-account"), None, None),
            Err(ApiKeyError::Account(_))
        ));
        // Records stored before keys had accounts read as the server's account.
        let old: ApiKeyRecord = serde_json::from_value(serde_json::json!({
            "id": "abc", "sha256": "00", "createdAt": ""
        }))
        .expect("old record");
        assert_eq!(old.account_id, None);
        // An account edited into something else refuses every request of the key.
        let mut edited = old;
        edited.account_id = Some("*".into());
        assert!(matches!(edited.access(), Access::Unreadable(_)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Whatever follows "Bearer ", verification answers with an error, never a panic.
        #[test]
        fn any_bearer_token_is_answered(token in ".{0,600}", tail in "[A-Za-z0-9+/=]{0,120}") {
            let k = keys();
            proptest::prop_assert!(k.verify(&token).is_err());
            let shaped = format!("ABSK{tail}");
            proptest::prop_assert!(k.verify(&shaped).is_err());
        }
    }
}
