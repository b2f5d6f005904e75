//! Access keys: the root key (from the environment, or generated once into the
//! data directory) and further keys kept in `keys.json`. Files holding secrets
//! are written with mode 0600. A running server sees keys created or deleted by
//! `basalt keys` without a restart: the file is re-read when it changes.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

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

#[derive(Default, Serialize, Deserialize)]
struct KeysFile {
    keys: Vec<Credentials>,
}

const KEYS_FILE: &str = "keys.json";
const ROOT_FILE: &str = "root-key.json";

/// Secrets by access key ID, keyed by the file's (mtime, length) so that an edit
/// within one clock tick is still seen.
type KeyCache = (Option<(SystemTime, u64)>, HashMap<String, String>);

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
        if access_key_id == self.root.access_key_id {
            return Some(self.root.secret_access_key.clone());
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
        let map: HashMap<String, String> = file
            .keys
            .into_iter()
            .map(|k| (k.access_key_id, k.secret_access_key))
            .collect();
        let secret = map.get(access_key_id).cloned();
        if let Ok(mut cache) = self.cache.write() {
            *cache = (modified, map);
        }
        secret
    }

    pub fn create(&self) -> io::Result<Credentials> {
        let mut file = self.read_file()?;
        let creds = Credentials::generate();
        file.keys.push(creds.clone());
        self.write(&file)?;
        Ok(creds)
    }

    /// Access key IDs of the keys beside the root key.
    pub fn list(&self) -> io::Result<Vec<Credentials>> {
        Ok(self.read_file()?.keys)
    }

    /// Returns whether the key existed.
    pub fn delete(&self, access_key_id: &str) -> io::Result<bool> {
        let mut file = self.read_file()?;
        let before = file.keys.len();
        file.keys.retain(|k| k.access_key_id != access_key_id);
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
    fn debug_output_hides_the_secret() {
        let k = Credentials::generate();
        assert!(!format!("{k:?}").contains(&k.secret_access_key));
    }
}
