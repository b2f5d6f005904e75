//! Splits text into sentences, with their byte ranges, for the policies that judge
//! meaning sentence by sentence (a denied topic can hide in one sentence of ten).

/// A byte range of a text.
pub type Span = (usize, usize);

/// Byte ranges of the sentences in `text`, trimmed, each non-empty.
pub fn split(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end_here = match c {
            '\n' => true,
            '.' | '!' | '?' => chars.peek().is_none_or(|&(_, n)| n.is_whitespace()),
            _ => false,
        };
        if end_here {
            push_trimmed(text, start, i + c.len_utf8(), &mut out);
            start = i + c.len_utf8();
        }
    }
    push_trimmed(text, start, text.len(), &mut out);
    out
}

fn push_trimmed(text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trimmed = piece.trim();
    if trimmed.chars().any(char::is_alphanumeric) {
        out.push((start + lead, start + lead + trimmed.len()));
    }
}

/// Sentences grouped into windows of about `max_words` words, so that a long text is
/// embedded in a few pieces rather than many: short sentences keep company.
pub fn windows(text: &str, max_words: usize) -> Vec<(usize, usize)> {
    group(text, &split(text), max_words)
        .into_iter()
        .map(|(window, _)| window)
        .collect()
}

/// [`windows`], and the sentences that share a window with another sentence, in
/// order. Those are also judged alone, because in a window of mostly benign words one
/// harmful sentence is diluted below every threshold; a window of one sentence is that
/// sentence already, so it is not repeated.
pub fn windows_and_shared_sentences(text: &str, max_words: usize) -> (Vec<Span>, Vec<Span>) {
    let sentences = split(text);
    let groups = group(text, &sentences, max_words);
    let mut shared = Vec::new();
    let mut first = 0;
    for &(_, count) in &groups {
        if count > 1 {
            shared.extend_from_slice(&sentences[first..first + count]);
        }
        first += count;
    }
    (
        groups.into_iter().map(|(window, _)| window).collect(),
        shared,
    )
}

/// Each window's range and how many of `sentences` it holds.
fn group(
    text: &str,
    sentences: &[(usize, usize)],
    max_words: usize,
) -> Vec<((usize, usize), usize)> {
    let mut out: Vec<((usize, usize), usize)> = Vec::new();
    let mut words_in_last = usize::MAX;
    for &(s, e) in sentences {
        let words = text[s..e].split_whitespace().count();
        match out.last_mut() {
            Some((last, count)) if words_in_last + words <= max_words => {
                last.1 = e;
                *count += 1;
                words_in_last += words;
            }
            _ => {
                out.push(((s, e), 1));
                words_in_last = words;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<&str> {
        split(text).into_iter().map(|(s, e)| &text[s..e]).collect()
    }

    #[test]
    fn splits_on_terminal_punctuation_and_newlines() {
        assert_eq!(
            pieces("Hello there. How are you?\nFine!  Version 1.2 is out"),
            [
                "Hello there.",
                "How are you?",
                "Fine!",
                "Version 1.2 is out"
            ]
        );
    }

    #[test]
    fn skips_empty_and_punctuation_only_pieces() {
        assert_eq!(pieces("...\n\n  \nok"), ["ok"]);
        assert!(pieces("").is_empty());
    }

    #[test]
    fn windows_group_short_sentences() {
        let text = "One two. Three four. Five six seven eight nine ten.";
        let w: Vec<&str> = windows(text, 4)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(
            w,
            ["One two. Three four.", "Five six seven eight nine ten."]
        );
    }

    #[test]
    fn shared_window_sentences_are_listed_once_each() {
        let text = "One two. Three four. Five six seven eight nine ten.";
        let (windows, shared) = windows_and_shared_sentences(text, 4);
        assert_eq!(windows, super::windows(text, 4));
        let s: Vec<&str> = shared.into_iter().map(|(s, e)| &text[s..e]).collect();
        // The last sentence is a window of its own, so it is not listed again.
        assert_eq!(s, ["One two.", "Three four."]);
        assert!(windows_and_shared_sentences("Just one sentence here.", 48)
            .1
            .is_empty());
        assert_eq!(windows_and_shared_sentences("", 48), (vec![], vec![]));
    }
}
