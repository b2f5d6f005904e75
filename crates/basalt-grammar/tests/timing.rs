//! `cargo test -p basalt-grammar --release --test timing -- --ignored --nocapture`

use std::time::Instant;

use basalt_grammar::{Grammar, Schema, TokenTrie};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// 49,152 tokens shaped like a byte-level BPE vocabulary: every byte, words
/// with and without a leading space, digit runs, punctuation, some non-ASCII.
fn vocab() -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(1);
    let mut seen = std::collections::HashSet::new();
    let mut v: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let punct = [
        "{\"", "\":", "\": \"", "\",", "\", \"", "}}", "]}", "\"}", "},", "[\"", "\\n", "\\\"",
        "://", "...", "--", "==", "();", "\n\n", "    ",
    ];
    for p in punct {
        v.push(p.as_bytes().to_vec());
    }
    while v.len() < 49_152 {
        let t: Vec<u8> = match rng.random_range(0..20) {
            0 => (0..rng.random_range(1..4))
                .map(|_| b'0' + rng.random_range(0..10))
                .collect(),
            1 => "éüñßøåçあいうアイ中文字한국"
                .chars()
                .nth(rng.random_range(0..17))
                .map(|c| c.to_string().into_bytes())
                .unwrap_or_default(),
            _ => {
                let mut w = Vec::new();
                if rng.random_bool(0.5) {
                    w.push(b' ');
                }
                if rng.random_bool(0.1) {
                    w.push(b'"');
                }
                let len = rng.random_range(2..10);
                for i in 0..len {
                    let c = b'a' + rng.random_range(0..26);
                    w.push(if i == 0 && rng.random_bool(0.2) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    });
                }
                w
            }
        };
        if !t.is_empty() && seen.insert(t.clone()) {
            v.push(t);
        }
    }
    v
}

#[test]
#[ignore]
fn allowed_timing() {
    let vocab = vocab();
    let t = Instant::now();
    let trie = TokenTrie::new(vocab.iter().enumerate().map(|(i, t)| (i as u32, t.clone())));
    println!("trie build: {:?} for {} tokens", t.elapsed(), vocab.len());
    let schema = Schema::compile(&json!({
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["location"]
    }))
    .expect("compiles");
    let g = Grammar::json(schema);
    let mut out = Vec::new();
    for prefix in [
        "",
        "{",
        "{\"",
        "{\"days\": ",
        "{\"days\": 12",
        "{\"days\": 1, \"location\": \"Par",
        "{\"days\": 1, \"location\": \"Paris\", \"tags\": [\"a\", \"\u{e9}",
    ] {
        let mut m = g.matcher();
        assert!(m.advance(prefix.as_bytes()));
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            trie.allowed(&m, &mut out);
        }
        println!(
            "allowed after {prefix:?}: {:?} per call, {} tokens",
            t.elapsed() / n,
            out.len()
        );
    }
    let mut m = g.matcher();
    assert!(m.advance(b"{\"location\": \"x"));
    let toks: Vec<&Vec<u8>> = vocab.iter().skip(300).take(10_000).collect();
    let t = Instant::now();
    let mut yes = 0;
    for tok in &toks {
        yes += usize::from(m.accepts(tok));
    }
    println!(
        "accepts: {:?} per token ({yes} accepted)",
        t.elapsed() / toks.len() as u32
    );
}
