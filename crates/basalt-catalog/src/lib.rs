//! The model catalog: which local model serves a Bedrock model ID, and which
//! provider body format that ID speaks. IDs arrive as plain model IDs,
//! inference-profile IDs (`us.` and friends) or ARNs; all resolve here.

use std::collections::BTreeMap;

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
}

impl BodyFormat {
    pub fn is_embedding(self) -> bool {
        matches!(
            self,
            Self::TitanEmbedV1 | Self::TitanEmbedV2 | Self::CohereEmbed
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalModelKind {
    /// A llama.cpp text model.
    Gguf,
    /// A BERT sentence-embedding model directory (safetensors).
    Bert,
}

#[derive(Debug, Clone, Deserialize)]
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
    local_model: String,
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
    /// Key into [`Catalog::local_models`].
    pub local_model: String,
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
            if !file.local_models.contains_key(&f.local_model) {
                return Err(CatalogError::Invalid(format!(
                    "family {} names unknown local model {}",
                    f.prefix, f.local_model
                )));
            }
            let kind = file.local_models[&f.local_model].kind;
            if (kind == LocalModelKind::Bert) != f.format.is_embedding() {
                return Err(CatalogError::Invalid(format!(
                    "family {} uses a {:?} body but local model {} is {:?}",
                    f.prefix, f.format, f.local_model, kind
                )));
            }
        }
        let mut catalog = Self {
            local_models: file.local_models,
            families: file.families,
            listed: Vec::new(),
            provisioned: BTreeMap::new(),
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

    pub fn local_models(&self) -> &BTreeMap<String, LocalModel> {
        &self.local_models
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
        self.listed.iter().find(|e| e.model_id == model_id).cloned()
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
            _ => Err(BedrockError::invalid_model_id()),
        }
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

    #[test]
    fn a_family_pointing_at_the_wrong_kind_of_model_is_refused() {
        let text = include_str!("default-catalog.toml").replace(
            "format = \"cohere-embed\"\nlocal_model = \"minilm\"",
            "format = \"cohere-embed\"\nlocal_model = \"smollm2\"",
        );
        assert!(Catalog::from_toml(&text).is_err());
    }
}
