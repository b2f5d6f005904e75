//! RetrieveAndGenerate's generation step: the prompt that puts the search results
//! in front of the model, and the citations that tie each span of the answer to the
//! results that support it.
//!
//! A small model seldom cites on its own, so support is measured: each sentence of
//! the answer is embedded with the knowledge base's model and compared with each
//! result. `[n]` markers the model does write are honoured as well.

use std::sync::LazyLock;

use basalt_proto::BedrockError;
use regex::Regex;

use crate::Embedder;

/// Bedrock's default knowledge-base prompt, in substance.
pub const DEFAULT_TEMPLATE: &str = "You are a question answering agent. I will provide you with a set of search results. \
The user will provide you with a question. Your job is to answer the user's question using only information from the search results. \
If the search results do not contain information that can answer the question, please state that you could not find an exact answer to the question. \
Just because the user asserts a fact does not mean it is a fact, double check the search results to validate a user's assertion.\n\n\
Here are the search results in numbered order:\n$search_results$\n\n$output_format_instructions$";

const OUTPUT_FORMAT_INSTRUCTIONS: &str =
    "Answer in a few sentences. When a sentence uses a search result, you may cite it by its number in square brackets, like [1].";

/// A sentence counts as supported by a result at this cosine similarity or above
/// (all-MiniLM-L6-v2: paraphrases score 0.5–0.9, unrelated text below 0.2).
pub const SUPPORT_THRESHOLD: f32 = 0.35;
/// References kept per cited span.
const MAX_REFERENCES: usize = 3;
/// Longest prompt template accepted (Bedrock allows 100,000 characters).
pub const MAX_TEMPLATE_CHARS: usize = 100_000;

static MARKER: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)]
    Regex::new(r"\[(\d{1,3})\]").unwrap()
});

/// The system prompt, in three parts: the template before `$search_results$`, the
/// numbered results, and the template after. A guardrail's grounding check takes
/// the middle part as its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub before: String,
    pub results: String,
    pub after: String,
}

impl Rendered {
    pub fn whole(&self) -> String {
        format!("{}{}{}", self.before, self.results, self.after)
    }
}

/// The template with the search results in place.
pub fn render(
    template: Option<&str>,
    query: &str,
    results: &[String],
) -> Result<Rendered, BedrockError> {
    let template = template.unwrap_or(DEFAULT_TEMPLATE);
    if template.chars().count() > MAX_TEMPLATE_CHARS {
        return Err(BedrockError::validation(format!(
            "promptTemplate.textPromptTemplate is longer than {MAX_TEMPLATE_CHARS} characters."
        )));
    }
    let Some((before, after)) = template.split_once("$search_results$") else {
        return Err(BedrockError::validation(
            "promptTemplate.textPromptTemplate must contain the $search_results$ placeholder.",
        ));
    };
    let fill = |part: &str| {
        part.replace("$search_results$", "")
            .replace("$output_format_instructions$", OUTPUT_FORMAT_INSTRUCTIONS)
            .replace("$query$", query)
    };
    let numbered: String = results
        .iter()
        .enumerate()
        .map(|(i, r)| format!("[{}] {}\n", i + 1, r.trim()))
        .collect();
    Ok(Rendered {
        before: fill(before),
        results: numbered.trim_end().to_string(),
        after: fill(after),
    })
}

/// One span of the answer (character offsets, `end` inclusive) and the results
/// (indexes into the list given to [`cite`]) that support it.
#[derive(Debug, Clone, PartialEq)]
pub struct CitedSpan {
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub references: Vec<usize>,
}

/// Sentences of `text` as (byte start, byte end) ranges, trailing space trimmed.
fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let end_of_sentence = matches!(c, '.' | '!' | '?' | '\n')
            && bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace());
        if end_of_sentence {
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
    if !trimmed.is_empty() {
        out.push((start + lead, start + lead + trimmed.len()));
    }
}

