//! On-demand quotas per account and model: requests per minute and tokens per
//! minute, each a token bucket that holds one minute's allowance and refills
//! continuously. Tokens are counted as Bedrock counts them: a request reserves
//! its input tokens plus `max_tokens` when it starts, and gives back what it did
//! not use when it ends. Prompt tokens read from an explicit cache point do not
//! count, as on Bedrock's newer models. Requests made through a provisioned
//! model's ARN bypass these quotas.
//!
//! Defaults come from Bedrock's published per-model defaults, scaled to this
//! machine (see [`family_defaults`] and docs/capacity.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use basalt_catalog::ModelEntry;
use basalt_proto::{BedrockError, ErrorCode};

/// Bedrock's message for a request-rate throttle.
pub const TOO_MANY_REQUESTS: &str = "Too many requests, please wait before trying again.";
/// Bedrock's message for a token-rate throttle.
pub const TOO_MANY_TOKENS: &str = "Too many tokens, please wait before trying again.";

/// Text-generation token quotas are Bedrock's divided by this: it puts the smallest
/// published text default (300,000 TPM) at 6,000 tokens a minute, about what this
/// 2-core machine prefills in a minute (~105 tokens/s measured).
const TEXT_TPM_DIVISOR: u64 = 50;
/// Embedding token quotas are Bedrock's divided by this: the embedding model reads
/// ~50 sentences/s (roughly 60,000 tokens a minute) here.
const EMBED_TPM_DIVISOR: u64 = 5;

/// Limits configured on the command line; `None` keeps each family's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaSettings {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    /// No on-demand quotas at all.
    pub disabled: bool,
}

/// One model's per-minute limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: u64,
    pub tokens_per_minute: u64,
}

/// Bedrock's on-demand defaults (requests, tokens per minute) by model-ID prefix, as
/// its service-quota table listed them for us-east-1 (2024); the longest prefix wins.
const BEDROCK_DEFAULTS: &[(&str, u64, u64)] = &[
    ("anthropic.claude-3-haiku", 1_000, 2_000_000),
    ("anthropic.claude-3-5-haiku", 1_000, 2_000_000),
    ("anthropic.claude-haiku", 1_000, 2_000_000),
    ("anthropic.claude-3-sonnet", 500, 1_000_000),
    ("anthropic.claude-3-opus", 50, 400_000),
    ("anthropic.claude-opus", 50, 400_000),
    ("anthropic.claude-3-5-sonnet", 50, 400_000),
    ("anthropic.claude-3-7-sonnet", 250, 1_000_000),
    ("anthropic.claude-sonnet", 200, 500_000),
    ("anthropic.claude-v2", 500, 500_000),
    ("anthropic.claude-instant", 1_000, 1_000_000),
    ("amazon.titan-text-express", 400, 300_000),
    ("amazon.titan-text-lite", 800, 300_000),
    ("amazon.titan-text-premier", 100, 300_000),
    ("amazon.titan-tg1", 400, 300_000),
    ("amazon.titan-embed", 2_000, 300_000),
    ("amazon.nova-", 1_000, 2_000_000),
    ("meta.llama", 400, 300_000),
    ("meta.llama3-8b", 800, 300_000),
    ("meta.llama3-1-8b", 800, 300_000),
    ("mistral.", 400, 300_000),
    ("mistral.mistral-7b", 800, 300_000),
    ("mistral.mixtral", 400, 300_000),
    ("cohere.command", 400, 300_000),
    ("cohere.embed", 2_000, 300_000),
];
/// For IDs no row names (models added in a config file).
const FALLBACK: (u64, u64) = (400, 300_000);

/// The default limits of a model: Bedrock's requests per minute as they are (a short
/// request costs this server about what it costs Bedrock: it is the tokens that run
/// out here), and Bedrock's tokens per minute scaled to this machine.
pub fn family_defaults(entry: &ModelEntry) -> Limits {
    let (rpm, tpm) = BEDROCK_DEFAULTS
        .iter()
        .filter(|(prefix, _, _)| entry.model_id.starts_with(prefix))
        .max_by_key(|(prefix, _, _)| prefix.len())
        .map_or(FALLBACK, |(_, rpm, tpm)| (*rpm, *tpm));
    let divisor = if entry.format.is_embedding() {
        EMBED_TPM_DIVISOR
    } else {
        TEXT_TPM_DIVISOR
    };
    Limits {
        requests_per_minute: rpm,
        tokens_per_minute: tpm / divisor,
    }
}

