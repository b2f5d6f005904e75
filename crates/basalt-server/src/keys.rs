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

/// A key as stored: its credentials and, if it is restricted, its policy document.
#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    credentials: Credentials,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<serde_json::Value>,
}

#[derive(Default, Serialize, Deserialize)]
struct KeysFile {
    keys: Vec<StoredKey>,
}

/// A key the server knows: its secret and what it may do.
#[derive(Clone)]
pub struct KnownKey {
    pub secret: String,
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
                (
                    k.credentials.access_key_id,
                    KnownKey {
                        secret: k.credentials.secret_access_key,
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
        let mut file = self.read_file()?;
        let creds = Credentials::generate();
        file.keys.push(StoredKey {
            credentials: creds.clone(),
            policy: policy.map(|p| p.document().clone()),
        });
        self.write(&file)?;
        Ok(creds)
    }

    /// Access key IDs of the keys beside the root key.
    pub fn list(&self) -> io::Result<Vec<Credentials>> {
        Ok(self
            .read_file()?
            .keys
            .into_iter()
            .map(|k| k.credentials)
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
    fn debug_output_hides_the_secret() {
        let k = Credentials::generate();
        assert!(!format!("{k:?}").contains(&k.secret_access_key));
    }
}
