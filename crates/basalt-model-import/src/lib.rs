//! Custom model import, the one path by which `basalt models import` and the bedrock API's
//! CreateModelImportJob put a user's model into the model cache.
//!
//! An import recognises the folder's kind (a diffusers Stable Diffusion folder, a GGUF text
//! model, or a BERT sentence-embedding folder), copies it into
//! `<models-dir>/imported/.staging-<id>/`, checks that the copy loads (every file, and for
//! diffusion and BERT every tensor shape), and only then renames it to
//! `<models-dir>/imported/<id>/` beside a `basalt-import.json` manifest. What is checked is
//! exactly what is served, and a failed import leaves nothing behind.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use basalt_catalog::{ImportedModel, LocalModel, LocalModelKind};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The folder under the model cache that holds imports.
pub const IMPORTED_DIR: &str = "imported";
const MANIFEST: &str = "basalt-import.json";
const STAGING_PREFIX: &str = ".staging-";

/// Limits on what one import copies: SDXL in f32 is about 14 GB and a few dozen files.
pub const MAX_IMPORT_BYTES: u64 = 64 << 30;
pub const MAX_IMPORT_FILES: usize = 10_000;
const MAX_DEPTH: usize = 8;

/// Why an import failed. Each message names the file and says what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    Unrecognised { path: PathBuf, message: String },
    /// The folder is of a known kind but does not load: a missing file or a wrong shape.
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    TooLarge(String),
    #[error("no imported model {0}")]
    NotFound(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where an import came from and what it is called.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Bedrock's `importedModelName`.
    pub name: String,
    /// A catalog model ID the import also serves (`basalt models import --id`).
    pub serves: Option<String>,
    /// The folder or `s3://` URI it was read from.
    pub source: String,
    pub job_name: Option<String>,
    pub job_arn: Option<String>,
}

/// What `basalt-import.json` records about one imported model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// 12 lowercase letters and digits, as in Bedrock's imported-model ARNs.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serves: Option<String>,
    /// `gguf`, `bert` or `diffusion`.
    pub kind: String,
    /// The model file or folder, relative to the model cache.
    pub path: String,
    /// Bedrock's `modelArchitecture`.
    pub architecture: String,
    pub created_ms: u64,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_arn: Option<String>,
}

impl Manifest {
    pub fn local_kind(&self) -> Option<LocalModelKind> {
        match self.kind.as_str() {
            "gguf" => Some(LocalModelKind::Gguf),
            "bert" => Some(LocalModelKind::Bert),
            "diffusion" => Some(LocalModelKind::Diffusion),
            _ => None,
        }
    }

    /// The catalog's view of this import.
    pub fn imported_model(&self) -> Option<ImportedModel> {
        Some(ImportedModel {
            id: self.id.clone(),
            name: self.name.clone(),
            serves: self.serves.clone(),
            // An ARN's fifth field is its account.
            account: self
                .job_arn
                .as_deref()
                .and_then(|arn| arn.split(':').nth(4))
                .filter(|account| !account.is_empty())
                .map(String::from),
            local: LocalModel {
                kind: self.local_kind()?,
                path: self.path.clone(),
                context_window: 0,
                max_tokens: 256,
                vision: false,
            },
        })
    }
}

fn kind_name(kind: LocalModelKind) -> &'static str {
    match kind {
        LocalModelKind::Gguf => "gguf",
        LocalModelKind::Bert => "bert",
        LocalModelKind::Diffusion => "diffusion",
    }
}

/// A new imported-model ID: 12 lowercase letters and digits.
pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// An `importedModelName` made from a model ID: Bedrock's pattern `([0-9a-zA-Z][_-]?)+`,
/// at most 63 characters.
pub fn name_for(model_id: &str) -> String {
    let mut name = String::new();
    for c in model_id.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let mut name: String = name.trim_end_matches('-').chars().take(63).collect();
    while name.ends_with('-') {
        name.pop();
    }
    if name.is_empty() {
        name.push_str("imported");
    }
    name
}

