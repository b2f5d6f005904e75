//! Incremental detokenisation with stop sequences: turns token bytes into text
//! that is safe to stream, holding back only what could still become a stop
//! sequence or an incomplete UTF-8 character.

/// What [`StopMatcher::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Text that can be sent now (may be empty).
    Continue(String),
    /// A stop sequence matched: the text before it, and the sequence.
    Stopped { text: String, sequence: String },
}

pub struct StopMatcher {
    sequences: Vec<String>,
    bytes: Vec<u8>,
    pending: String,
}

impl StopMatcher {
    pub fn new(sequences: Vec<String>) -> Self {
        Self {
            sequences: sequences.into_iter().filter(|s| !s.is_empty()).collect(),
            bytes: Vec::new(),
            pending: String::new(),
        }
    }

    /// Adds the bytes of one token.
    pub fn push(&mut self, token_bytes: &[u8]) -> Scan {
        self.bytes.extend_from_slice(token_bytes);
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            // An incomplete character at the end waits for the next token; bytes that
            // can never be valid are replaced rather than stalling the stream.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                let lossy = String::from_utf8_lossy(&self.bytes).into_owned();
                self.bytes.clear();
                self.pending.push_str(&lossy);
                return self.scan();
            }
        };
        let rest = self.bytes.split_off(valid);
        let text = std::mem::replace(&mut self.bytes, rest);
        // Safe: `valid` bytes were checked above.
        self.pending.push_str(&String::from_utf8_lossy(&text));
        self.scan()
    }

    fn scan(&mut self) -> Scan {
        let earliest = self
            .sequences
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, sequence)) = earliest {
            let sequence = sequence.clone();
            let text = self.pending[..at].to_string();
            self.pending.clear();
            return Scan::Stopped { text, sequence };
        }
        let hold = self.holdback();
        let cut = self.pending.len() - hold;
        let ready = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        Scan::Continue(ready)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop sequence.
    fn holdback(&self) -> usize {
        let mut hold = 0;
        for seq in &self.sequences {
            let max = seq.len().saturating_sub(1).min(self.pending.len());
            for len in (1..=max).rev() {
                let start = self.pending.len() - len;
                if self.pending.is_char_boundary(start) && seq.starts_with(&self.pending[start..]) {
                    hold = hold.max(len);
                    break;
                }
            }
        }
        hold
    }

    /// Text still held back when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.pending);
        if !self.bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.bytes));
            self.bytes.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, Option<String>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                Scan::Continue(t) => out.push_str(&t),
                Scan::Stopped { text, sequence } => {
                    out.push_str(&text);
                    return (out, Some(sequence));
                }
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn passes_text_through_without_stops() {
        assert_eq!(run(&[], &[b"Hel", b"lo"]), ("Hello".into(), None));
    }

    #[test]
    fn stops_across_token_boundaries_and_drops_the_sequence() {
        let (text, seq) = run(&["END"], &[b"abc E", b"N", b"D more"]);
        assert_eq!(text, "abc ");
        assert_eq!(seq.as_deref(), Some("END"));
    }

    #[test]
    fn holds_back_a_possible_prefix_then_releases_it() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push(b"go ST"), Scan::Continue("go ".into()));
        assert_eq!(m.push(b"AY"), Scan::Continue("STAY".into()));
    }

    #[test]
    fn earliest_of_several_sequences_wins() {
        let (text, seq) = run(&["b", "a"], &[b"xxabyy"]);
        assert_eq!(text, "xx");
        assert_eq!(seq.as_deref(), Some("a"));
    }

    #[test]
    fn waits_for_split_utf8_characters() {
        let euro = "€".as_bytes();
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push(&euro[..1]), Scan::Continue(String::new()));
        assert_eq!(m.push(&euro[1..]), Scan::Continue("€".into()));
    }

    #[test]
    fn invalid_bytes_do_not_stall() {
        assert_eq!(run(&[], &[b"a\xff", b"b"]).0, "a\u{fffd}b");
    }
}
