use proptest::prelude::*;

use super::*;

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn tokens(text: &str) -> Vec<&str> {
    SimpleTokenizer
        .token_spans(text)
        .iter()
        .map(|&(a, b)| &text[a..b])
        .collect()
}

fn run(text: &str, config: &ChunkingConfig) -> Chunked {
    chunk(text, config, &SimpleTokenizer, None).unwrap()
}

/// Every token of `text` lies inside one of `ranges`.
fn covers_all_tokens(text: &str, ranges: &[Span]) -> bool {
    SimpleTokenizer
        .token_spans(text)
        .iter()
        .all(|&(a, b)| ranges.iter().any(|r| r.start <= a && b <= r.end))
}

#[test]
fn fixed_size_overlap_is_exact_and_nothing_is_lost() {
    let text = words(103);
    let out = run(&text, &ChunkingConfig::fixed_size(10, 20));
    assert!(out.parents.is_empty());
    let chunks: Vec<Vec<&str>> = out.chunks.iter().map(|c| tokens(&c.text)).collect();
    for pair in chunks.windows(2) {
        assert_eq!(pair[0].len(), 10);
        assert_eq!(
            pair[0][8..],
            pair[1][..2],
            "overlap of round(10 * 20%) = 2 tokens"
        );
    }
    // 0..10, 8..18, ..., 96..103
    assert_eq!(chunks.len(), 13);
    assert_eq!(
        chunks.last().unwrap(),
        &["w96", "w97", "w98", "w99", "w100", "w101", "w102"]
    );
    let plan = plan(
        &text,
        &ChunkingConfig::fixed_size(10, 20),
        &SimpleTokenizer,
        None,
        1000,
    )
    .unwrap();
    assert!(covers_all_tokens(
        &text,
        &plan.chunks.iter().map(|c| c.0.clone()).collect::<Vec<_>>()
    ));
    // Overlap rounds: 7 * 50% = 3.5 -> 4; 1 token at 99% -> capped at 0.
    let out = run(&words(20), &ChunkingConfig::fixed_size(7, 50));
    assert_eq!(
        tokens(&out.chunks[0].text)[3..],
        tokens(&out.chunks[1].text)[..4]
    );
    assert_eq!(
        run(&words(5), &ChunkingConfig::fixed_size(1, 99))
            .chunks
            .len(),
        5
    );
    // 99% of 10 is 10 tokens, capped at 9: every window moves on by one.
    assert_eq!(
        run(&words(12), &ChunkingConfig::fixed_size(10, 99))
            .chunks
            .len(),
        3
    );
}

#[test]
fn short_and_blank_documents() {
    let out = run("  A short note.\n\n", &ChunkingConfig::default());
    assert_eq!(
        out.chunks,
        [Chunk {
            text: "A short note.".into(),
            parent: None
        }]
    );
    for blank in ["", "  \n\t \n"] {
        for config in [
            ChunkingConfig::default(),
            ChunkingConfig::none(),
            ChunkingConfig::hierarchical(20, 5, 1),
        ] {
            assert_eq!(run(blank, &config), Chunked::default());
        }
        let semantic = chunk(
            blank,
            &ChunkingConfig::semantic(10, 0, 95),
            &SimpleTokenizer,
            Some(&Topics),
        );
        assert_eq!(semantic.unwrap(), Chunked::default());
    }
}

#[test]
fn none_is_the_whole_document() {
    let text = format!("\n{}\n\nmore ", words(5000));
    let out = run(&text, &ChunkingConfig::none());
    assert_eq!(out.chunks.len(), 1);
    assert_eq!(out.chunks[0].text, text.trim());
}

