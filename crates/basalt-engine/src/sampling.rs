//! Token sampling over a logits vector: repeat penalty, temperature, top-k,
//! top-p and a seeded draw. Pure and allocation-light, so each request owns one
//! and it can be unit tested without a model.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling settings of one request, already validated by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// 0 disables it.
    pub top_k: u32,
    /// Same seed, same prompt and same settings give the same tokens.
    pub seed: Option<u64>,
    /// Penalty applied to the logits of recently produced tokens (1 disables it).
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_window: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 0,
            seed: None,
            // The 135M default model loops without a penalty (see docs/engine.md).
            repeat_penalty: 1.1,
            repeat_window: 64,
        }
    }
}

/// Candidates examined before falling back to a full sort for top-p.
const NUCLEUS_PREFILTER: usize = 256;

/// Draws tokens for one sequence.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    recent: Vec<u32>,
    scratch: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            recent: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Records a token that is part of the context (prompt or output), for the repeat penalty.
    pub fn observe(&mut self, token: u32) {
        if self.params.repeat_window == 0 {
            return;
        }
        if self.recent.len() == self.params.repeat_window {
            self.recent.remove(0);
        }
        self.recent.push(token);
    }

    /// Picks the next token from `logits` (one value per vocabulary entry).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.penalized(logits);
        if self.scratch.is_empty() {
            return 0;
        }
        if self.params.temperature <= 0.0 {
            return argmax(&self.scratch);
        }
        self.draw()
    }

    /// Picks the next token among those `allow` accepts (constrained decoding). The best
    /// few hundred candidates are checked first, as the model usually prefers an allowed
    /// token; when none of them is allowed, `all_allowed` lists every allowed token.
    /// `None` when nothing is allowed.
    pub fn sample_allowed(
        &mut self,
        logits: &[f32],
        mut allow: impl FnMut(u32) -> bool,
        all_allowed: impl FnOnce() -> Vec<u32>,
    ) -> Option<u32> {
        self.penalized(logits);
        let candidates = &mut self.scratch;
        if candidates.len() > NUCLEUS_PREFILTER {
            candidates.select_nth_unstable_by(NUCLEUS_PREFILTER - 1, by_logit_desc);
            candidates.truncate(NUCLEUS_PREFILTER);
        }
        candidates.sort_unstable_by(by_logit_desc);
        candidates.retain(|c| allow(c.0));
        if candidates.is_empty() {
            let allowed = all_allowed();
            self.penalized(logits);
            let keep: std::collections::HashSet<u32> = allowed.into_iter().collect();
            self.scratch.retain(|c| keep.contains(&c.0));
            self.scratch.sort_unstable_by(by_logit_desc);
        }
        if self.scratch.is_empty() {
            return None;
        }
        if self.params.temperature <= 0.0 {
            return Some(self.scratch[0].0);
        }
        Some(self.draw())
    }

    /// Fills the scratch list with (token, logit) after the repeat penalty.
    fn penalized(&mut self, logits: &[f32]) {
        let candidates = &mut self.scratch;
        candidates.clear();
        candidates.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let penalty = self.params.repeat_penalty;
        if penalty != 1.0 {
            for &token in &self.recent {
                if let Some(c) = candidates.get_mut(token as usize) {
                    // llama.cpp's convention: shrink positive logits, grow negative ones.
                    c.1 = if c.1 > 0.0 {
                        c.1 / penalty
                    } else {
                        c.1 * penalty
                    };
                }
            }
        }
    }

    /// A seeded draw from the scratch list under temperature, top-k and top-p.
    fn draw(&mut self) -> u32 {
        let candidates = &mut self.scratch;
        let k = self.params.top_k as usize;
        if k > 0 && k < candidates.len() {
            candidates.select_nth_unstable_by(k - 1, by_logit_desc);
            candidates.truncate(k);
        }
        let inv_t = 1.0 / self.params.temperature;
        let max = candidates
            .iter()
            .map(|c| c.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f32;
        for c in candidates.iter_mut() {
            c.1 = ((c.1 - max) * inv_t).exp();
            total += c.1;
        }
        if self.params.top_p < 1.0 {
            nucleus(candidates, self.params.top_p * total);
            total = candidates.iter().map(|c| c.1).sum();
        }
        let mut target = self.rng.random::<f32>() * total;
        for &(token, weight) in candidates.iter() {
            if target < weight {
                return token;
            }
            target -= weight;
        }
        candidates.last().map_or(0, |c| c.0)
    }
}

fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

fn argmax(candidates: &[(u32, f32)]) -> u32 {
    let mut best = candidates[0];
    for &c in &candidates[1..] {
        if c.1 > best.1 {
            best = c;
        }
    }
    best.0
}