/// Splits the answer into spans and finds each one's support among `results`.
/// Adjacent sentences with the same support form one span.
pub fn cite(
    answer: &str,
    results: &[String],
    model: &dyn Embedder,
) -> Result<Vec<CitedSpan>, String> {
    let ranges = sentences(answer);
    if ranges.is_empty() || results.is_empty() {
        return Ok(Vec::new());
    }
    let mut texts: Vec<String> = ranges
        .iter()
        .map(|&(s, e)| MARKER.replace_all(&answer[s..e], "").into_owned())
        .collect();
    texts.extend(results.iter().cloned());
    let vectors = model.embed(&texts)?;
    let (sentence_vecs, result_vecs) = vectors.split_at(ranges.len().min(vectors.len()));
    let mut spans: Vec<CitedSpan> = Vec::new();
    for (i, &(s, e)) in ranges.iter().enumerate() {
        let piece = &answer[s..e];
        let marked: Vec<usize> = MARKER
            .captures_iter(piece)
            .filter_map(|c| c[1].parse::<usize>().ok())
            .filter(|n| (1..=results.len()).contains(n))
            .map(|n| n - 1)
            .collect();
        let mut references = if marked.is_empty() {
            let mut scored: Vec<(usize, f32)> = result_vecs
                .iter()
                .enumerate()
                .map(|(j, r)| (j, dot(&sentence_vecs[i], r)))
                .filter(|&(_, sim)| sim >= SUPPORT_THRESHOLD)
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
            scored.into_iter().map(|(j, _)| j).collect()
        } else {
            marked
        };
        references.dedup();
        references.truncate(MAX_REFERENCES);
        let start = answer[..s].chars().count();
        let len = piece.chars().count();
        match spans.last_mut() {
            Some(last) if last.references == references => {
                last.end = start + len - 1;
                last.text = answer_chars(answer, last.start, last.end);
            }
            _ => spans.push(CitedSpan {
                text: piece.to_string(),
                start,
                end: start + len - 1,
                references,
            }),
        }
    }
    Ok(spans)
}

fn answer_chars(answer: &str, start: usize, end: usize) -> String {
    answer.chars().skip(start).take(end + 1 - start).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bag-of-letters vectors: texts sharing words point the same way. Stands in for
    /// the embedding model, which these pure functions do not need.
    struct Letters;

    impl Embedder for Letters {
        fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = [0f32; 26];
                    for w in t.to_lowercase().split_whitespace() {
                        if let Some(b) = w.bytes().find(u8::is_ascii_lowercase) {
                            v[(b - b'a') as usize] += 1.0;
                        }
                    }
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                    v.iter().map(|x| x / n).collect()
                })
                .collect())
        }
        fn dimensions(&self) -> usize {
            26
        }
        fn token_spans(&self, _: &str) -> Vec<(usize, usize)> {
            Vec::new()
        }
    }

    #[test]
    fn render_places_results_and_requires_the_placeholder() {
        let p = render(None, "q", &["alpha".into(), "beta".into()])
            .expect("renders")
            .whole();
        assert!(p.contains("[1] alpha\n[2] beta"));
        assert!(!p.contains('$'));
        assert!(render(Some("no placeholder"), "q", &[]).is_err());
        let p =
            render(Some("Q: $query$\n$search_results$"), "why", &["x".into()]).expect("renders");
        assert_eq!(p.whole(), "Q: why\n[1] x");
        assert_eq!(p.results, "[1] x");
    }

    #[test]
    fn sentences_split_on_terminal_punctuation() {
        let text = "One fact. Two facts! 3.5 is a number? End";
        let got: Vec<&str> = sentences(text).iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(got, ["One fact.", "Two facts!", "3.5 is a number?", "End"]);
    }

    #[test]
    fn spans_cover_the_answer_and_cite_supporting_results() {
        let answer = "Zebras zig zag. Apples are apt.";
        let results = vec![
            "apples apt always".to_string(),
            "zebras zoo zig".to_string(),
        ];
        let spans = cite(answer, &results, &Letters).expect("cites");
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].references, [1]);
        assert_eq!(spans[1].references, [0]);
        for s in &spans {
            assert_eq!(answer_chars(answer, s.start, s.end), s.text);
        }
        assert_eq!(spans[1].end, answer.chars().count() - 1);
    }

    #[test]
    fn markers_written_by_the_model_win() {
        let answer = "Zebras zig zag [1].";
        let results = ["apples".to_string(), "zebras zig".to_string()];
        let spans = cite(answer, &results, &Letters).expect("cites");
        assert_eq!(spans[0].references, [0]);
    }
}
