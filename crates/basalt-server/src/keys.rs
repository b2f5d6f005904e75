//! Access keys: the root key (from the environment, or generated once into the
//! data directory) and further keys kept in `keys.json`. Files holding secrets
//! are written with mode 0600. A running server sees keys created or deleted by
//! `basalt keys` without a restart: the file is re-read when it changes. A key may
//! carry an IAM-style policy (see `basalt-policy`); the root key never does.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

pub use basalt_policy::{Policy, PolicyError};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// An access key pair.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub created_at: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the secret, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A fresh random pair in AWS's shapes (20-character ID, 40-character secret).
    pub fn generate() -> Self {
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut rng = rand::rng();
        let pick = |set: &[u8], n: usize, rng: &mut rand::rngs::ThreadRng| -> String {
            (0..n)
                .map(|_| set[rng.random_range(0..set.len())] as char)
                .collect()
        };
        let id = format!("BSLT{}", pick(UPPER, 16, &mut rng));
        let secret = pick(SECRET, 40, &mut rng);
        Self {
            access_key_id: id,
            secret_access_key: secret,
            created_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }
}

/// What a key may do.
#[derive(Clone, Debug)]
pub enum Access {
    /// The root key, and keys without a policy.
    Unrestricted,
    /// What the policy allows.
    Policy(Arc<Policy>),
    /// A stored policy that no longer validates: nothing (fail closed), and why.
    Unreadable(String),
}

impl Access {
    /// The access a stored policy document grants.
    pub fn of(document: Option<&serde_json::Value>) -> Self {
        match document {
            None => Self::Unrestricted,
            Some(doc) => match Policy::from_document(doc.clone()) {
                Ok(policy) => Self::Policy(Arc::new(policy)),
                Err(e) => Self::Unreadable(e.to_string()),
            },
        }
    }
}

/// A key as stored: its credentials, its account (none: the server's `--account-id`,
/// as for files written before keys had accounts) and, if it is restricted, its policy
/// document.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    #[serde(flatten)]
    credentials: Credentials,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<serde_json::Value>,
}

/// An AWS account ID: exactly twelve ASCII digits.
pub fn valid_account_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

/// Checks an account ID given for a key.
pub fn check_account_id(value: &str) -> io::Result<()> {
    if valid_account_id(value) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the account ID must be 12 digits, not {value:?}"),
        ))
    }
}

/// A key beside the root key, as `basalt keys list` shows it.
#[derive(Clone, Debug)]
pub struct ListedKey {
    pub credentials: Credentials,
    /// None: the server's account.
    pub account_id: Option<String>,
    pub has_policy: bool,
}

#[derive(Default, Serialize, Deserialize)]
struct KeysFile {
    keys: Vec<StoredKey>,
}

/// A key the server knows: its secret, its account and what it may do.
#[derive(Clone)]
pub struct KnownKey {
    pub secret: String,
    /// None: the server's account (the root key, and keys stored without one).
    pub account: Option<String>,
    pub access: Access,
}

const KEYS_FILE: &str = "keys.json";
const ROOT_FILE: &str = "root-key.json";

/// Keys by access key ID, keyed by the file's (mtime, length) so that an edit
/// within one clock tick is still seen.
type KeyCache = (Option<(SystemTime, u64)>, HashMap<String, KnownKey>);

pub struct KeyStore {
    dir: PathBuf,
    root: Credentials,
    cache: RwLock<KeyCache>,
}

/// Where the root key came from.
pub enum RootSource {
    Environment,
    /// Generated now: the caller should show the export lines once.
    Generated,
    DataDir,
}

