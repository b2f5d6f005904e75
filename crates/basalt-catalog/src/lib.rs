//! The model catalog: which local model serves a Bedrock model ID, and which
//! provider body format that ID speaks. IDs arrive as plain model IDs,
//! inference-profile IDs (`us.` and friends) or ARNs; all resolve here.
//!
//! Imported models (Custom Model Import, or `basalt models import`) join a running
//! catalog: each serves its own `imported-model/<id>` ARN, and may also take over one
//! catalog model ID (an image ID has no local model until one is imported).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use basalt_proto::BedrockError;
use serde::Deserialize;

/// The request and response body family of a model ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BodyFormat {
    /// Messages API, or legacy text completions when the body has `prompt`.
    Anthropic,
    TitanText,
    TitanEmbedV1,
    TitanEmbedV2,
    CohereEmbed,
    CohereCommandR,
    CohereCommand,
    Llama,
    /// Text completion, or chat when the body has `messages`.
    Mistral,
    Nova,
    /// Stability SDXL v1: `text_prompts`, answered with `artifacts`.
    StabilitySdxl,
    /// Stable Image Core / Ultra and SD3: `prompt` and `aspect_ratio`.
    StableImage,
    /// Titan Image Generator and Nova Canvas: `taskType` TEXT_IMAGE.
    TitanImage,
}

impl BodyFormat {
    pub fn is_embedding(self) -> bool {
        matches!(
            self,
            Self::TitanEmbedV1 | Self::TitanEmbedV2 | Self::CohereEmbed
        )
    }

    pub fn is_image(self) -> bool {
        matches!(
            self,
            Self::StabilitySdxl | Self::StableImage | Self::TitanImage
        )
    }