/// What kind of model a folder holds, its architecture name, and (for GGUF) the file.
pub fn detect(dir: &Path) -> Result<(LocalModelKind, String, Option<PathBuf>), ImportError> {
    let unrecognised = |message: &str| ImportError::Unrecognised {
        path: dir.to_path_buf(),
        message: message.to_string(),
    };
    if !dir.is_dir() {
        return Err(unrecognised(if dir.exists() {
            "not a folder"
        } else {
            "no such folder"
        }));
    }
    if dir.join("model_index.json").is_file() || dir.join("unet").is_dir() {
        let architecture = if dir.join("text_encoder_2").exists() {
            "StableDiffusionXL"
        } else {
            "StableDiffusion"
        };
        return Ok((LocalModelKind::Diffusion, architecture.into(), None));
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => return Ok((LocalModelKind::Gguf, "GGUF".into(), Some(one.clone()))),
        [] => {}
        _ => {
            return Err(unrecognised(
                "more than one .gguf file: import one at a time",
            ))
        }
    }
    let config = dir.join("config.json");
    if config.is_file() {
        let text = std::fs::read_to_string(&config).map_err(io(&config))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ImportError::Unrecognised {
                path: config.clone(),
                message: format!("not JSON: {e}"),
            })?;
        let model_type = v.get("model_type").and_then(|t| t.as_str()).unwrap_or("");
        if model_type == "bert" {
            return Ok((LocalModelKind::Bert, "BERT".into(), None));
        }
        return Err(ImportError::Unrecognised {
            path: config,
            message: format!(
                "model_type `{model_type}`: safetensors imports must be BERT sentence-embedding models; convert text models to GGUF"
            ),
        });
    }
    Err(unrecognised(
        "expected a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), one .gguf file, or a BERT folder (config.json, model.safetensors, tokenizer.json)",
    ))
}

/// Checks that a folder of `kind` loads: every file present, every tensor the right shape.
pub fn check(dir: &Path, kind: LocalModelKind, gguf: Option<&Path>) -> Result<(), ImportError> {
    match kind {
        LocalModelKind::Diffusion => basalt_diffusion::Pipeline::load(dir)
            .map(|_| ())
            .map_err(|e| ImportError::Invalid(e.to_string())),
        LocalModelKind::Bert => {
            basalt_engine::EmbeddingModel::load(&basalt_engine::EmbeddingModelConfig {
                dir: dir.to_path_buf(),
                max_tokens: 256,
                max_queue: 1,
            })
            .map(|_| ())
            .map_err(|e| ImportError::Invalid(e.to_string()))
        }
        LocalModelKind::Gguf => {
            let path = gguf.ok_or_else(|| ImportError::Invalid("no .gguf file".into()))?;
            let mut header = [0u8; 8];
            std::fs::File::open(path)
                .and_then(|mut f| f.read_exact(&mut header))
                .map_err(io(path))?;
            let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if &header[..4] != b"GGUF" || !(2..=3).contains(&version) {
                return Err(ImportError::Invalid(format!(
                    "{}: not a GGUF v2/v3 file",
                    path.display()
                )));
            }
            Ok(())
        }
    }
}

fn imported_root(models_dir: &Path) -> PathBuf {
    models_dir.join(IMPORTED_DIR)
}

/// The folder a new import with `id` is staged in; callers that fetch files themselves
/// (from S3) write here, then call [`finish`].
pub fn staging_dir(models_dir: &Path, id: &str) -> PathBuf {
    imported_root(models_dir).join(format!("{STAGING_PREFIX}{id}"))
}

/// Checks the staged folder and moves it into place with its manifest. On failure the
/// staged folder is removed.
pub fn finish(models_dir: &Path, id: &str, origin: Origin) -> Result<Manifest, ImportError> {
    let staged = staging_dir(models_dir, id);
    let result = finish_staged(models_dir, &staged, id, origin);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    result
}