/// A bucket holding up to one minute's allowance, refilled continuously.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    /// May go below zero when a request used more than it reserved.
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u64, now: Instant) -> Self {
        Self {
            capacity: per_minute as f64,
            level: per_minute as f64,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let seconds = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + seconds * self.capacity / 60.0).min(self.capacity);
        self.at = now;
    }
}

#[derive(Debug)]
struct Limiter {
    requests: Bucket,
    tokens: Bucket,
}

type Shared = Arc<Mutex<Limiter>>;

/// Every account's and model's buckets.
pub struct Quotas {
    settings: QuotaSettings,
    limiters: Mutex<HashMap<(String, String), Shared>>,
}

/// Tokens a running request holds against its model's quota. Settle it with what
/// the request used; dropped unsettled (the request failed or the client left), it
/// keeps the input and gives back the unused output allowance.
#[must_use]
pub struct Charge {
    limiter: Option<Shared>,
    reserved: u64,
    input: u64,
}

impl Charge {
    /// A request that no quota applies to (provisioned throughput, quotas off).
    pub fn free() -> Self {
        Self {
            limiter: None,
            reserved: 0,
            input: 0,
        }
    }

    fn give_back(&mut self, used: u64) {
        if let Some(limiter) = self.limiter.take() {
            if let Ok(mut l) = limiter.lock() {
                let now = Instant::now();
                l.tokens.refill(now);
                l.tokens.level += self.reserved as f64 - used as f64;
                l.tokens.level = l.tokens.level.min(l.tokens.capacity);
            }
        }
    }

    /// Records what the request used: prompt tokens computed (not read from a cache
    /// point) plus output tokens.
    pub fn settle(mut self, used: u64) {
        self.give_back(used);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let input = self.input;
        self.give_back(input);
    }
}

