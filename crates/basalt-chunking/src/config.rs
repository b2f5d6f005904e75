//! `vectorIngestionConfiguration.chunkingConfiguration`, exactly as Bedrock
//! spells it, and its validation.
//!
//! Integers are `i64` so that an out-of-range number reaches [`ChunkingConfig::validate`]
//! (and its message naming the member) instead of failing deserialization.

use serde::{Deserialize, Serialize};

const PREFIX: &str = "vectorIngestionConfiguration.chunkingConfiguration";
/// Largest maxTokens Bedrock accepts at any level.
pub const MAX_TOKENS_LIMIT: i64 = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChunkingStrategy {
    FixedSize,
    None,
    Hierarchical,
    Semantic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkingConfig {
    pub chunking_strategy: ChunkingStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_size_chunking_configuration: Option<FixedSizeChunkingConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hierarchical_chunking_configuration: Option<HierarchicalChunkingConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_chunking_configuration: Option<SemanticChunkingConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedSizeChunkingConfiguration {
    pub max_tokens: i64,
    pub overlap_percentage: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HierarchicalChunkingConfiguration {
    /// Exactly two: the parent level, then the child level.
    pub level_configurations: Vec<HierarchicalChunkingLevelConfiguration>,
    pub overlap_tokens: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HierarchicalChunkingLevelConfiguration {
    pub max_tokens: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SemanticChunkingConfiguration {
    pub max_tokens: i64,
    pub buffer_size: i64,
    pub breakpoint_percentile_threshold: i64,
}

impl Default for ChunkingConfig {
    /// Bedrock's default when a data source names no chunking: 300 tokens, 20% overlap.
    fn default() -> Self {
        ChunkingConfig::fixed_size(300, 20)
    }
}

impl ChunkingConfig {
    pub fn fixed_size(max_tokens: i64, overlap_percentage: i64) -> Self {
        ChunkingConfig {
            chunking_strategy: ChunkingStrategy::FixedSize,
            fixed_size_chunking_configuration: Some(FixedSizeChunkingConfiguration {
                max_tokens,
                overlap_percentage,
            }),
            hierarchical_chunking_configuration: None,
            semantic_chunking_configuration: None,
        }
    }

    pub fn none() -> Self {
        ChunkingConfig {
            chunking_strategy: ChunkingStrategy::None,
            fixed_size_chunking_configuration: None,
            hierarchical_chunking_configuration: None,
            semantic_chunking_configuration: None,
        }
    }

    pub fn hierarchical(
        parent_max_tokens: i64,
        child_max_tokens: i64,
        overlap_tokens: i64,
    ) -> Self {
        ChunkingConfig {
            chunking_strategy: ChunkingStrategy::Hierarchical,
            hierarchical_chunking_configuration: Some(HierarchicalChunkingConfiguration {
                level_configurations: vec![
                    HierarchicalChunkingLevelConfiguration {
                        max_tokens: parent_max_tokens,
                    },
                    HierarchicalChunkingLevelConfiguration {
                        max_tokens: child_max_tokens,
                    },
                ],
                overlap_tokens,
            }),
            ..ChunkingConfig::none()
        }
    }

    pub fn semantic(
        max_tokens: i64,
        buffer_size: i64,
        breakpoint_percentile_threshold: i64,
    ) -> Self {
        ChunkingConfig {
            chunking_strategy: ChunkingStrategy::Semantic,
            semantic_chunking_configuration: Some(SemanticChunkingConfiguration {
                max_tokens,
                buffer_size,
                breakpoint_percentile_threshold,
            }),
            ..ChunkingConfig::none()
        }
    }

    /// Checks Bedrock's documented ranges; the message names the member.
    /// A configuration block for a strategy other than the chosen one is
    /// ignored, as it has no effect.
    pub fn validate(&self) -> Result<(), String> {
        match self.chunking_strategy {
            ChunkingStrategy::None => Ok(()),
            ChunkingStrategy::FixedSize => {
                let c = required(
                    &self.fixed_size_chunking_configuration,
                    "fixedSizeChunkingConfiguration",
                    "FIXED_SIZE",
                )?;
                let at = format!("{PREFIX}.fixedSizeChunkingConfiguration");
                range(c.max_tokens, 1, MAX_TOKENS_LIMIT, &at, "maxTokens")?;
                range(c.overlap_percentage, 1, 99, &at, "overlapPercentage")
            }
            ChunkingStrategy::Hierarchical => {
                let c = required(
                    &self.hierarchical_chunking_configuration,
                    "hierarchicalChunkingConfiguration",
                    "HIERARCHICAL",
                )?;
                let at = format!("{PREFIX}.hierarchicalChunkingConfiguration");
                if c.level_configurations.len() != 2 {
                    return Err(format!(
                        "{at}.levelConfigurations must have exactly 2 members (parent, then child); it has {}",
                        c.level_configurations.len()
                    ));
                }
                for (k, level) in c.level_configurations.iter().enumerate() {
                    range(
                        level.max_tokens,
                        1,
                        MAX_TOKENS_LIMIT,
                        &format!("{at}.levelConfigurations.{k}"),
                        "maxTokens",
                    )?;
                }
                if c.overlap_tokens < 1 {
                    return Err(format!("{at}.overlapTokens must be at least 1"));
                }
                Ok(())
            }
            ChunkingStrategy::Semantic => {
                let c = required(
                    &self.semantic_chunking_configuration,
                    "semanticChunkingConfiguration",
                    "SEMANTIC",
                )?;
                let at = format!("{PREFIX}.semanticChunkingConfiguration");
                range(c.max_tokens, 1, MAX_TOKENS_LIMIT, &at, "maxTokens")?;
                range(c.buffer_size, 0, 1, &at, "bufferSize")?;
                range(
                    c.breakpoint_percentile_threshold,
                    50,
                    99,
                    &at,
                    "breakpointPercentileThreshold",
                )
            }
        }
    }
}

fn required<'a, T>(c: &'a Option<T>, member: &str, strategy: &str) -> Result<&'a T, String> {
    c.as_ref()
        .ok_or_else(|| format!("{PREFIX}.{member} is required when chunkingStrategy is {strategy}"))
}

fn range(v: i64, lo: i64, hi: i64, at: &str, member: &str) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{at}.{member} must be between {lo} and {hi}; it is {v}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn from(v: serde_json::Value) -> ChunkingConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reads_bedrock_json_and_writes_it_back() {
        let v = json!({"chunkingStrategy":"FIXED_SIZE","fixedSizeChunkingConfiguration":{"maxTokens":300,"overlapPercentage":20}});
        let c = from(v.clone());
        assert_eq!(c, ChunkingConfig::default());
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
        let h = json!({"chunkingStrategy":"HIERARCHICAL","hierarchicalChunkingConfiguration":{
            "levelConfigurations":[{"maxTokens":1500},{"maxTokens":300}],"overlapTokens":60}});
        assert_eq!(from(h.clone()), ChunkingConfig::hierarchical(1500, 300, 60));
        assert_eq!(
            serde_json::to_value(ChunkingConfig::hierarchical(1500, 300, 60)).unwrap(),
            h
        );
        let s = json!({"chunkingStrategy":"SEMANTIC","semanticChunkingConfiguration":{
            "maxTokens":300,"bufferSize":0,"breakpointPercentileThreshold":95}});
        assert_eq!(from(s), ChunkingConfig::semantic(300, 0, 95));
        assert_eq!(
            from(json!({"chunkingStrategy":"NONE"})),
            ChunkingConfig::none()
        );
        assert!(
            serde_json::from_value::<ChunkingConfig>(json!({"chunkingStrategy":"WORDS"})).is_err()
        );
    }

    #[test]
    fn validation_names_the_member() {
        let cases = [
            (ChunkingConfig::fixed_size(0, 20), "vectorIngestionConfiguration.chunkingConfiguration.fixedSizeChunkingConfiguration.maxTokens must be between 1 and 8192; it is 0"),
            (ChunkingConfig::fixed_size(8193, 20), "fixedSizeChunkingConfiguration.maxTokens must be between 1 and 8192"),
            (ChunkingConfig::fixed_size(300, 0), "fixedSizeChunkingConfiguration.overlapPercentage must be between 1 and 99"),
            (ChunkingConfig::fixed_size(300, 100), "overlapPercentage must be between 1 and 99; it is 100"),
            (ChunkingConfig::hierarchical(1500, 0, 60), "hierarchicalChunkingConfiguration.levelConfigurations.1.maxTokens must be between 1 and 8192"),
            (ChunkingConfig::hierarchical(1500, 300, 0), "hierarchicalChunkingConfiguration.overlapTokens must be at least 1"),
            (ChunkingConfig::semantic(300, 2, 95), "semanticChunkingConfiguration.bufferSize must be between 0 and 1"),
            (ChunkingConfig::semantic(300, 0, 49), "semanticChunkingConfiguration.breakpointPercentileThreshold must be between 50 and 99"),
            (ChunkingConfig::semantic(-1, 0, 95), "semanticChunkingConfiguration.maxTokens must be between 1 and 8192; it is -1"),
        ];
        for (c, want) in cases {
            let e = c.validate().unwrap_err();
            assert!(e.contains(want), "{e} / {want}");
        }
        let mut one_level = ChunkingConfig::hierarchical(1500, 300, 60);
        if let Some(h) = one_level.hierarchical_chunking_configuration.as_mut() {
            h.level_configurations.pop();
        }
        assert!(one_level
            .validate()
            .unwrap_err()
            .contains("levelConfigurations must have exactly 2 members"));
        let missing = from(json!({"chunkingStrategy":"FIXED_SIZE"}));
        assert_eq!(
            missing.validate().unwrap_err(),
            "vectorIngestionConfiguration.chunkingConfiguration.fixedSizeChunkingConfiguration is required when chunkingStrategy is FIXED_SIZE"
        );
        for ok in [
            ChunkingConfig::default(),
            ChunkingConfig::none(),
            ChunkingConfig::fixed_size(1, 99),
            ChunkingConfig::hierarchical(8192, 1, 1),
            ChunkingConfig::semantic(8192, 1, 50),
        ] {
            ok.validate().unwrap();
        }
    }
}