    /// The kind of local model that can serve this body.
    pub fn model_kind(self) -> LocalModelKind {
        if self.is_embedding() {
            LocalModelKind::Bert
        } else if self.is_image() {
            LocalModelKind::Diffusion
        } else {
            LocalModelKind::Gguf
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalModelKind {
    /// A llama.cpp text model.
    Gguf,
    /// A BERT sentence-embedding model directory (safetensors).
    Bert,
    /// A Stable Diffusion folder in the diffusers layout (safetensors).
    Diffusion,
}

impl LocalModelKind {
    /// The body an imported model of this kind is invoked with through its own ARN:
    /// Llama's for text (as Bedrock's Custom Model Import does), Titan's for the others.
    pub fn imported_format(self) -> BodyFormat {
        match self {
            Self::Gguf => BodyFormat::Llama,
            Self::Bert => BodyFormat::TitanEmbedV2,
            Self::Diffusion => BodyFormat::StabilitySdxl,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModel {
    pub kind: LocalModelKind,
    /// Relative to the model cache directory, or absolute.
    pub path: String,
    /// Text models: context window in tokens (0 = the model's own).
    #[serde(default)]
    pub context_window: u32,
    /// Embedding models: longest input in tokens.
    #[serde(default = "default_embed_tokens")]
    pub max_tokens: usize,
    /// Whether the model can read images.
    #[serde(default)]
    pub vision: bool,
}

fn default_embed_tokens() -> usize {
    256
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Family {
    prefix: String,
    provider: String,
    format: BodyFormat,
    /// Absent for families that only an imported model can serve (image models).
    local_model: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listed {
    id: String,
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Provisioned {
    name: String,
    model_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    local_models: BTreeMap<String, LocalModel>,
    families: Vec<Family>,
    #[serde(default)]
    models: Vec<Listed>,
    #[serde(default)]
    provisioned: Vec<Provisioned>,
}

/// A model ID resolved to what serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// The foundation-model ID (no profile prefix, no ARN).
    pub model_id: String,
    pub name: String,
    pub provider: String,
    pub format: BodyFormat,
    /// Key into [`Catalog::local_model`]; `None` until a model is imported for this ID.
    pub local_model: Option<String>,
}

impl ModelEntry {
    /// The local model that serves this ID, or the error Bedrock gives for a model the
    /// account cannot use, saying how to make it available here.
    pub fn local(&self) -> Result<&str, BedrockError> {
        self.local_model.as_deref().ok_or_else(|| {
            BedrockError::new(
                basalt_proto::ErrorCode::AccessDenied,
                format!(
                    "You don't have access to the model with the specified model ID. This server has no weights for {id}: import a model folder with `basalt models import --id {id} --from DIR` (or CreateModelImportJob), then retry.",
                    id = self.model_id
                ),
            )
        })
    }
}

/// A model imported into the model cache: it answers its own ARN
/// (`arn:aws:bedrock:REGION:ACCOUNT:imported-model/ID`) and, when `serves` is set, that
/// catalog model ID too.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedModel {
    /// 12 lowercase letters and digits, as Bedrock's imported-model IDs.
    pub id: String,
    pub name: String,
    pub serves: Option<String>,
    /// The account whose import job made it; `None` for `basalt models import`, whose
    /// models are the server account's.
    pub account: Option<String>,
    pub local: LocalModel,
}

impl ImportedModel {
    /// Its key among the catalog's local models.
    pub fn local_name(&self) -> String {
        format!("imported/{}", self.id)
    }
}

#[derive(Debug, Default)]
struct Imports {
    by_id: BTreeMap<String, ImportedModel>,
    /// Catalog model ID -> imported model ID.
    serving: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("catalog: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Catalog {
    local_models: BTreeMap<String, LocalModel>,
    families: Vec<Family>,
    listed: Vec<ModelEntry>,
    provisioned: BTreeMap<String, String>,
    /// Shared by every clone, so an import made while serving is seen everywhere.
    imports: Arc<RwLock<Imports>>,
}

/// Region groups of system-defined inference profiles.
const PROFILE_PREFIXES: &[&str] = &[
    "us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global.",
];

/// Longest model identifier Bedrock accepts.
const MAX_MODEL_ID_LEN: usize = 2048;

impl Catalog {
    /// The catalog built into the binary.
    pub fn builtin() -> Self {
        #[allow(clippy::expect_used)]
        Self::from_toml(include_str!("default-catalog.toml"))
            .expect("the built-in catalog is valid")
    }

    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text)?;
        for f in &file.families {
            let Some(local) = &f.local_model else {
                continue;
            };
            let Some(model) = file.local_models.get(local) else {
                return Err(CatalogError::Invalid(format!(
                    "family {} names unknown local model {local}",
                    f.prefix
                )));
            };
            if model.kind != f.format.model_kind() {
                return Err(CatalogError::Invalid(format!(
                    "family {} uses a {:?} body but local model {local} is {:?}",
                    f.prefix, f.format, model.kind
                )));
            }
        }
        let mut catalog = Self {
            local_models: file.local_models,
            families: file.families,
            listed: Vec::new(),
            provisioned: BTreeMap::new(),
            imports: Arc::default(),
        };
        for m in file.models {
            let Some(mut entry) = catalog.by_family(&m.id) else {
                return Err(CatalogError::Invalid(format!(
                    "model {} matches no family",
                    m.id
                )));
            };
            entry.name = m.name;
            catalog.listed.push(entry);
        }
        for p in file.provisioned {
            if catalog.by_family(&p.model_id).is_none() {
                return Err(CatalogError::Invalid(format!(
                    "provisioned model {} names unknown model {}",
                    p.name, p.model_id
                )));
            }
            catalog.provisioned.insert(p.name, p.model_id);
        }
        Ok(catalog)
    }

    /// The local models the catalog file names (imported ones are not among them).
    pub fn local_models(&self) -> &BTreeMap<String, LocalModel> {
        &self.local_models
    }

    /// A local model by name, the catalog file's or an imported one.
    pub fn local_model(&self, name: &str) -> Option<LocalModel> {
        if let Some(m) = self.local_models.get(name) {
            return Some(m.clone());
        }
        let id = name.strip_prefix("imported/")?;
        let imports = self.imports.read().ok()?;
        imports.by_id.get(id).map(|m| m.local.clone())
    }

    /// Adds an imported model. One that serves a catalog ID must be of the kind that ID's
    /// body needs, and replaces any earlier import serving it (whose ID is returned).
    pub fn attach(&self, model: ImportedModel) -> Result<Option<String>, CatalogError> {
        if let Some(id) = &model.serves {
            let Some(entry) = self.lookup(id) else {
                return Err(CatalogError::Invalid(format!(
                    "{id} is not a model ID this server offers (see `basalt models list`)"
                )));
            };
            if entry.format.model_kind() != model.local.kind {
                return Err(CatalogError::Invalid(format!(
                    "{id} needs a {:?} model ({:?} bodies), but the folder holds a {:?} model",
                    entry.format.model_kind(),
                    entry.format,
                    model.local.kind
                )));
            }
        }
        let mut imports = self
            .imports
            .write()
            .map_err(|_| CatalogError::Invalid("import table lock poisoned".into()))?;
        let replaced = match &model.serves {
            Some(serves) => imports.serving.insert(serves.clone(), model.id.clone()),
            None => None,
        };
        imports.by_id.insert(model.id.clone(), model);
        Ok(replaced)
    }

    /// Removes an imported model; returns it when it was there.
    pub fn detach(&self, id: &str) -> Option<ImportedModel> {
        let mut imports = self.imports.write().ok()?;
        let model = imports.by_id.remove(id)?;
        imports.serving.retain(|_, v| v != id);
        Some(model)
    }

    /// One imported model by its ID.
    pub fn imported_model(&self, id: &str) -> Option<ImportedModel> {
        self.imports.read().ok()?.by_id.get(id).cloned()
    }

    /// Every imported model, by ID.
    pub fn imported(&self) -> Vec<ImportedModel> {
        self.imports
            .read()
            .map(|i| i.by_id.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every local model name a request can reach: the catalog file's and the imported.
    pub fn local_model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.local_models.keys().cloned().collect();
        names.extend(self.imported().iter().map(ImportedModel::local_name));
        names
    }

    /// The entry with the imported model that serves its ID, if any.
    fn with_import(&self, mut entry: ModelEntry) -> ModelEntry {
        if let Ok(imports) = self.imports.read() {
            if let Some(id) = imports.serving.get(&entry.model_id) {
                entry.local_model = Some(format!("imported/{id}"));
            }
        }
        entry
    }

    /// Models shown by ListFoundationModels.
    pub fn listed(&self) -> &[ModelEntry] {
        &self.listed
    }

    fn by_family(&self, model_id: &str) -> Option<ModelEntry> {
        // The longest matching prefix wins, so `cohere.command-r` beats `cohere.command-`.
        let family = self
            .families
            .iter()
            .filter(|f| model_id.starts_with(&f.prefix))
            .max_by_key(|f| f.prefix.len())?;
        Some(ModelEntry {
            model_id: model_id.to_string(),
            name: model_id.to_string(),
            provider: family.provider.clone(),
            format: family.format,
            local_model: family.local_model.clone(),
        })
    }

    /// Only listed IDs resolve: Bedrock refuses IDs it does not offer, and so does Basalt.
    /// Families supply the settings; `[[models]]` entries in a config add IDs.
    fn lookup(&self, model_id: &str) -> Option<ModelEntry> {
        let entry = self
            .listed
            .iter()
            .find(|e| e.model_id == model_id)
            .cloned()?;
        Some(self.with_import(entry))
    }

    /// Resolves a (percent-decoded) `modelId` path label.
    /// The embedding model used where a request names none (RetrieveAndGenerate over
    /// EXTERNAL_SOURCES): Titan Text Embeddings V2 when listed, else the first.
    pub fn default_embedding_model(&self) -> Option<String> {
        let embedding = || self.listed.iter().filter(|e| e.format.is_embedding());
        embedding()
            .find(|e| e.format == BodyFormat::TitanEmbedV2)
            .or_else(|| embedding().next())
            .map(|e| e.model_id.clone())
    }

    pub fn resolve(&self, identifier: &str) -> Result<ModelEntry, BedrockError> {
        if identifier.is_empty() || identifier.len() > MAX_MODEL_ID_LEN {
            return Err(BedrockError::invalid_model_id());
        }
        if let Some(arn) = identifier.strip_prefix("arn:") {
            return self.resolve_arn(arn);
        }
        self.resolve_id(identifier)
    }

    fn resolve_id(&self, id: &str) -> Result<ModelEntry, BedrockError> {
        if let Some(entry) = self.lookup(id) {
            return Ok(entry);
        }
        PROFILE_PREFIXES
            .iter()
            .find_map(|p| id.strip_prefix(p))
            .and_then(|base| self.lookup(base))
            .ok_or_else(BedrockError::invalid_model_id)
    }

    /// `arn:aws:bedrock:REGION:ACCOUNT:RESOURCE-TYPE/NAME`, given without `arn:`.
    fn resolve_arn(&self, arn: &str) -> Result<ModelEntry, BedrockError> {
        let parts: Vec<&str> = arn.splitn(5, ':').collect();
        let [partition, service, _region, _account, resource] = parts.as_slice() else {
            return Err(BedrockError::invalid_model_id());
        };
        if !partition.starts_with("aws") || *service != "bedrock" {
            return Err(BedrockError::invalid_model_id());
        }
        let Some((kind, name)) = resource.split_once('/') else {
            return Err(BedrockError::invalid_model_id());
        };
        match kind {
            "foundation-model" => self.lookup(name).ok_or_else(BedrockError::invalid_model_id),
            "inference-profile" => self.resolve_id(name),
            "provisioned-model" => {
                let model_id = self.provisioned.get(name).ok_or_else(|| {
                    BedrockError::not_found(format!(
                        "The provisioned model {name} does not exist. Create it with CreateProvisionedModelThroughput or add it to the catalog."
                    ))
                })?;
                self.lookup(model_id)
                    .ok_or_else(BedrockError::invalid_model_id)
            }
            "imported-model" => self.imported_entry(&format!("arn:{arn}"), name),
            _ => Err(BedrockError::invalid_model_id()),
        }
    }

    fn imported_entry(&self, arn: &str, id: &str) -> Result<ModelEntry, BedrockError> {
        let imports = self
            .imports
            .read()
            .map_err(|_| BedrockError::internal("import table lock poisoned"))?;
        let model = imports.by_id.get(id).ok_or_else(|| {
            BedrockError::not_found(format!(
                "The imported model {id} does not exist. Import one with CreateModelImportJob or `basalt models import`."
            ))
        })?;
        Ok(ModelEntry {
            model_id: arn.to_string(),
            name: model.name.clone(),
            provider: "Imported".into(),
            format: model.local.kind.imported_format(),
            local_model: Some(model.local_name()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::builtin()
    }

    #[test]
    fn seed_ids_resolve_to_their_formats() {
        let c = catalog();
        let cases = [
            (
                "anthropic.claude-3-sonnet-20240229-v1:0",
                BodyFormat::Anthropic,
            ),
            ("amazon.titan-text-express-v1", BodyFormat::TitanText),
            ("amazon.titan-embed-text-v2:0", BodyFormat::TitanEmbedV2),
            ("amazon.titan-embed-text-v1", BodyFormat::TitanEmbedV1),
            ("meta.llama3-70b-instruct-v1:0", BodyFormat::Llama),
            ("mistral.mistral-large-2402-v1:0", BodyFormat::Mistral),
            ("cohere.command-r-plus-v1:0", BodyFormat::CohereCommandR),
            ("cohere.command-text-v14", BodyFormat::CohereCommand),
            ("cohere.embed-english-v3", BodyFormat::CohereEmbed),
            ("amazon.nova-micro-v1:0", BodyFormat::Nova),
        ];
        for (id, format) in cases {
            let e = c.resolve(id).expect(id);
            assert_eq!(e.format, format, "{id}");
            assert_eq!(e.model_id, id);
        }
    }

    #[test]
    fn unlisted_ids_of_a_family_resolve() {
        let e = catalog()
            .resolve("anthropic.claude-opus-4-1-20250805-v1:0")
            .expect("family");
        assert_eq!(e.format, BodyFormat::Anthropic);
    }

    #[test]
    fn inference_profiles_and_arns_unwrap() {
        let c = catalog();
        for id in [
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "global.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-5-sonnet-20241022-v2:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
        ] {
            let e = c.resolve(id).expect(id);
            assert_eq!(e.model_id, "anthropic.claude-3-5-sonnet-20241022-v2:0", "{id}");
        }
    }

    #[test]
    fn unknown_ids_get_bedrocks_error() {
        let c = catalog();
        for id in [
            "",
            "openai.gpt-9",
            "us.nothing",
            "arn:aws:s3:::bucket",
            "arn:aws:bedrock:x:y:foundation-model/nope",
        ] {
            let e = c.resolve(id).expect_err(id);
            assert_eq!(
                e.message, "The provided model identifier is invalid.",
                "{id}"
            );
        }
        assert!(c.resolve(&"a".repeat(3000)).is_err());
    }

    #[test]
    fn provisioned_models_resolve_when_configured() {
        let text = include_str!("default-catalog.toml").to_string()
            + "\n[[provisioned]]\nname = \"my-claude-capacity\"\nmodel_id = \"anthropic.claude-3-sonnet-20240229-v1:0\"\n";
        let c = Catalog::from_toml(&text).expect("catalog");
        let arn = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/my-claude-capacity";
        assert_eq!(
            c.resolve(arn).expect("provisioned").model_id,
            "anthropic.claude-3-sonnet-20240229-v1:0"
        );
        let missing = catalog().resolve(arn).expect_err("not provisioned");
        assert_eq!(missing.code, basalt_proto::ErrorCode::ResourceNotFound);
    }

    fn imported(id: &str, serves: Option<&str>, kind: LocalModelKind) -> ImportedModel {
        ImportedModel {
            id: id.into(),
            name: format!("model-{id}"),
            serves: serves.map(String::from),
            account: None,
            local: LocalModel {
                kind,
                path: format!("imported/{id}"),
                context_window: 0,
                max_tokens: 256,
                vision: false,
            },
        }
    }

    #[test]
    fn image_ids_resolve_but_have_no_model_until_one_is_imported() {
        let c = catalog();
        for (id, format) in [
            (
                "stability.stable-diffusion-xl-v1",
                BodyFormat::StabilitySdxl,
            ),
            ("stability.sd3-5-large-v1:0", BodyFormat::StableImage),
            ("stability.stable-image-core-v1:1", BodyFormat::StableImage),
            ("amazon.titan-image-generator-v2:0", BodyFormat::TitanImage),
            ("amazon.nova-canvas-v1:0", BodyFormat::TitanImage),
        ] {
            let e = c.resolve(id).expect(id);
            assert_eq!(e.format, format, "{id}");
            let err = e.local().expect_err(id);
            assert_eq!(err.code, basalt_proto::ErrorCode::AccessDenied);
            assert!(err.message.contains("basalt models import --id"), "{err:?}");
        }
        let sdxl = "stability.stable-diffusion-xl-v1";
        let clone = c.clone();
        assert_eq!(
            c.attach(imported(
                "abcdefghijk1",
                Some(sdxl),
                LocalModelKind::Diffusion
            ))
            .expect("attach"),
            None
        );
        // Clones share imports: a running server sees a model imported through the API.
        assert_eq!(
            clone.resolve(sdxl).expect("sdxl").local().expect("served"),
            "imported/abcdefghijk1"
        );
        assert_eq!(
            c.local_model("imported/abcdefghijk1").map(|m| m.kind),
            Some(LocalModelKind::Diffusion)
        );
        // A second import of the same ID takes over.
        let replaced = c
            .attach(imported(
                "abcdefghijk2",
                Some(sdxl),
                LocalModelKind::Diffusion,
            ))
            .expect("attach");
        assert_eq!(replaced.as_deref(), Some("abcdefghijk1"));
        assert_eq!(
            c.resolve(sdxl).expect("sdxl").local_model.as_deref(),
            Some("imported/abcdefghijk2")
        );
        c.detach("abcdefghijk2").expect("was there");
        assert!(c.resolve(sdxl).expect("sdxl").local().is_err());
    }

    #[test]
    fn an_import_of_the_wrong_kind_or_for_an_unknown_id_is_refused() {
        let c = catalog();
        let wrong = c.attach(imported(
            "abcdefghijk1",
            Some("stability.stable-diffusion-xl-v1"),
            LocalModelKind::Gguf,
        ));
        assert!(wrong.expect_err("kind").to_string().contains("Diffusion"));
        assert!(c
            .attach(imported(
                "abcdefghijk1",
                Some("openai.gpt-9"),
                LocalModelKind::Gguf
            ))
            .is_err());
        // A text model can take over a text ID.
        c.attach(imported(
            "abcdefghijk3",
            Some("anthropic.claude-3-haiku-20240307-v1:0"),
            LocalModelKind::Gguf,
        ))
        .expect("text import");
        assert_eq!(
            c.resolve("us.anthropic.claude-3-haiku-20240307-v1:0")
                .expect("profile")
                .local_model
                .as_deref(),
            Some("imported/abcdefghijk3")
        );
    }

    #[test]
    fn imported_model_arns_resolve_in_their_kinds_body() {
        let c = catalog();
        c.attach(imported("abcdefghijk1", None, LocalModelKind::Diffusion))
            .expect("attach");
        let arn = "arn:aws:bedrock:us-east-1:000000000000:imported-model/abcdefghijk1";
        let e = c.resolve(arn).expect("imported");
        assert_eq!(e.format, BodyFormat::StabilitySdxl);
        assert_eq!(e.model_id, arn);
        assert_eq!(e.local().expect("served"), "imported/abcdefghijk1");
        assert_eq!(c.local_model_names().len(), c.local_models().len() + 1);
        let missing = c
            .resolve("arn:aws:bedrock:us-east-1:000000000000:imported-model/zzzzzzzzzzzz")
            .expect_err("missing");
        assert_eq!(missing.code, basalt_proto::ErrorCode::ResourceNotFound);
    }

    #[test]
    fn a_family_pointing_at_the_wrong_kind_of_model_is_refused() {
        let text = include_str!("default-catalog.toml").replace(
            "format = \"cohere-embed\"\nlocal_model = \"minilm\"",
            "format = \"cohere-embed\"\nlocal_model = \"smollm2\"",
        );
        assert!(Catalog::from_toml(&text).is_err());
    }
}
