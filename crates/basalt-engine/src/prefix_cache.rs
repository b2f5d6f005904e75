//! Which KV-cache sequences hold reusable prompt prefixes. Pure bookkeeping:
//! the scheduler owns the llama.cpp context and carries out the removals this
//! returns.
//!
//! Entries are either explicit (a caller's cache point: a prefix kept on
//! purpose) or automatic (the state a finished request left behind, so a later
//! request sharing its system prompt or conversation skips that prefill). Both
//! share one token budget with least-recently-used eviction.

/// One kept prefix.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The llama.cpp sequence id whose KV cells hold it.
    pub seq: i32,
    pub tokens: Vec<i32>,
    pub explicit: bool,
    last_used: u64,
}

/// A reusable prefix for a new prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reuse {
    pub seq: i32,
    /// Leading prompt tokens whose KV state can be copied.
    pub tokens: usize,
}

pub(crate) struct PrefixCache {
    entries: Vec<Entry>,
    budget_tokens: usize,
    clock: u64,
}

impl PrefixCache {
    pub fn new(budget_tokens: usize) -> Self {
        Self {
            entries: Vec::new(),
            budget_tokens,
            clock: 0,
        }
    }

    pub fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry sharing the longest prefix with `prompt`. At most `prompt.len() - 1`
    /// tokens are reused, because the last prompt token must be decoded to get logits.
    pub fn longest_match(&mut self, prompt: &[i32]) -> Option<Reuse> {
        let usable = prompt.len().saturating_sub(1);
        let best = self
            .entries
            .iter_mut()
            .map(|e| {
                let n = common_prefix(&e.tokens, prompt).min(usable);
                (n, e)
            })
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, _)| *n)?;
        self.clock += 1;
        best.1.last_used = self.clock;
        Some(Reuse {
            seq: best.1.seq,
            tokens: best.0,
        })
    }

    /// Whether an explicit entry holds exactly `prefix`.
    pub fn has_explicit(&self, prefix: &[i32]) -> bool {
        self.entries
            .iter()
            .any(|e| e.explicit && e.tokens == prefix)
    }

    /// Keeps `tokens` in sequence `seq`. Returns the sequences to free: evicted entries,
    /// entries the new one makes redundant, or `seq` itself when it is not worth keeping.
    pub fn insert(&mut self, seq: i32, tokens: Vec<i32>, explicit: bool) -> Vec<i32> {
        let mut freed = Vec::new();
        if tokens.is_empty() || tokens.len() > self.budget_tokens {
            freed.push(seq);
            return freed;
        }
        // An automatic entry adds nothing when another entry already covers it.
        if !explicit
            && self
                .entries
                .iter()
                .any(|e| e.tokens.len() >= tokens.len() && e.tokens[..tokens.len()] == tokens[..])
        {
            freed.push(seq);
            return freed;
        }
        // Automatic entries that are prefixes of the new one are redundant.
        self.entries.retain(|e| {
            let redundant = !e.explicit
                && e.tokens.len() <= tokens.len()
                && tokens[..e.tokens.len()] == e.tokens[..];
            if redundant {
                freed.push(e.seq);
            }
            !redundant
        });
        self.clock += 1;
        self.entries.push(Entry {
            seq,
            tokens,
            explicit,
            last_used: self.clock,
        });
        while self.tokens() > self.budget_tokens {
            match self.evict_lru() {
                Some(s) => freed.push(s),
                None => break,
            }
        }
        freed
    }

    /// Drops the least recently used entry and returns its sequence. Automatic entries go
    /// first: a caller's cache point outranks leftovers.
    pub fn evict_lru(&mut self) -> Option<i32> {
        let (index, _) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| (e.explicit, e.last_used))?;
        Some(self.entries.swap_remove(index).seq)
    }
}

fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_match_leaves_one_token_to_decode() {
        let mut cache = PrefixCache::new(100);
        assert!(cache.insert(1, vec![1, 2, 3], false).is_empty());
        assert!(cache.insert(2, vec![1, 2, 9, 9], false).is_empty());
        assert_eq!(
            cache.longest_match(&[1, 2, 3, 4]),
            Some(Reuse { seq: 1, tokens: 3 })
        );
        // The whole prompt is cached: the last token is still decoded.
        assert_eq!(cache.longest_match(&[1, 2, 3]).map(|r| r.tokens), Some(2));
        assert_eq!(cache.longest_match(&[7, 8]), None);
    }

    #[test]
    fn budget_evicts_least_recently_used() {
        let mut cache = PrefixCache::new(6);
        assert!(cache.insert(1, vec![1, 1, 1], true).is_empty());
        assert!(cache.insert(2, vec![2, 2, 2], true).is_empty());
        // Touch entry 1 so entry 2 is the oldest.
        assert!(cache.longest_match(&[1, 1, 1, 5]).is_some());
        assert_eq!(cache.insert(3, vec![3, 3], true), vec![2]);
        assert_eq!(cache.tokens(), 5);
        assert!(cache.has_explicit(&[1, 1, 1]));
        assert!(!cache.has_explicit(&[2, 2, 2]));
    }

    #[test]
    fn explicit_entries_outlive_automatic_ones() {
        let mut cache = PrefixCache::new(5);
        assert!(cache.insert(1, vec![1, 1, 1], true).is_empty());
        // The newer automatic entry overflows the budget and goes, not the cache point.
        assert_eq!(cache.insert(2, vec![1, 1, 1, 2, 2], false), vec![2]);
        assert!(cache.has_explicit(&[1, 1, 1]));
    }

    #[test]
    fn entries_over_the_budget_are_not_kept() {
        let mut cache = PrefixCache::new(2);
        assert_eq!(cache.insert(4, vec![1, 2, 3], false), vec![4]);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn automatic_entries_replace_their_own_prefixes() {
        let mut cache = PrefixCache::new(100);
        assert!(cache.insert(1, vec![1, 2], false).is_empty());
        assert_eq!(cache.insert(2, vec![1, 2, 3], false), vec![1]);
        // Covered by entry 2: not kept.
        assert_eq!(cache.insert(3, vec![1, 2], false), vec![3]);
        // Explicit entries are kept even when covered, so their hits are reported.
        assert!(cache.insert(4, vec![1, 2], true).is_empty());
        assert_eq!(cache.len(), 2);
    }
}