fn finish_staged(
    models_dir: &Path,
    staged: &Path,
    id: &str,
    origin: Origin,
) -> Result<Manifest, ImportError> {
    let (kind, architecture, gguf) = detect(staged)?;
    check(staged, kind, gguf.as_deref())?;
    let relative = match &gguf {
        Some(file) => {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            format!("{IMPORTED_DIR}/{id}/{name}")
        }
        None => format!("{IMPORTED_DIR}/{id}"),
    };
    let manifest = Manifest {
        id: id.to_string(),
        name: origin.name,
        serves: origin.serves,
        kind: kind_name(kind).into(),
        path: relative,
        architecture,
        created_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        source: origin.source,
        job_name: origin.job_name,
        job_arn: origin.job_arn,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ImportError::Invalid(format!("manifest: {e}")))?;
    let manifest_path = staged.join(MANIFEST);
    std::fs::write(&manifest_path, text).map_err(io(&manifest_path))?;
    let target = imported_root(models_dir).join(id);
    std::fs::rename(staged, &target).map_err(io(&target))?;
    Ok(manifest)
}

/// Copies `from` into a new import, checks it, and records it.
pub fn import(from: &Path, models_dir: &Path, origin: Origin) -> Result<Manifest, ImportError> {
    // Refuse an unknown folder before copying gigabytes of it.
    detect(from)?;
    let id = new_id();
    let staged = staging_dir(models_dir, &id);
    std::fs::create_dir_all(&staged).map_err(io(&staged))?;
    let mut budget = Budget::default();
    if let Err(e) = copy_tree(from, &staged, 0, &mut budget) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e);
    }
    finish(models_dir, &id, origin)
}

/// What a copy may still take.
#[derive(Default)]
pub struct Budget {
    bytes: u64,
    files: usize,
}

impl Budget {
    /// Counts one more file of `size` bytes, refusing past the limits.
    pub fn take(&mut self, size: u64) -> Result<(), ImportError> {
        self.bytes = self.bytes.saturating_add(size);
        self.files += 1;
        if self.bytes > MAX_IMPORT_BYTES {
            return Err(ImportError::TooLarge(format!(
                "the model is larger than this server's import limit of {} GiB",
                MAX_IMPORT_BYTES >> 30
            )));
        }
        if self.files > MAX_IMPORT_FILES {
            return Err(ImportError::TooLarge(format!(
                "the model has more than {MAX_IMPORT_FILES} files"
            )));
        }
        Ok(())
    }
}

/// Copies regular files (following links, as model caches use them), skipping hidden ones.
fn copy_tree(from: &Path, to: &Path, depth: usize, budget: &mut Budget) -> Result<(), ImportError> {
    if depth > MAX_DEPTH {
        return Err(ImportError::TooLarge(format!(
            "{}: folders nest deeper than {MAX_DEPTH} levels",
            from.display()
        )));
    }
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let source = entry.path();
        let meta = std::fs::metadata(&source).map_err(io(&source))?;
        let target = to.join(&name);
        if meta.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
            copy_tree(&source, &target, depth + 1, budget)?;
        } else if meta.is_file() {
            budget.take(meta.len())?;
            std::fs::copy(&source, &target).map_err(io(&source))?;
        }
    }
    Ok(())
}

/// Every import in the cache; an unreadable manifest is skipped with a warning.
pub fn scan(models_dir: &Path) -> Vec<Manifest> {
    let root = imported_root(models_dir);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path().join(MANIFEST);
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()))
        {
            Ok(m) if m.id == name => found.push(m),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "import manifest names another folder; skipped")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable import manifest; skipped")
            }
        }
    }
    found.sort_by_key(|m| m.created_ms);
    found
}

