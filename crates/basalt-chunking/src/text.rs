//! Token spans, boundaries between them, sentences, and a simple tokenizer.

use crate::Tokenizer;

/// Splits text into words (runs of letters and digits) and single
/// punctuation characters; whitespace is not a token. For tests and as a
/// fallback: its counts are not any model's.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimpleTokenizer;

impl Tokenizer for SimpleTokenizer {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        let mut word: Option<usize> = None;
        for (i, c) in text.char_indices() {
            if c.is_alphanumeric() {
                word.get_or_insert(i);
                continue;
            }
            if let Some(w) = word.take() {
                spans.push((w, i));
            }
            if !c.is_whitespace() {
                spans.push((i, i + c.len_utf8()));
            }
        }
        if let Some(w) = word {
            spans.push((w, text.len()));
        }
        spans
    }
}

/// Makes a caller's spans safe to slice with: clamped to the text, widened
/// to character boundaries, start <= end, sorted by start.
pub(crate) fn sanitize(text: &str, mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let len = text.len();
    for s in &mut spans {
        let mut a = s.0.min(len);
        let mut b = s.1.min(len).max(a);
        while !text.is_char_boundary(a) {
            a -= 1;
        }
        while !text.is_char_boundary(b) {
            b += 1;
        }
        *s = (a, b);
    }
    if !spans.is_sorted_by_key(|s| s.0) {
        spans.sort_by_key(|s| s.0);
    }
    spans
}

/// Characters that end a sentence, and those that may follow the end (closing quotes, brackets).
const TERMINATORS: &[char] = &['.', '!', '?', '\u{3002}', '\u{ff01}', '\u{ff1f}'];
const CLOSERS: &[char] = &['"', '\'', ')', ']', '}', '\u{201d}', '\u{2019}', '\u{bb}'];

/// How good a place to cut is the boundary after token `k` (between it and
/// token `k + 1`): 2 a paragraph break, 1 a sentence end or line break, 0 neither.
pub(crate) fn boundary_after(text: &str, spans: &[(usize, usize)], k: usize) -> u8 {
    let Some(&(start, _)) = spans.get(k) else {
        return 0;
    };
    let next = spans.get(k + 1).map_or(text.len(), |s| s.0.max(start));
    // Token k's text and the gap after it, plus any whitespace the next token's span begins with.
    let next_text = spans
        .get(k + 1)
        .map_or("", |s| &text[s.0.max(start)..s.1.max(s.0.max(start))]);
    let region = &text[start..next];
    let body = region.trim_end();
    let ws = &region[body.len()..];
    let lead = &next_text[..next_text.len() - next_text.trim_start().len()];
    let newlines = ws.matches('\n').count() + lead.matches('\n').count();
    if newlines >= 2 {
        return 2;
    }
    if newlines == 1 {
        return 1;
    }
    let spaced = !ws.is_empty() || !lead.is_empty() || next == text.len();
    let end = body.trim_end_matches(CLOSERS);
    match end.chars().next_back() {
        Some(c) if TERMINATORS.contains(&c) && (spaced || !c.is_ascii()) => 1,
        _ => 0,
    }
}

/// Sentences as trimmed byte ranges: a sentence ends after a terminator
/// (and any closing quotes) followed by whitespace, or at a line break.
pub(crate) fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = if c == '\n' {
            Some(i)
        } else if TERMINATORS.contains(&c) {
            let mut e = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !CLOSERS.contains(&d) {
                    break;
                }
                e = j + d.len_utf8();
                chars.next();
            }
            match chars.peek() {
                None => Some(e),
                Some(&(_, d)) if d.is_whitespace() || !c.is_ascii() => Some(e),
                _ => None,
            }
        } else {
            None
        };
        if let Some(e) = end {
            push_trimmed(text, start, e, &mut out);
            start = e;
        }
    }
    push_trimmed(text, start, text.len(), &mut out);
    out
}

fn push_trimmed(text: &str, a: usize, b: usize, out: &mut Vec<(usize, usize)>) {
    let s = &text[a..b];
    let lead = s.len() - s.trim_start().len();
    let t = s.trim();
    if !t.is_empty() {
        out.push((a + lead, a + lead + t.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_tokenizer() {
        let t = "Hi, w\u{f6}rld 42!";
        let toks: Vec<&str> = SimpleTokenizer
            .token_spans(t)
            .iter()
            .map(|&(a, b)| &t[a..b])
            .collect();
        assert_eq!(toks, ["Hi", ",", "w\u{f6}rld", "42", "!"]);
    }

    #[test]
    fn sanitize_clamps_and_widens() {
        let t = "a\u{e9}b";
        assert_eq!(
            sanitize(t, vec![(2, 3), (0, 99), (5, 1)]),
            vec![(0, 4), (1, 3), (4, 4)]
        );
    }

    #[test]
    fn boundaries() {
        let t = "One two. Three\nfour\n\nfive \"six.\" seven";
        let spans = SimpleTokenizer.token_spans(t);
        let score = |word: &str| {
            let k = spans.iter().position(|&(a, b)| &t[a..b] == word).unwrap();
            boundary_after(t, &spans, k)
        };
        assert_eq!(score("One"), 0);
        assert_eq!(score("."), 1);
        assert_eq!(score("Three"), 1);
        assert_eq!(score("four"), 2);
        assert_eq!(score("six"), 0);
        assert_eq!(score("seven"), 0);
    }

    #[test]
    fn sentence_split() {
        let t = "First one. Second (really!) here? \"Quoted.\" Third\nline two\n\n3.5 is a number. \u{4f60}\u{597d}\u{3002}\u{518d}\u{89c1}";
        let s: Vec<&str> = sentences(t).iter().map(|&(a, b)| &t[a..b]).collect();
        assert_eq!(
            s,
            [
                "First one.",
                "Second (really!)",
                "here?",
                "\"Quoted.\"",
                "Third",
                "line two",
                "3.5 is a number.",
                "\u{4f60}\u{597d}\u{3002}",
                "\u{518d}\u{89c1}"
            ]
        );
    }
}