#[test]
fn windows_prefer_paragraph_then_sentence_ends() {
    // Tokens: a..h (8), "." (9th), then i..; a 10-token window's last 20% is tokens 9 and 10.
    let text = "a b c d e f g h. i j k l m n o p q r s t";
    let out = run(text, &ChunkingConfig::fixed_size(10, 10));
    assert_eq!(out.chunks[0].text, "a b c d e f g h.");
    assert!(
        out.chunks[1].text.starts_with(". i j"),
        "overlap of one token: {:?}",
        out.chunks[1].text
    );
    // A paragraph break in the tail beats a later sentence end.
    let text = "a b c d e f g h\n\ni. j k l m n o p q r s t";
    let out = run(text, &ChunkingConfig::fixed_size(10, 10));
    assert_eq!(out.chunks[0].text, "a b c d e f g h");
    // No boundary in the tail: a plain 10-token window.
    let text = "a. b c d e f g h i j k l m n o p";
    let out = run(text, &ChunkingConfig::fixed_size(10, 10));
    assert_eq!(tokens(&out.chunks[0].text).len(), 10);
    // Chunk text is the document's own bytes, newlines and all.
    let text = "one two\nthree four";
    assert_eq!(
        run(text, &ChunkingConfig::fixed_size(100, 20)).chunks[0].text,
        text
    );
}

#[test]
fn hierarchical_children_map_to_parents_and_lie_within_them() {
    let text = (0..40)
        .map(|_| format!("{}.", words(12)))
        .collect::<Vec<_>>()
        .join("\n\n");
    let config = ChunkingConfig::hierarchical(60, 15, 3);
    let out = run(&text, &config);
    assert!(out.parents.len() > 1);
    let mut seen = vec![false; out.parents.len()];
    for c in &out.chunks {
        let p = c.parent.unwrap();
        seen[p] = true;
        assert!(
            out.parents[p].contains(&c.text),
            "child {:?} not in parent {p}",
            c.text
        );
        assert!(tokens(&c.text).len() <= 15);
    }
    assert!(seen.iter().all(|s| *s), "every parent has children");
    for p in &out.parents {
        assert!(tokens(p).len() <= 60);
    }
    // Children are in document order, parents' in turn.
    assert!(out.chunks.windows(2).all(|w| w[0].parent <= w[1].parent));
    let plan = plan(
        &text,
        &config,
        &SimpleTokenizer,
        None,
        MAX_CHUNKS_PER_DOCUMENT,
    )
    .unwrap();
    let ranges: Vec<Span> = plan.chunks.iter().map(|c| c.0.clone()).collect();
    assert!(covers_all_tokens(&text, &ranges));
    for (r, p) in &plan.chunks {
        let parent = &plan.parents[p.unwrap()];
        assert!(parent.start <= r.start && r.end <= parent.end);
    }
}

#[test]
fn hierarchical_child_larger_than_parent_is_the_parent() {
    let out = run(&words(30), &ChunkingConfig::hierarchical(10, 50, 2));
    assert_eq!(out.parents.len(), out.chunks.len());
    for c in &out.chunks {
        assert_eq!(c.text, out.parents[c.parent.unwrap()]);
    }
}

/// A fake embedder with two topics: "cat" sentences point one way, the rest another.
struct Topics;

impl SentenceEmbedder for Topics {
    fn embed(&self, sentences: &[String]) -> Result<Vec<Vec<f32>>, String> {
        Ok(sentences
            .iter()
            .map(|s| {
                let cats = s.matches("cat").count() as f32;
                let stocks = s.matches("stock").count() as f32;
                vec![cats, stocks, 0.01]
            })
            .collect())
    }
}

const TWO_TOPICS: &str = "The cat sleeps. A cat purrs loudly. My cat eats fish. The cat naps again. \
                          The stock rose. A stock fell sharply. Every stock trades daily. The stock closed up.";

#[test]
fn semantic_breaks_between_topics() {
    for buffer in [0, 1] {
        let out = chunk(
            TWO_TOPICS,
            &ChunkingConfig::semantic(100, buffer, 90),
            &SimpleTokenizer,
            Some(&Topics),
        )
        .unwrap();
        let texts: Vec<&str> = out.chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "The cat sleeps. A cat purrs loudly. My cat eats fish. The cat naps again.",
                "The stock rose. A stock fell sharply. Every stock trades daily. The stock closed up."
            ],
            "bufferSize {buffer}"
        );
    }
}