impl KeyStore {
    /// Opens the store in `data_dir`, taking the root key from `root` or the data dir,
    /// generating one on first use.
    pub fn open(data_dir: &Path, root: Option<Credentials>) -> io::Result<(Self, RootSource)> {
        fs::create_dir_all(data_dir)?;
        let (root, source) = match root {
            Some(root) => (root, RootSource::Environment),
            None => {
                let path = data_dir.join(ROOT_FILE);
                if path.exists() {
                    let root: Credentials =
                        serde_json::from_slice(&fs::read(&path)?).map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("{}: {e}", path.display()),
                            )
                        })?;
                    (root, RootSource::DataDir)
                } else {
                    let root = Credentials::generate();
                    write_private(
                        &path,
                        &serde_json::to_vec_pretty(&root).map_err(io::Error::other)?,
                    )?;
                    (root, RootSource::Generated)
                }
            }
        };
        let store = Self {
            dir: data_dir.to_path_buf(),
            root,
            cache: RwLock::new((None, HashMap::new())),
        };
        Ok((store, source))
    }

    pub fn root(&self) -> &Credentials {
        &self.root
    }

    fn keys_path(&self) -> PathBuf {
        self.dir.join(KEYS_FILE)
    }

    fn read_file(&self) -> io::Result<KeysFile> {
        match fs::read(self.keys_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.keys_path().display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(KeysFile::default()),
            Err(e) => Err(e),
        }
    }

    /// The secret for `access_key_id`, if the key exists.
    pub fn secret_for(&self, access_key_id: &str) -> Option<String> {
        self.lookup(access_key_id).map(|k| k.secret)
    }

    /// The key `access_key_id` names, if it exists, with what it may do.
    pub fn lookup(&self, access_key_id: &str) -> Option<KnownKey> {
        if access_key_id == self.root.access_key_id {
            return Some(KnownKey {
                secret: self.root.secret_access_key.clone(),
                account: None,
                access: Access::Unrestricted,
            });
        }
        let modified = fs::metadata(self.keys_path())
            .and_then(|m| Ok((m.modified()?, m.len())))
            .ok();
        {
            let cache = self.cache.read().ok()?;
            if cache.0 == modified {
                return cache.1.get(access_key_id).cloned();
            }
        }
        let file = self.read_file().ok()?;
        // Policies are validated once per change of the file, not per request.
        let map: HashMap<String, KnownKey> = file
            .keys
            .into_iter()
            .map(|k| {
                let access = Access::of(k.policy.as_ref());
                // An account edited into something that is not one refuses the key's
                // requests, as an unreadable policy does, rather than acting elsewhere.
                let access = match &k.account_id {
                    Some(a) if !valid_account_id(a) => {
                        Access::Unreadable(format!("the stored account ID {a:?} is not 12 digits"))
                    }
                    _ => access,
                };
                (
                    k.credentials.access_key_id,
                    KnownKey {
                        secret: k.credentials.secret_access_key,
                        account: k.account_id,
                        access,
                    },
                )
            })
            .collect();
        let key = map.get(access_key_id).cloned();
        if let Ok(mut cache) = self.cache.write() {
            *cache = (modified, map);
        }
        key
    }

    pub fn create(&self) -> io::Result<Credentials> {
        self.create_with_policy(None)
    }

    /// Creates a key that may do only what `policy` allows (anything, without one).
    pub fn create_with_policy(&self, policy: Option<&Policy>) -> io::Result<Credentials> {
        self.create_in(None, policy)
    }

    /// Creates a key of `account` (none: the server's) that may do only what `policy`
    /// allows (anything, without one).
    pub fn create_in(
        &self,
        account: Option<&str>,
        policy: Option<&Policy>,
    ) -> io::Result<Credentials> {
        if let Some(a) = account {
            check_account_id(a)?;
        }
        let mut file = self.read_file()?;
        let creds = Credentials::generate();
        file.keys.push(StoredKey {
            credentials: creds.clone(),
            account_id: account.map(str::to_string),
            policy: policy.map(|p| p.document().clone()),
        });
        self.write(&file)?;
        Ok(creds)
    }

    /// The keys beside the root key.
    pub fn list(&self) -> io::Result<Vec<ListedKey>> {
        Ok(self
            .read_file()?
            .keys
            .into_iter()
            .map(|k| ListedKey {
                credentials: k.credentials,
                account_id: k.account_id,
                has_policy: k.policy.is_some(),
            })
            .collect())
    }

    /// The policy document of key `access_key_id`: `None` if there is no such key,
    /// `Some(None)` if it is unrestricted.
    pub fn policy(&self, access_key_id: &str) -> io::Result<Option<Option<serde_json::Value>>> {
        Ok(self
            .read_file()?
            .keys
            .into_iter()
            .find(|k| k.credentials.access_key_id == access_key_id)
            .map(|k| k.policy))
    }

    /// Sets (or, with `None`, removes) a key's policy; returns whether the key exists.
    /// The root key is not in the file, so it cannot be restricted.
    pub fn set_policy(&self, access_key_id: &str, policy: Option<&Policy>) -> io::Result<bool> {
        let mut file = self.read_file()?;
        let Some(key) = file
            .keys
            .iter_mut()
            .find(|k| k.credentials.access_key_id == access_key_id)
        else {
            return Ok(false);
        };
        key.policy = policy.map(|p| p.document().clone());
        self.write(&file)?;
        Ok(true)
    }

    /// Returns whether the key existed.
    pub fn delete(&self, access_key_id: &str) -> io::Result<bool> {
        let mut file = self.read_file()?;
        let before = file.keys.len();
        file.keys
            .retain(|k| k.credentials.access_key_id != access_key_id);
        if file.keys.len() == before {
            return Ok(false);
        }
        self.write(&file)?;
        Ok(true)
    }

    fn write(&self, file: &KeysFile) -> io::Result<()> {
        write_private(
            &self.keys_path(),
            &serde_json::to_vec_pretty(file).map_err(io::Error::other)?,
        )
    }
}

