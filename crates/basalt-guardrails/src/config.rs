//! A guardrail's configuration, in the shapes of CreateGuardrail (`*Config` members)
//! and GetGuardrail (the same policies without the suffix), and its validation.
//! Every check names the member it refuses, in Bedrock's words.

use serde::{Deserialize, Serialize};

use crate::pii::PiiType;
use crate::GuardrailError;

/// BLOCK or NONE: what a topic, content filter, word or grounding filter does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Block,
    None,
}

/// BLOCK, ANONYMIZE or NONE: what a PII type or regex does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SensitiveAction {
    Block,
    Anonymize,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Strength {
    None,
    Low,
    Medium,
    High,
}

impl Strength {
    /// Whether a filter of this strength acts on a finding of `confidence`: HIGH acts
    /// from LOW confidence up, MEDIUM from MEDIUM, LOW only on HIGH, NONE never.
    pub fn catches(self, confidence: Strength) -> bool {
        match self {
            Self::None => false,
            Self::Low => confidence == Self::High,
            Self::Medium => confidence >= Self::Medium,
            Self::High => confidence >= Self::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContentCategory {
    Sexual,
    Violence,
    Hate,
    Insults,
    Misconduct,
    PromptAttack,
}

impl ContentCategory {
    pub const ALL: [ContentCategory; 6] = [
        Self::Hate,
        Self::Insults,
        Self::Sexual,
        Self::Violence,
        Self::Misconduct,
        Self::PromptAttack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sexual => "SEXUAL",
            Self::Violence => "VIOLENCE",
            Self::Hate => "HATE",
            Self::Insults => "INSULTS",
            Self::Misconduct => "MISCONDUCT",
            Self::PromptAttack => "PROMPT_ATTACK",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum GroundingType {
    Grounding,
    Relevance,
}

impl GroundingType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grounding => "GROUNDING",
            Self::Relevance => "RELEVANCE",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TopicType {
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ManagedWordsType {
    Profanity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Modality {
    Text,
    Image,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topic {
    pub name: String,
    pub definition: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    #[serde(rename = "type", default = "deny")]
    pub kind: TopicType,
    #[serde(flatten)]
    pub switches: Switches,
}

fn deny() -> TopicType {
    TopicType::Deny
}

/// The per-direction action and enablement every policy item carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Switches {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_action: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_action: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_enabled: Option<bool>,
}

impl Switches {
    /// The action in one direction: BLOCK unless set otherwise, and NONE when disabled.
    pub fn action(&self, source: Source) -> Action {
        let (action, enabled) = match source {
            Source::Input => (self.input_action, self.input_enabled),
            Source::Output => (self.output_action, self.output_enabled),
        };
        if enabled == Some(false) {
            return Action::None;
        }
        action.unwrap_or(Action::Block)
    }

    pub fn enabled(&self, source: Source) -> bool {
        match source {
            Source::Input => self.input_enabled != Some(false),
            Source::Output => self.output_enabled != Some(false),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentFilter {
    #[serde(rename = "type")]
    pub kind: ContentCategory,
    pub input_strength: Strength,
    pub output_strength: Strength,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_modalities: Option<Vec<Modality>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<Modality>>,
    #[serde(flatten)]
    pub switches: Switches,
}

impl ContentFilter {
    pub fn strength(&self, source: Source) -> Strength {
        match source {
            Source::Input => self.input_strength,
            Source::Output => self.output_strength,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Word {
    pub text: String,
    #[serde(flatten)]
    pub switches: Switches,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedWords {
    #[serde(rename = "type")]
    pub kind: ManagedWordsType,
    #[serde(flatten)]
    pub switches: Switches,
}

/// A PII type's action, kept as its Bedrock name so that an unknown type is refused
/// by validation with the member's path rather than by the JSON parser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PiiEntity {
    #[serde(rename = "type")]
    pub kind: String,
    pub action: SensitiveAction,
    #[serde(flatten)]
    pub switches: SensitiveSwitches,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexEntity {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub pattern: String,
    pub action: SensitiveAction,
    #[serde(flatten)]
    pub switches: SensitiveSwitches,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveSwitches {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_action: Option<SensitiveAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_action: Option<SensitiveAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_enabled: Option<bool>,
}

impl SensitiveSwitches {
    pub fn enabled(&self, source: Source) -> bool {
        match source {
            Source::Input => self.input_enabled != Some(false),
            Source::Output => self.output_enabled != Some(false),
        }
    }

    /// The direction's own action if set, else the entity's `action`; NONE when disabled.
    pub fn action(&self, source: Source, default: SensitiveAction) -> SensitiveAction {
        let (action, enabled) = match source {
            Source::Input => (self.input_action, self.input_enabled),
            Source::Output => (self.output_action, self.output_enabled),
        };
        if enabled == Some(false) {
            return SensitiveAction::None;
        }
        action.unwrap_or(default)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundingFilter {
    #[serde(rename = "type")]
    pub kind: GroundingType,
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl GroundingFilter {
    pub fn action(&self) -> Action {
        if self.enabled == Some(false) {
            return Action::None;
        }
        self.action.unwrap_or(Action::Block)
    }
}

/// The policies of one guardrail version, in GetGuardrail's naming.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_policy: Option<TopicPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_policy: Option<ContentPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_policy: Option<WordPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive_information_policy: Option<SensitivePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contextual_grounding_policy: Option<GroundingPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicPolicy {
    pub topics: Vec<Topic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentPolicy {
    pub filters: Vec<ContentFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WordPolicy {
    #[serde(default)]
    pub words: Vec<Word>,
    #[serde(default)]
    pub managed_word_lists: Vec<ManagedWords>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitivePolicy {
    #[serde(default)]
    pub pii_entities: Vec<PiiEntity>,
    #[serde(default)]
    pub regexes: Vec<RegexEntity>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundingPolicy {
    pub filters: Vec<GroundingFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<serde_json::Value>,
}

/// The CreateGuardrail / UpdateGuardrail body.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardrailRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    pub topic_policy_config: Option<TopicPolicyConfig>,
    pub content_policy_config: Option<ContentPolicyConfig>,
    pub word_policy_config: Option<WordPolicyConfig>,
    pub sensitive_information_policy_config: Option<SensitivePolicyConfig>,
    pub contextual_grounding_policy_config: Option<GroundingPolicyConfig>,
    pub automated_reasoning_policy_config: Option<serde_json::Value>,
    pub cross_region_config: Option<serde_json::Value>,
    pub blocked_input_messaging: Option<String>,
    pub blocked_outputs_messaging: Option<String>,
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<serde_json::Value>,
    pub client_request_token: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicPolicyConfig {
    pub topics_config: Option<Vec<Topic>>,
    pub tier_config: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentPolicyConfig {
    pub filters_config: Option<Vec<ContentFilter>>,
    pub tier_config: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WordPolicyConfig {
    pub words_config: Option<Vec<Word>>,
    pub managed_word_lists_config: Option<Vec<ManagedWords>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitivePolicyConfig {
    pub pii_entities_config: Option<Vec<PiiEntity>>,
    pub regexes_config: Option<Vec<RegexEntity>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundingPolicyConfig {
    pub filters_config: Option<Vec<GroundingFilter>>,
    pub tier_config: Option<serde_json::Value>,
}

/// INPUT (the prompt) or OUTPUT (the model's reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Source {
    Input,
    Output,
}

/// A validated CreateGuardrail / UpdateGuardrail request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub blocked_input_messaging: String,
    pub blocked_outputs_messaging: String,
    #[serde(flatten)]
    pub policies: Policies,
}

fn constraint(path: &str, value: impl std::fmt::Display, rule: &str) -> GuardrailError {
    GuardrailError::Invalid(format!(
        "1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: {rule}"
    ))
}

fn length(path: &str, value: &str, min: usize, max: usize) -> Result<(), GuardrailError> {
    let n = value.chars().count();
    if n < min || n > max {
        let rule = if n < min {
            format!("Member must have length greater than or equal to {min}")
        } else {
            format!("Member must have length less than or equal to {max}")
        };
        return Err(constraint(path, value, &rule));
    }
    Ok(())
}

fn count<T>(path: &str, items: &[T], min: usize, max: usize) -> Result<(), GuardrailError> {
    if items.len() < min || items.len() > max {
        return Err(GuardrailError::Invalid(format!(
            "1 validation error detected: Value at '{path}' failed to satisfy constraint: Member must have length between {min} and {max} (it has {}).",
            items.len()
        )));
    }
    Ok(())
}

fn required<'a, T>(path: &str, value: &'a Option<T>) -> Result<&'a T, GuardrailError> {
    value.as_ref().ok_or_else(|| {
        GuardrailError::Invalid(format!(
            "1 validation error detected: Value null at '{path}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

fn name_ok(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn topic_name_ok(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_ !?.".contains(c))
}

/// Checks a policy's `tierConfig` (`{"tierName": "CLASSIC" | "STANDARD"}`) and returns
/// it as GetGuardrail shows it. Both tiers are evaluated by the same embedding model
/// here; the member is kept so that clients read back what they set.
fn tier(
    path: &str,
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>, GuardrailError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(config) = value.as_object() else {
        return Err(GuardrailError::Invalid(format!(
            "{path}: expected an object with a tierName member."
        )));
    };
    if let Some(other) = config.keys().find(|k| *k != "tierName") {
        return Err(GuardrailError::Invalid(format!(
            "{path}: unknown member {other}; the only member is tierName."
        )));
    }
    let name_path = format!("{path}.tierName");
    let name = config.get("tierName").cloned();
    let name = required(&name_path, &name)?;
    match name.as_str() {
        Some(n @ ("CLASSIC" | "STANDARD")) => Ok(Some(serde_json::json!({"tierName": n}))),
        _ => Err(constraint(
            &name_path,
            name.as_str()
                .map_or_else(|| name.to_string(), str::to_string),
            "Member must satisfy enum value set: [CLASSIC, STANDARD]",
        )),
    }
}

/// Most regexes a guardrail may compile: each one runs over every text evaluated.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl GuardrailRequest {
    /// Checks every member and returns the definition to store.
    pub fn validate(self) -> Result<Definition, GuardrailError> {
        let name = required("name", &self.name)?.clone();
        length("name", &name, 1, 50)?;
        if !name_ok(&name) {
            return Err(constraint(
                "name",
                &name,
                "Member must satisfy regular expression pattern: [0-9a-zA-Z-_]+",
            ));
        }
        if let Some(d) = &self.description {
            length("description", d, 1, 200)?;
        }
        let input_msg = required("blockedInputMessaging", &self.blocked_input_messaging)?;
        length("blockedInputMessaging", input_msg, 1, 500)?;
        let output_msg = required("blockedOutputsMessaging", &self.blocked_outputs_messaging)?;
        length("blockedOutputsMessaging", output_msg, 1, 500)?;
        if self.automated_reasoning_policy_config.is_some() {
            return Err(GuardrailError::Invalid(
                "automatedReasoningPolicyConfig: automated reasoning policies are not supported by this server; remove the member.".into(),
            ));
        }
        if self.tags.len() > 200 {
            return Err(GuardrailError::TooManyTags);
        }
        let mut policies = Policies::default();

        if let Some(p) = self.topic_policy_config {
            let topics = required("topicPolicyConfig.topicsConfig", &p.topics_config)?;
            count("topicPolicyConfig.topicsConfig", topics, 1, 30)?;
            for (i, t) in topics.iter().enumerate() {
                let path = format!("topicPolicyConfig.topicsConfig.{}.member", i + 1);
                length(&format!("{path}.name"), &t.name, 1, 100)?;
                if !topic_name_ok(&t.name) {
                    return Err(constraint(
                        &format!("{path}.name"),
                        &t.name,
                        "Member must satisfy regular expression pattern: [0-9a-zA-Z-_ !?.]+",
                    ));
                }
                length(&format!("{path}.definition"), &t.definition, 1, 200)?;
                count(&format!("{path}.examples"), &t.examples, 0, 5)?;
                for (j, e) in t.examples.iter().enumerate() {
                    length(&format!("{path}.examples.{}.member", j + 1), e, 1, 100)?;
                }
            }
            policies.topic_policy = Some(TopicPolicy {
                topics: topics.clone(),
                tier: tier("topicPolicyConfig.tierConfig", p.tier_config)?,
            });
        }

        if let Some(p) = self.content_policy_config {
            let filters = required("contentPolicyConfig.filtersConfig", &p.filters_config)?;
            count("contentPolicyConfig.filtersConfig", filters, 1, 6)?;
            let mut seen = Vec::new();
            for (i, f) in filters.iter().enumerate() {
                let path = format!("contentPolicyConfig.filtersConfig.{}.member", i + 1);
                if seen.contains(&f.kind) {
                    return Err(GuardrailError::Invalid(format!(
                        "{path}.type: the content filter {} is configured twice.",
                        f.kind.as_str()
                    )));
                }
                seen.push(f.kind);
                if f.kind == ContentCategory::PromptAttack && f.output_strength != Strength::None {
                    return Err(GuardrailError::Invalid(format!(
                        "{path}.outputStrength: the PROMPT_ATTACK filter applies to input only, so its outputStrength must be NONE."
                    )));
                }
            }
            policies.content_policy = Some(ContentPolicy {
                filters: filters.clone(),
                tier: tier("contentPolicyConfig.tierConfig", p.tier_config)?,
            });
        }

        if let Some(p) = self.word_policy_config {
            let words = p.words_config.unwrap_or_default();
            let managed = p.managed_word_lists_config.unwrap_or_default();
            if words.len() > 10_000 {
                count("wordPolicyConfig.wordsConfig", &words, 1, 10_000)?;
            }
            for (i, w) in words.iter().enumerate() {
                let path = format!("wordPolicyConfig.wordsConfig.{}.member.text", i + 1);
                length(&path, &w.text, 1, 100)?;
                if w.text.trim().is_empty() {
                    return Err(GuardrailError::Invalid(format!(
                        "{path}: a blocked word must contain a letter or digit."
                    )));
                }
            }
            if words.is_empty() && managed.is_empty() {
                return Err(GuardrailError::Invalid(
                    "wordPolicyConfig: give wordsConfig, managedWordListsConfig, or both.".into(),
                ));
            }
            policies.word_policy = Some(WordPolicy {
                words,
                managed_word_lists: managed,
            });
        }

        if let Some(p) = self.sensitive_information_policy_config {
            let pii = p.pii_entities_config.unwrap_or_default();
            let regexes = p.regexes_config.unwrap_or_default();
            for (i, e) in pii.iter().enumerate() {
                if PiiType::parse(&e.kind).is_none() {
                    let all: Vec<&str> = PiiType::ALL.iter().map(|t| t.as_str()).collect();
                    return Err(constraint(
                        &format!(
                            "sensitiveInformationPolicyConfig.piiEntitiesConfig.{}.member.type",
                            i + 1
                        ),
                        &e.kind,
                        &format!("Member must satisfy enum value set: [{}]", all.join(", ")),
                    ));
                }
            }
            if regexes.len() > 10 {
                count(
                    "sensitiveInformationPolicyConfig.regexesConfig",
                    &regexes,
                    1,
                    10,
                )?;
            }
            for (i, r) in regexes.iter().enumerate() {
                let path = format!(
                    "sensitiveInformationPolicyConfig.regexesConfig.{}.member",
                    i + 1
                );
                length(&format!("{path}.name"), &r.name, 1, 100)?;
                length(&format!("{path}.pattern"), &r.pattern, 1, 500)?;
                if let Some(d) = &r.description {
                    length(&format!("{path}.description"), d, 1, 1000)?;
                }
                compile_regex(&r.pattern).map_err(|e| {
                    GuardrailError::Invalid(format!(
                        "{path}.pattern: the regular expression is invalid: {e}"
                    ))
                })?;
            }
            if pii.is_empty() && regexes.is_empty() {
                return Err(GuardrailError::Invalid(
                    "sensitiveInformationPolicyConfig: give piiEntitiesConfig, regexesConfig, or both.".into(),
                ));
            }
            policies.sensitive_information_policy = Some(SensitivePolicy {
                pii_entities: pii,
                regexes,
            });
        }

        if let Some(p) = self.contextual_grounding_policy_config {
            let filters = required(
                "contextualGroundingPolicyConfig.filtersConfig",
                &p.filters_config,
            )?;
            count(
                "contextualGroundingPolicyConfig.filtersConfig",
                filters,
                1,
                2,
            )?;
            for (i, f) in filters.iter().enumerate() {
                let path = format!(
                    "contextualGroundingPolicyConfig.filtersConfig.{}.member.threshold",
                    i + 1
                );
                if !(0.0..=0.99).contains(&f.threshold) {
                    return Err(constraint(
                        &path,
                        f.threshold,
                        "Member must be between 0 and 0.99",
                    ));
                }
            }
            policies.contextual_grounding_policy = Some(GroundingPolicy {
                filters: filters.clone(),
                tier: tier("contextualGroundingPolicyConfig.tierConfig", p.tier_config)?,
            });
        }

        Ok(Definition {
            name,
            description: self.description,
            blocked_input_messaging: input_msg.clone(),
            blocked_outputs_messaging: output_msg.clone(),
            policies,
        })
    }
}

/// Compiles a user's pattern with a size bound, so that one guardrail cannot make
/// every evaluation slow.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: serde_json::Value) -> GuardrailRequest {
        serde_json::from_value(body).expect("request parses")
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "name": "g1",
            "blockedInputMessaging": "no",
            "blockedOutputsMessaging": "no"
        })
    }

    #[test]
    fn minimal_config_is_valid() {
        let d = request(base()).validate().expect("valid");
        assert_eq!(d.name, "g1");
        assert_eq!(d.policies, Policies::default());
    }

    #[test]
    fn missing_blocked_messaging_names_the_member() {
        let err = request(serde_json::json!({"name": "g", "blockedInputMessaging": "x"}))
            .validate()
            .expect_err("refused");
        assert!(err.to_string().contains("blockedOutputsMessaging"), "{err}");
    }

    #[test]
    fn bad_name_is_refused_with_the_pattern() {
        let mut b = base();
        b["name"] = "has space".into();
        let err = request(b).validate().expect_err("refused");
        assert!(err.to_string().contains("[0-9a-zA-Z-_]+"), "{err}");
    }

    #[test]
    fn prompt_attack_on_output_is_refused() {
        let mut b = base();
        b["contentPolicyConfig"] = serde_json::json!({"filtersConfig": [
            {"type": "PROMPT_ATTACK", "inputStrength": "HIGH", "outputStrength": "HIGH"}]});
        let err = request(b).validate().expect_err("refused");
        assert!(err.to_string().contains("outputStrength"), "{err}");
    }

    #[test]
    fn unknown_pii_type_names_its_path() {
        let mut b = base();
        b["sensitiveInformationPolicyConfig"] = serde_json::json!({"piiEntitiesConfig": [
            {"type": "EMAIL", "action": "BLOCK"}, {"type": "SHOE_SIZE", "action": "BLOCK"}]});
        let err = request(b).validate().expect_err("refused");
        assert!(
            err.to_string()
                .contains("sensitiveInformationPolicyConfig.piiEntitiesConfig.2.member.type"),
            "{err}"
        );
    }

    #[test]
    fn invalid_regex_is_refused() {
        let mut b = base();
        b["sensitiveInformationPolicyConfig"] = serde_json::json!({"regexesConfig": [
            {"name": "r", "pattern": "(unclosed", "action": "BLOCK"}]});
        let err = request(b).validate().expect_err("refused");
        assert!(
            err.to_string().contains("regexesConfig.1.member.pattern"),
            "{err}"
        );
    }

    #[test]
    fn tier_configs_are_checked_and_kept() {
        let mut b = base();
        b["contentPolicyConfig"] = serde_json::json!({
            "filtersConfig": [{"type": "HATE", "inputStrength": "HIGH", "outputStrength": "HIGH"}],
            "tierConfig": {"tierName": "STANDARD"}});
        b["topicPolicyConfig"] = serde_json::json!({
            "topicsConfig": [{"name": "Tax", "definition": "Tax advice.", "type": "DENY"}],
            "tierConfig": {"tierName": "CLASSIC"}});
        let d = request(b.clone()).validate().expect("valid");
        let content = d.policies.content_policy.expect("content policy");
        assert_eq!(
            content.tier,
            Some(serde_json::json!({"tierName": "STANDARD"}))
        );
        let topics = d.policies.topic_policy.expect("topic policy");
        assert_eq!(
            topics.tier,
            Some(serde_json::json!({"tierName": "CLASSIC"}))
        );

        b["topicPolicyConfig"]["tierConfig"] = serde_json::json!({"tierName": "PREMIUM"});
        let err = request(b.clone()).validate().expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("topicPolicyConfig.tierConfig.tierName"),
            "{msg}"
        );
        assert!(msg.contains("[CLASSIC, STANDARD]"), "{msg}");

        b["topicPolicyConfig"]["tierConfig"] = serde_json::json!({});
        let err = request(b.clone()).validate().expect_err("refused");
        assert!(err.to_string().contains("Member must not be null"), "{err}");

        b["topicPolicyConfig"]["tierConfig"] = serde_json::json!({"tierName": "CLASSIC", "x": 1});
        let err = request(b.clone()).validate().expect_err("refused");
        assert!(err.to_string().contains("unknown member x"), "{err}");

        b["topicPolicyConfig"]["tierConfig"] = serde_json::json!("CLASSIC");
        let err = request(b).validate().expect_err("refused");
        assert!(
            err.to_string().contains("topicPolicyConfig.tierConfig"),
            "{err}"
        );
    }

    #[test]
    fn grounding_threshold_is_bounded() {
        let mut b = base();
        b["contextualGroundingPolicyConfig"] =
            serde_json::json!({"filtersConfig": [{"type": "GROUNDING", "threshold": 1.5}]});
        let err = request(b).validate().expect_err("refused");
        assert!(err.to_string().contains("threshold"), "{err}");
    }

    #[test]
    fn switches_default_to_block_and_disable_to_none() {
        let s = Switches::default();
        assert_eq!(s.action(Source::Input), Action::Block);
        let off = Switches {
            output_enabled: Some(false),
            ..Switches::default()
        };
        assert_eq!(off.action(Source::Output), Action::None);
        assert_eq!(off.action(Source::Input), Action::Block);
    }

    #[test]
    fn definition_round_trips_in_get_naming() {
        let mut b = base();
        b["topicPolicyConfig"] = serde_json::json!({"topicsConfig": [
            {"name": "Investments", "definition": "Advice on investing.", "type": "DENY"}]});
        let d = request(b).validate().expect("valid");
        let v = serde_json::to_value(&d).expect("serialises");
        assert_eq!(v["topicPolicy"]["topics"][0]["name"], "Investments");
        let back: Definition = serde_json::from_value(v).expect("parses");
        assert_eq!(back, d);
    }
}