#[test]
fn semantic_enforces_max_tokens() {
    let out = chunk(
        TWO_TOPICS,
        &ChunkingConfig::semantic(5, 0, 90),
        &SimpleTokenizer,
        Some(&Topics),
    )
    .unwrap();
    assert!(out.chunks.len() >= 8);
    for c in &out.chunks {
        assert!(tokens(&c.text).len() <= 5, "{:?}", c.text);
        assert!(
            !(c.text.contains("cat") && c.text.contains("stock")),
            "a chunk spans the topic change: {:?}",
            c.text
        );
    }
    let plan = plan(
        TWO_TOPICS,
        &ChunkingConfig::semantic(5, 0, 90),
        &SimpleTokenizer,
        Some(&Topics),
        1000,
    )
    .unwrap();
    assert!(covers_all_tokens(
        TWO_TOPICS,
        &plan.chunks.iter().map(|c| c.0.clone()).collect::<Vec<_>>()
    ));
}

#[test]
fn semantic_single_sentence_and_uniform_text() {
    let out = chunk(
        "Just one sentence here",
        &ChunkingConfig::semantic(50, 0, 95),
        &SimpleTokenizer,
        Some(&Topics),
    )
    .unwrap();
    assert_eq!(out.chunks.len(), 1);
    // All distances equal: nothing is above the percentile, one chunk.
    let same = "The cat sat. The cat sat. The cat sat.";
    let out = chunk(
        same,
        &ChunkingConfig::semantic(50, 0, 95),
        &SimpleTokenizer,
        Some(&Topics),
    )
    .unwrap();
    assert_eq!(out.chunks.len(), 1);
}

struct Broken(usize);

impl SentenceEmbedder for Broken {
    fn embed(&self, sentences: &[String]) -> Result<Vec<Vec<f32>>, String> {
        match self.0 {
            0 => Err("model not loaded".into()),
            1 => Ok(vec![vec![1.0]; sentences.len() + 1]),
            _ => Ok(sentences
                .iter()
                .enumerate()
                .map(|(i, _)| vec![1.0; i + 1])
                .collect()),
        }
    }
}

#[test]
fn semantic_errors() {
    let config = ChunkingConfig::semantic(50, 0, 95);
    let e = chunk(TWO_TOPICS, &config, &SimpleTokenizer, None).unwrap_err();
    assert!(matches!(e, ChunkError::NoEmbedder));
    let e = chunk(TWO_TOPICS, &config, &SimpleTokenizer, Some(&Broken(0))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "embedding sentences for SEMANTIC chunking failed: model not loaded"
    );
    let e = chunk(TWO_TOPICS, &config, &SimpleTokenizer, Some(&Broken(1))).unwrap_err();
    assert!(
        e.to_string()
            .contains("returned 9 vectors for 8 sentence groups"),
        "{e}"
    );
    let e = chunk(TWO_TOPICS, &config, &SimpleTokenizer, Some(&Broken(2))).unwrap_err();
    assert!(e.to_string().contains("different lengths"), "{e}");
}

#[test]
fn invalid_config_is_refused() {
    let e = chunk(
        "text",
        &ChunkingConfig::fixed_size(0, 20),
        &SimpleTokenizer,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(e, ChunkError::InvalidConfig(m) if m.ends_with("maxTokens must be between 1 and 8192; it is 0"))
    );
}

#[test]
fn chunk_count_is_capped() {
    let text = words(MAX_CHUNKS_PER_DOCUMENT + 1);
    let e = chunk(
        &text,
        &ChunkingConfig::fixed_size(1, 1),
        &SimpleTokenizer,
        None,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the document makes more than 100000 chunks; split it into smaller documents or raise maxTokens"
    );
    let ok = chunk(
        &words(MAX_CHUNKS_PER_DOCUMENT),
        &ChunkingConfig::fixed_size(1, 1),
        &SimpleTokenizer,
        None,
    )
    .unwrap();
    assert_eq!(ok.chunks.len(), MAX_CHUNKS_PER_DOCUMENT);
    let e = chunk_with_limit(
        &words(50),
        &ChunkingConfig::hierarchical(20, 5, 1),
        &SimpleTokenizer,
        None,
        10,
    )
    .unwrap_err();
    assert!(matches!(e, ChunkError::TooManyChunks { limit: 10 }));
    let e = chunk_with_limit(
        TWO_TOPICS,
        &ChunkingConfig::semantic(2, 0, 90),
        &SimpleTokenizer,
        Some(&Topics),
        3,
    )
    .unwrap_err();
    assert!(matches!(e, ChunkError::TooManyChunks { limit: 3 }));
}

