//! Sampling-parameter validation shared by every family, with Bedrock's
//! constraint wording and each family's own member names.

use basalt_proto::BedrockError;

/// Longest accepted stop sequence list.
pub const MAX_STOP_SEQUENCES: usize = 64;
/// Longest accepted stop sequence, in bytes.
pub const MAX_STOP_SEQUENCE_LEN: usize = 512;
/// Most tokens one request may ask for.
pub const MAX_OUTPUT_TOKENS: i64 = 8192;

pub fn unit_interval(path: &str, value: Option<f64>) -> Result<Option<f32>, BedrockError> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) || v.is_nan() => Err(BedrockError::constraint(
            path,
            v,
            "Member must have value between 0 and 1",
        )),
        other => Ok(other.map(|v| v as f32)),
    }
}

pub fn max_tokens(path: &str, value: Option<i64>, default: u32) -> Result<u32, BedrockError> {
    match value {
        None => Ok(default),
        Some(v) if v < 1 => Err(BedrockError::constraint(
            path,
            v,
            "Member must have value greater than or equal to 1",
        )),
        Some(v) if v > MAX_OUTPUT_TOKENS => Err(BedrockError::constraint(
            path,
            v,
            &format!("Member must have value less than or equal to {MAX_OUTPUT_TOKENS}"),
        )),
        Some(v) => Ok(v as u32),
    }
}

/// A max-tokens member the family requires.
pub fn required_max_tokens(path: &str, value: Option<i64>) -> Result<u32, BedrockError> {
    let value = value.ok_or_else(|| BedrockError::missing(path))?;
    max_tokens(path, Some(value), 0)
}

pub fn top_k(path: &str, value: Option<i64>, max: i64) -> Result<u32, BedrockError> {
    match value {
        None => Ok(0),
        Some(v) if !(0..=max).contains(&v) => Err(BedrockError::constraint(
            path,
            v,
            &format!("Member must have value between 0 and {max}"),
        )),
        Some(v) => Ok(v as u32),
    }
}

pub fn stop_sequences(path: &str, value: Option<Vec<String>>) -> Result<Vec<String>, BedrockError> {
    let seqs = value.unwrap_or_default();
    if seqs.len() > MAX_STOP_SEQUENCES {
        return Err(BedrockError::constraint(
            path,
            format!("list of {} items", seqs.len()),
            &format!("Member must have length less than or equal to {MAX_STOP_SEQUENCES}"),
        ));
    }
    if let Some(long) = seqs.iter().find(|s| s.len() > MAX_STOP_SEQUENCE_LEN) {
        return Err(BedrockError::constraint(
            path,
            format!("{}...", long.chars().take(16).collect::<String>()),
            &format!("Member must have length less than or equal to {MAX_STOP_SEQUENCE_LEN}"),
        ));
    }
    Ok(seqs.into_iter().filter(|s| !s.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_outside_zero_one_is_refused_with_its_path() {
        let e = unit_interval("temperature", Some(5.0)).expect_err("too hot");
        assert!(e.message.contains("'temperature'"), "{}", e.message);
        assert_eq!(unit_interval("t", Some(0.5)).expect("ok"), Some(0.5));
        assert!(unit_interval("t", Some(f64::NAN)).is_err());
    }

    #[test]
    fn max_tokens_bounds() {
        assert!(max_tokens("max_tokens", Some(0), 1).is_err());
        assert!(max_tokens("max_tokens", Some(100_000), 1).is_err());
        assert_eq!(max_tokens("max_tokens", None, 512).expect("default"), 512);
    }

    #[test]
    fn stop_sequence_limits() {
        assert!(stop_sequences("s", Some(vec!["x".into(); 65])).is_err());
        assert!(stop_sequences("s", Some(vec!["x".repeat(600)])).is_err());
        assert_eq!(
            stop_sequences("s", Some(vec!["".into(), "a".into()])).expect("ok"),
            vec!["a"]
        );
    }
}
