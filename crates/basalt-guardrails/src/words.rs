//! The word policy: custom words and phrases, and the managed PROFANITY list,
//! matched case-insensitively on word boundaries.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// The managed profanity list (see data/profanity/LICENSE for its source and licence).
const PROFANITY: &str = include_str!("../data/profanity/en.txt");

/// A compiled list of words or phrases.
pub struct WordMatcher {
    automaton: Option<AhoCorasick>,
    /// The configured spelling of each pattern, as reported in `match`.
    words: Vec<String>,
}

impl WordMatcher {
    pub fn new<S: AsRef<str>>(words: &[S]) -> Self {
        let words: Vec<String> = words
            .iter()
            .map(|w| normalise_spaces(w.as_ref()))
            .filter(|w| !w.is_empty())
            .collect();
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(words.iter().map(|w| w.to_lowercase()))
            .ok();
        Self { automaton, words }
    }

    /// The managed PROFANITY list.
    pub fn profanity() -> Self {
        let words: Vec<&str> = PROFANITY
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        Self::new(&words)
    }

    pub fn word(&self, index: usize) -> &str {
        &self.words[index]
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The index of the configured word at each whole-word occurrence in `text`.
    pub fn find(&self, text: &str) -> Vec<usize> {
        let Some(ac) = &self.automaton else {
            return Vec::new();
        };
        // ASCII letters are folded by the automaton, others here.
        if text.is_ascii() {
            find_in(ac, text)
        } else {
            find_in(ac, &text.to_lowercase())
        }
    }
}

/// The pattern of each leftmost-longest whole-word match. After a match that
/// sits inside a word the search restarts one byte on, so that "ass" inside "class"
/// does not hide a later whole word.
fn find_in(ac: &AhoCorasick, haystack: &str) -> Vec<usize> {
    let bytes = haystack.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let mut out = Vec::new();
    let mut at = 0;
    while at < haystack.len() {
        let input = aho_corasick::Input::new(haystack).span(at..haystack.len());
        let Some(m) = ac.find(input) else { break };
        let (s, e) = (m.start(), m.end());
        let whole = (s == 0 || !is_word(bytes[s - 1])) && (e == bytes.len() || !is_word(bytes[e]));
        if whole {
            out.push(m.pattern().as_usize());
            at = e;
        } else {
            at = s + 1;
        }
        while at < haystack.len() && !haystack.is_char_boundary(at) {
            at += 1;
        }
    }
    out
}

/// Collapses runs of whitespace so that "bad  word" in a config matches "bad word".
fn normalise_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_whole_words_case_insensitively() {
        let m = WordMatcher::new(&["Badword", "two words"]);
        let hits = m.find("A BADWORD here, and Two Words there; badwords not.");
        assert_eq!(hits.len(), 2);
        assert_eq!(m.word(hits[0]), "Badword");
        assert_eq!(m.word(hits[1]), "two words");
    }

    #[test]
    fn inner_substrings_do_not_match() {
        let m = WordMatcher::new(&["ass"]);
        assert!(m.find("a classic assessment").is_empty());
        assert_eq!(m.find("a classic ass").len(), 1);
    }

    #[test]
    fn non_ascii_text_is_searched() {
        let m = WordMatcher::new(&["café"]);
        assert_eq!(m.find("Le CAFÉ est fermé").len(), 1);
    }

    #[test]
    fn profanity_list_is_loaded_and_matches() {
        let p = WordMatcher::profanity();
        assert!(p.len() > 100, "the managed list has {} entries", p.len());
        assert!(!p.find("what the fuck is this").is_empty());
        assert!(p.find("a perfectly polite sentence").is_empty());
    }
}