/// A tokenizer that returns whatever it was built with: out of range, unsorted, mid-character.
struct Garbage(Vec<(usize, usize)>);

impl Tokenizer for Garbage {
    fn token_spans(&self, _: &str) -> Vec<(usize, usize)> {
        self.0.clone()
    }
}

#[test]
fn tokenizer_with_repeated_spans() {
    // Byte-level BPE: one emoji, two tokens with the same span.
    let text = "a \u{1f600} b";
    let tok = Garbage(vec![(0, 1), (2, 6), (2, 6), (7, 8)]);
    let out = chunk(text, &ChunkingConfig::fixed_size(2, 50), &tok, None).unwrap();
    let texts: Vec<&str> = out.chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["a \u{1f600}", "\u{1f600}", "\u{1f600} b"]);
}

fn doc_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop::sample::select(vec![
            "alpha",
            "beta",
            "gamma",
            "d\u{e9}j\u{e0}",
            "\u{4f60}\u{597d}",
            ".",
            "!",
            "?",
            ",",
            " ",
            " ",
            " ",
            "\n",
            "\n\n",
            "\"",
            "\u{3002}",
            "42",
        ]),
        0..300,
    )
    .prop_map(|parts| parts.concat())
}

fn any_config() -> impl Strategy<Value = ChunkingConfig> {
    prop_oneof![
        (1i64..40, 1i64..100).prop_map(|(m, o)| ChunkingConfig::fixed_size(m, o)),
        Just(ChunkingConfig::none()),
        (1i64..60, 1i64..30, 1i64..40).prop_map(|(p, c, o)| ChunkingConfig::hierarchical(p, c, o)),
        (1i64..40, 0i64..2, 50i64..100).prop_map(|(m, b, t)| ChunkingConfig::semantic(m, b, t)),
    ]
}

fn max_tokens(c: &ChunkingConfig) -> Option<usize> {
    match c.chunking_strategy {
        ChunkingStrategy::FixedSize => c
            .fixed_size_chunking_configuration
            .as_ref()
            .map(|f| f.max_tokens as usize),
        ChunkingStrategy::Hierarchical => c
            .hierarchical_chunking_configuration
            .as_ref()
            .map(|h| h.level_configurations[1].max_tokens as usize),
        ChunkingStrategy::Semantic => c
            .semantic_chunking_configuration
            .as_ref()
            .map(|s| s.max_tokens as usize),
        ChunkingStrategy::None => None,
    }
}

proptest! {
    #[test]
    fn chunking_covers_every_token_within_limits(text in doc_text(), config in any_config()) {
        let plan = plan(&text, &config, &SimpleTokenizer, Some(&Topics), MAX_CHUNKS_PER_DOCUMENT).unwrap();
        let ranges: Vec<Span> = plan.chunks.iter().map(|c| c.0.clone()).collect();
        prop_assert!(covers_all_tokens(&text, &ranges));
        prop_assert_eq!(text.trim().is_empty(), ranges.is_empty());
        if let Some(max) = max_tokens(&config) {
            for r in &ranges {
                prop_assert!(SimpleTokenizer.token_spans(&text[r.clone()]).len() <= max, "{:?}", &text[r.clone()]);
            }
        }
        for (r, p) in &plan.chunks {
            prop_assert!(!text[r.clone()].trim().is_empty());
            if let Some(p) = p {
                let parent = &plan.parents[*p];
                prop_assert!(parent.start <= r.start && r.end <= parent.end);
            }
        }
    }

    #[test]
    fn garbage_spans_never_panic(text in doc_text(), spans in proptest::collection::vec((0usize..2000, 0usize..2000), 0..50),
                                 config in any_config()) {
        let _ = chunk(&text, &config, &Garbage(spans), Some(&Topics));
    }
}