/// Writes a file only its owner can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("basalt-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn root_key_is_generated_once_with_private_permissions() {
        let dir = temp_dir("root");
        let (a, source) = KeyStore::open(&dir, None).expect("open");
        assert!(matches!(source, RootSource::Generated));
        let (b, source) = KeyStore::open(&dir, None).expect("reopen");
        assert!(matches!(source, RootSource::DataDir));
        assert_eq!(a.root().access_key_id, b.root().access_key_id);
        let mode = fs::metadata(dir.join(ROOT_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(a.root().access_key_id.len(), 20);
        assert_eq!(a.root().secret_access_key.len(), 40);
    }

    #[test]
    fn created_keys_are_seen_and_deleted_keys_are_gone() {
        let dir = temp_dir("crud");
        let (store, _) = KeyStore::open(&dir, None).expect("open");
        let k = store.create().expect("create");
        assert_eq!(
            store.secret_for(&k.access_key_id),
            Some(k.secret_access_key.clone())
        );
        assert!(store.delete(&k.access_key_id).expect("delete"));
        // The cache keys on the file's mtime, which may not tick within a test; re-open.
        let (fresh, _) = KeyStore::open(&dir, None).expect("open");
        assert_eq!(fresh.secret_for(&k.access_key_id), None);
        assert!(!store.delete("nope").expect("delete"));
    }

    #[test]
    fn policies_are_kept_set_and_cleared() {
        let dir = temp_dir("policy");
        let (store, _) = KeyStore::open(&dir, None).expect("open");
        let plain = store.create().expect("create");
        let policy = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"bedrock:ListFoundationModels","Resource":"*"}]}"#,
        )
        .expect("policy");
        let limited = store.create_with_policy(Some(&policy)).expect("create");
        assert!(matches!(
            store.lookup(&plain.access_key_id).map(|k| k.access),
            Some(Access::Unrestricted)
        ));
        let Some(Access::Policy(p)) = store.lookup(&limited.access_key_id).map(|k| k.access) else {
            panic!("the key should carry its policy");
        };
        assert_eq!(
            p.evaluate("bedrock:InvokeModel", "*"),
            basalt_policy::Decision::ImplicitDeny
        );
        assert!(store
            .policy(&limited.access_key_id)
            .expect("read")
            .is_some_and(|p| p.is_some()));
        assert!(store
            .set_policy(&limited.access_key_id, None)
            .expect("clear"));
        assert_eq!(
            store.policy(&limited.access_key_id).expect("read"),
            Some(None)
        );
        assert!(store
            .set_policy(&plain.access_key_id, Some(&policy))
            .expect("set"));
        assert!(!store
            .set_policy(&store.root().access_key_id.clone(), Some(&policy))
            .expect("root"));
        assert!(!store.set_policy("nope", None).expect("unknown"));
        let (fresh, _) = KeyStore::open(&dir, None).expect("open");
        assert!(matches!(
            fresh.lookup(&plain.access_key_id).map(|k| k.access),
            Some(Access::Policy(_))
        ));
        assert!(matches!(
            fresh
                .lookup(&fresh.root().access_key_id.clone())
                .map(|k| k.access),
            Some(Access::Unrestricted)
        ));
        // Files written before policies existed still read.
        assert!(!fs::read_to_string(dir.join(KEYS_FILE))
            .expect("file")
            .is_empty());
    }

    #[test]
    fn a_stored_policy_that_no_longer_validates_denies_everything() {
        let broken = serde_json::json!({"Statement": [{"Effect": "Maybe"}]});
        assert!(matches!(Access::of(Some(&broken)), Access::Unreadable(_)));
        assert!(matches!(Access::of(None), Access::Unrestricted));
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(valid_account_id("123456789012"));
        assert!(valid_account_id("000000000000"));
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "12345678901a",
            "١٢٣٤٥٦٧٨٩٠١٢",
            " 23456789012",
        ] {
            assert!(!valid_account_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn keys_carry_their_account_and_old_files_read_as_the_servers() {
        let dir = temp_dir("accounts");
        let (store, _) = KeyStore::open(&dir, None).expect("open");
        let other = store.create_in(Some("111111111111"), None).expect("create");
        let plain = store.create().expect("create");
        assert!(store.create_in(Some("1234"), None).is_err());
        assert_eq!(
            store
                .lookup(&other.access_key_id)
                .and_then(|k| k.account)
                .as_deref(),
            Some("111111111111")
        );
        assert_eq!(
            store.lookup(&plain.access_key_id).and_then(|k| k.account),
            None
        );
        assert_eq!(
            store
                .lookup(&store.root().access_key_id.clone())
                .and_then(|k| k.account),
            None
        );
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].account_id.as_deref(), Some("111111111111"));
        assert!(!listed[0].has_policy);

        // A file written before keys had accounts: no accountId, the server's account.
        let old = serde_json::json!({"keys": [{
            "accessKeyId": "BSLTOLDKEY0000000000",
            "secretAccessKey": "s".repeat(40),
            "createdAt": ""
        }]});
        fs::write(dir.join(KEYS_FILE), old.to_string()).expect("write");
        let (fresh, _) = KeyStore::open(&dir, None).expect("open");
        let key = fresh.lookup("BSLTOLDKEY0000000000").expect("found");
        assert_eq!(key.account, None);
        assert!(matches!(key.access, Access::Unrestricted));

        // An account edited into something else refuses the key, not a wider account.
        let edited = serde_json::json!({"keys": [{
            "accessKeyId": "BSLTEDITED0000000000",
            "secretAccessKey": "s".repeat(40),
            "accountId": "*"
        }]});
        fs::write(dir.join(KEYS_FILE), edited.to_string()).expect("write");
        let (fresh, _) = KeyStore::open(&dir, None).expect("open");
        assert!(matches!(
            fresh.lookup("BSLTEDITED0000000000").map(|k| k.access),
            Some(Access::Unreadable(_))
        ));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let k = Credentials::generate();
        assert!(!format!("{k:?}").contains(&k.secret_access_key));
    }
}