/// Deletes an import's folder.
pub fn remove(models_dir: &Path, id: &str) -> Result<(), ImportError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ImportError::NotFound(id.to_string()));
    }
    let dir = imported_root(models_dir).join(id);
    if !dir.join(MANIFEST).is_file() {
        return Err(ImportError::NotFound(id.to_string()));
    }
    std::fs::remove_dir_all(&dir).map_err(io(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(dir: &Path) {
        basalt_diffusion::fixture::write_tiny_model(dir).expect("fixture");
    }

    fn origin(serves: Option<&str>) -> Origin {
        Origin {
            name: "my-model".into(),
            serves: serves.map(String::from),
            source: "/somewhere".into(),
            ..Origin::default()
        }
    }

    #[test]
    fn a_diffusers_folder_imports_and_is_listed() {
        let (from, models) = (
            tempfile::tempdir().expect("t"),
            tempfile::tempdir().expect("t"),
        );
        tiny(from.path());
        let m = import(
            from.path(),
            models.path(),
            origin(Some("stability.stable-diffusion-xl-v1")),
        )
        .expect("import");
        assert_eq!(m.kind, "diffusion");
        assert_eq!(m.architecture, "StableDiffusion");
        assert_eq!(m.id.len(), 12);
        assert_eq!(m.path, format!("imported/{}", m.id));
        assert!(models
            .path()
            .join(&m.path)
            .join("unet/config.json")
            .is_file());
        assert_eq!(scan(models.path()), vec![m.clone()]);
        let imported = m.imported_model().expect("kind");
        assert_eq!(imported.local.kind, LocalModelKind::Diffusion);
        assert_eq!(
            imported.serves.as_deref(),
            Some("stability.stable-diffusion-xl-v1")
        );
        remove(models.path(), &m.id).expect("remove");
        assert!(scan(models.path()).is_empty());
        assert!(matches!(
            remove(models.path(), &m.id),
            Err(ImportError::NotFound(_))
        ));
        assert!(matches!(
            remove(models.path(), "../x"),
            Err(ImportError::NotFound(_))
        ));
    }

    #[test]
    fn a_broken_folder_is_refused_with_the_file_named_and_nothing_left_behind() {
        let (from, models) = (
            tempfile::tempdir().expect("t"),
            tempfile::tempdir().expect("t"),
        );
        tiny(from.path());
        std::fs::remove_file(from.path().join("vae/diffusion_pytorch_model.safetensors"))
            .expect("rm");
        let err = import(from.path(), models.path(), origin(None)).expect_err("broken");
        assert!(
            err.to_string()
                .contains("vae/diffusion_pytorch_model.safetensors"),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(models.path().join(IMPORTED_DIR))
            .expect("dir")
            .collect();
        assert!(left.is_empty(), "staging folder left behind");
    }

    #[test]
    fn a_wrong_shape_is_named() {
        let (from, models) = (
            tempfile::tempdir().expect("t"),
            tempfile::tempdir().expect("t"),
        );
        tiny(from.path());
        let config = from.path().join("unet/config.json");
        let text = std::fs::read_to_string(&config).expect("read");
        std::fs::write(
            &config,
            text.replace(
                "\"block_out_channels\": [\n    32,",
                "\"block_out_channels\": [\n    64,",
            ),
        )
        .expect("write");
        let err = import(from.path(), models.path(), origin(None)).expect_err("shape");
        let message = err.to_string();
        assert!(
            message.contains("unet/diffusion_pytorch_model.safetensors"),
            "{message}"
        );
        assert!(message.contains("shape"), "{message}");
    }

    #[test]
    fn unknown_folders_and_bad_gguf_files_are_refused() {
        let dir = tempfile::tempdir().expect("t");
        let err = detect(dir.path()).expect_err("empty");
        assert!(err.to_string().contains("diffusers folder"), "{err}");
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama"}"#)
            .expect("write");
        assert!(detect(dir.path())
            .expect_err("llama")
            .to_string()
            .contains("GGUF"));
        std::fs::remove_file(dir.path().join("config.json")).expect("rm");
        std::fs::write(dir.path().join("m.gguf"), b"not a gguf").expect("write");
        let (kind, _, file) = detect(dir.path()).expect("gguf");
        assert_eq!(kind, LocalModelKind::Gguf);
        let err = check(dir.path(), kind, file.as_deref()).expect_err("magic");
        assert!(err.to_string().contains("not a GGUF"), "{err}");
        let mut good = b"GGUF".to_vec();
        good.extend_from_slice(&3u32.to_le_bytes());
        std::fs::write(dir.path().join("m.gguf"), good).expect("write");
        check(dir.path(), kind, file.as_deref()).expect("header");
    }

    #[test]
    fn names_follow_bedrocks_pattern() {
        assert_eq!(
            name_for("stability.stable-diffusion-xl-v1"),
            "stability-stable-diffusion-xl-v1"
        );
        assert_eq!(
            name_for("amazon.nova-canvas-v1:0"),
            "amazon-nova-canvas-v1-0"
        );
        assert_eq!(name_for(":::"), "imported");
        assert!(name_for(&"a".repeat(100)).len() <= 63);
        let id = new_id();
        assert!(
            id.len() == 12
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