/// Keeps the smallest set of highest-weight candidates whose mass reaches `mass`.
/// Sorting all 49k entries per token is costly, so try the top few hundred first.
fn nucleus(candidates: &mut Vec<(u32, f32)>, mass: f32) {
    if candidates.len() > NUCLEUS_PREFILTER {
        // Partition in place: the heaviest entries come first, in order.
        candidates.select_nth_unstable_by(NUCLEUS_PREFILTER - 1, by_logit_desc);
        candidates[..NUCLEUS_PREFILTER].sort_unstable_by(by_logit_desc);
        if let Some(cut) = cut_at_mass(&candidates[..NUCLEUS_PREFILTER], mass) {
            candidates.truncate(cut);
            return;
        }
    }
    candidates.sort_unstable_by(by_logit_desc);
    let cut = cut_at_mass(candidates, mass).unwrap_or(candidates.len());
    candidates.truncate(cut);
}

fn cut_at_mass(sorted: &[(u32, f32)], mass: f32) -> Option<usize> {
    let mut acc = 0.0;
    for (i, c) in sorted.iter().enumerate() {
        acc += c.1;
        if acc >= mass {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: u32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(7),
            repeat_penalty: 1.0,
            repeat_window: 0,
        }
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut s = Sampler::new(params(0.0, 1.0, 0));
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_even_when_hot() {
        let mut s = Sampler::new(params(5.0, 1.0, 1));
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9]), 1);
        }
    }

    #[test]
    fn top_p_excludes_the_tail() {
        // Token 0 holds ~88% of the mass, so top_p 0.5 leaves only it.
        let mut s = Sampler::new(params(1.0, 0.5, 0));
        let logits = [4.0, 2.0, 0.0, -1.0];
        for _ in 0..200 {
            assert_eq!(s.sample(&logits), 0);
        }
    }

    #[test]
    fn top_p_over_a_large_vocabulary_uses_the_prefilter_exactly() {
        let mut logits = vec![-10.0f32; 50_000];
        logits[123] = 10.0;
        logits[40_000] = 9.5;
        let mut s = Sampler::new(params(1.0, 0.9, 0));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            seen.insert(s.sample(&logits));
        }
        assert!(seen.iter().all(|t| *t == 123 || *t == 40_000), "{seen:?}");
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let mut a = Sampler::new(params(1.0, 0.95, 40));
        let mut b = Sampler::new(params(1.0, 0.95, 40));
        let da: Vec<u32> = (0..30).map(|_| a.sample(&logits)).collect();
        let db: Vec<u32> = (0..30).map(|_| b.sample(&logits)).collect();
        assert_eq!(da, db);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two tokens with logits ln(3) and 0: expect ~75% / 25%.
        let mut s = Sampler::new(params(1.0, 1.0, 0));
        let logits = [3.0f32.ln(), 0.0];
        let n = 4000;
        let zeros = (0..n).filter(|_| s.sample(&logits) == 0).count();
        let share = zeros as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.03, "share {share}");
    }

    #[test]
    fn repeat_penalty_demotes_recent_tokens() {
        let mut p = params(0.0, 1.0, 0);
        p.repeat_penalty = 2.0;
        p.repeat_window = 4;
        let mut s = Sampler::new(p);
        s.observe(0);
        // 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&[3.0, 2.0]), 1);
    }

    #[test]
    fn constrained_greedy_takes_the_best_allowed_token() {
        let mut s = Sampler::new(params(0.0, 1.0, 0));
        let picked = s.sample_allowed(&[0.1, 3.0, -2.0, 2.9], |t| t != 1, Vec::new);
        assert_eq!(picked, Some(3));
    }

    #[test]
    fn constrained_sampling_falls_back_to_the_full_allowed_list() {
        let mut logits = vec![5.0f32; 1000];
        logits[999] = -50.0;
        let mut s = Sampler::new(params(1.0, 0.9, 0));
        // Only token 999 is allowed, far outside the prefilter.
        let picked = s.sample_allowed(&logits, |t| t == 999, || vec![999]);
        assert_eq!(picked, Some(999));
        assert_eq!(s.sample_allowed(&logits, |_| false, Vec::new), None);
    }

    #[test]
    fn constrained_draws_never_leave_the_allowed_set() {
        let logits: Vec<f32> = (0..500).map(|i| (i % 11) as f32 * 0.2).collect();
        let mut s = Sampler::new(params(1.2, 0.95, 0));
        for _ in 0..300 {
            let t = s.sample_allowed(&logits, |t| t % 3 == 0, Vec::new);
            assert!(t.is_some_and(|t| t % 3 == 0));
        }
    }

    #[test]
    fn repeat_window_forgets_old_tokens() {
        let mut p = params(0.0, 1.0, 0);
        p.repeat_penalty = 2.0;
        p.repeat_window = 2;
        let mut s = Sampler::new(p);
        s.observe(0);
        s.observe(5);
        s.observe(6);
        assert_eq!(s.sample(&[3.0, 2.0]), 0);
    }
}