impl Quotas {
    pub fn new(settings: QuotaSettings) -> Self {
        Self {
            settings,
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// The limits that apply to a model.
    pub fn limits(&self, entry: &ModelEntry) -> Limits {
        let defaults = family_defaults(entry);
        Limits {
            requests_per_minute: self
                .settings
                .requests_per_minute
                .unwrap_or(defaults.requests_per_minute),
            tokens_per_minute: self
                .settings
                .tokens_per_minute
                .unwrap_or(defaults.tokens_per_minute),
        }
    }

    /// Admits one request of `input` prompt tokens that may write `max_output` more,
    /// or refuses it with ThrottlingException (over the rate now) or
    /// ServiceQuotaExceededException (bigger than a whole minute's token quota).
    pub fn admit(
        &self,
        account: &str,
        entry: &ModelEntry,
        input: u64,
        max_output: u64,
    ) -> Result<Charge, BedrockError> {
        if self.settings.disabled {
            return Ok(Charge::free());
        }
        let limits = self.limits(entry);
        let reserve = input.saturating_add(max_output);
        if reserve > limits.tokens_per_minute {
            return Err(BedrockError::new(
                ErrorCode::ServiceQuotaExceeded,
                format!(
                    "The request needs {reserve} tokens (input plus max tokens), more than this account's quota of {} tokens per minute for {}. Lower max tokens or shorten the input.",
                    limits.tokens_per_minute, entry.model_id
                ),
            ));
        }
        let limiter = {
            let mut all = self
                .limiters
                .lock()
                .map_err(|_| BedrockError::internal("quota table lock poisoned"))?;
            let now = Instant::now();
            Arc::clone(
                all.entry((account.to_string(), entry.model_id.clone()))
                    .or_insert_with(|| {
                        Arc::new(Mutex::new(Limiter {
                            requests: Bucket::new(limits.requests_per_minute, now),
                            tokens: Bucket::new(limits.tokens_per_minute, now),
                        }))
                    }),
            )
        };
        {
            let mut l = limiter
                .lock()
                .map_err(|_| BedrockError::internal("quota lock poisoned"))?;
            let now = Instant::now();
            l.requests.refill(now);
            l.tokens.refill(now);
            if l.requests.level < 1.0 {
                return Err(BedrockError::new(ErrorCode::Throttling, TOO_MANY_REQUESTS));
            }
            if l.tokens.level < reserve as f64 {
                return Err(BedrockError::new(ErrorCode::Throttling, TOO_MANY_TOKENS));
            }
            l.requests.level -= 1.0;
            l.tokens.level -= reserve as f64;
        }
        Ok(Charge {
            limiter: Some(limiter),
            reserved: reserve,
            input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_catalog::Catalog;

    fn entry(id: &str) -> ModelEntry {
        Catalog::builtin().resolve(id).expect(id)
    }

    fn quotas(rpm: u64, tpm: u64) -> Quotas {
        Quotas::new(QuotaSettings {
            requests_per_minute: Some(rpm),
            tokens_per_minute: Some(tpm),
            disabled: false,
        })
    }

    #[test]
    fn defaults_follow_the_family_scaled() {
        let haiku = family_defaults(&entry("anthropic.claude-3-haiku-20240307-v1:0"));
        assert_eq!(haiku.requests_per_minute, 1_000);
        assert_eq!(haiku.tokens_per_minute, 40_000);
        let titan = family_defaults(&entry("amazon.titan-text-express-v1"));
        assert_eq!(titan.tokens_per_minute, 6_000);
        let embed = family_defaults(&entry("amazon.titan-embed-text-v2:0"));
        assert_eq!(embed.tokens_per_minute, 60_000);
        let small_llama = family_defaults(&entry("meta.llama3-8b-instruct-v1:0"));
        assert_eq!(small_llama.requests_per_minute, 800, "longest prefix wins");
    }

    #[test]
    fn requests_over_the_rate_are_throttled() {
        let q = quotas(2, 1_000);
        let e = entry("amazon.titan-text-express-v1");
        q.admit("a", &e, 1, 1).expect("first").settle(2);
        q.admit("a", &e, 1, 1).expect("second").settle(2);
        let err = q.admit("a", &e, 1, 1).map(|_| ()).expect_err("third");
        assert_eq!(err.code, ErrorCode::Throttling);
        assert_eq!(err.message, TOO_MANY_REQUESTS);
        // Another account and another model have buckets of their own.
        q.admit("b", &e, 1, 1).expect("other account").settle(2);
        q.admit("a", &entry("amazon.titan-text-lite-v1"), 1, 1)
            .expect("other model")
            .settle(2);
    }

    #[test]
    fn tokens_are_reserved_then_given_back() {
        let q = quotas(100, 100);
        let e = entry("amazon.titan-text-express-v1");
        let held = q.admit("a", &e, 10, 60).expect("fits");
        let err = q.admit("a", &e, 10, 40).map(|_| ()).expect_err("reserved");
        assert_eq!(err.message, TOO_MANY_TOKENS);
        held.settle(15);
        q.admit("a", &e, 10, 40).expect("given back").settle(50);
        let err = q.admit("a", &e, 50, 51).map(|_| ()).expect_err("too big");
        assert_eq!(err.code, ErrorCode::ServiceQuotaExceeded);
    }

    #[test]
    fn dropped_charges_keep_only_the_input() {
        let q = quotas(100, 100);
        let e = entry("amazon.titan-text-express-v1");
        drop(q.admit("a", &e, 30, 60).expect("fits"));
        // 30 kept (plus a sliver of refill): 70 more fit, 80 do not.
        q.admit("a", &e, 0, 69).expect("fits").settle(0);
        let err = q.admit("a", &e, 0, 80).map(|_| ()).expect_err("input kept");
        assert_eq!(err.code, ErrorCode::Throttling);
    }

    #[test]
    fn buckets_refill_over_the_minute() {
        let mut b = Bucket::new(60, Instant::now());
        b.level = 0.0;
        let later = b.at + std::time::Duration::from_millis(2_500);
        b.refill(later);
        assert!((b.level - 2.5).abs() < 1e-9, "{}", b.level);
        b.refill(later + std::time::Duration::from_secs(3_600));
        assert_eq!(b.level, 60.0, "never above a minute's allowance");
    }

    #[test]
    fn disabled_quotas_admit_everything() {
        let q = Quotas::new(QuotaSettings {
            requests_per_minute: Some(0),
            tokens_per_minute: Some(0),
            disabled: true,
        });
        let e = entry("amazon.titan-text-express-v1");
        for _ in 0..10 {
            q.admit("a", &e, 1_000, 1_000).expect("no quota").settle(0);
        }
    }
}
