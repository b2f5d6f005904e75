//! Seeded random schemas and random walks: whatever the matcher lets through,
//! finished by `shortest_completion`, must parse and validate.

use basalt_grammar::{Grammar, Matcher, Schema, TokenTrie};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

const NAMES: &[&str] = &["a", "ab", "name", "n\u{e9}", "x\"y", "id", "items", "k"];
const WORDS: &[&str] = &["red", "green", "r", "\u{1F600}", "a\\b", "1"];

fn random_schema(rng: &mut StdRng, depth: u32, words: &mut Vec<String>) -> Value {
    let pick = if depth == 0 {
        rng.random_range(0..6)
    } else {
        rng.random_range(0..9)
    };
    match pick {
        0 => json!({"type": "string", "description": "text"}),
        1 => json!({"type": "number"}),
        2 => json!({"type": "integer"}),
        3 => json!({"type": "boolean"}),
        4 => {
            let n = rng.random_range(1..4);
            let values: Vec<Value> = (0..n)
                .map(|_| match rng.random_range(0..4) {
                    0 => json!(rng.random_range(-20..200)),
                    1 => json!(rng.random_bool(0.5)),
                    2 => json!({"k": [1, "z"]}),
                    _ => json!(WORDS[rng.random_range(0..WORDS.len())]),
                })
                .collect();
            for v in &values {
                words.push(v.to_string());
            }
            json!({"enum": values})
        }
        5 => json!({}),
        6 | 7 => {
            let mut props = Map::new();
            let mut required = Vec::new();
            for _ in 0..rng.random_range(0..5) {
                let name = NAMES[rng.random_range(0..NAMES.len())];
                words.push(Value::String(name.into()).to_string());
                props.insert(name.into(), random_schema(rng, depth - 1, words));
                if rng.random_bool(0.5) && !required.contains(&name) {
                    required.push(name);
                }
            }
            let mut s = json!({"type": "object", "properties": props, "required": required});
            if rng.random_bool(0.5) {
                s["additionalProperties"] = json!(false);
            }
            s
        }
        _ => {
            let mut s = json!({"type": "array", "items": random_schema(rng, depth - 1, words)});
            if rng.random_bool(0.3) {
                let min = rng.random_range(0..3);
                s["minItems"] = json!(min);
                s["maxItems"] = json!(min + rng.random_range(0..3));
            }
            s
        }
    }
}

const CHUNKS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    " ",
    ", ",
    ": ",
    "0",
    "1",
    "7",
    "-",
    ".",
    "e",
    "E",
    "+",
    "a",
    "z",
    "\\",
    "\\n",
    "\\u",
    "\\u00e9",
    "\\ud83d",
    "\\ude00",
    "d8",
    "true",
    "false",
    "null",
    "12",
    "3.5",
    "\u{e9}",
    "\u{1F600}",
];

/// One random step: a byte the matcher allows, or a chunk from the alphabet.
fn random_chunk(rng: &mut StdRng, m: &Matcher, words: &[String]) -> Option<Vec<u8>> {
    for _ in 0..30 {
        let c: Vec<u8> = match rng.random_range(0..10) {
            0..=3 => CHUNKS[rng.random_range(0..CHUNKS.len())]
                .as_bytes()
                .to_vec(),
            4 | 5 if !words.is_empty() => {
                let w = words[rng.random_range(0..words.len())].as_bytes();
                // Whole words and their pieces, split UTF-8 included.
                let a = rng.random_range(0..w.len());
                let b = rng.random_range(a..=w.len());
                if rng.random_bool(0.5) {
                    w.to_vec()
                } else {
                    w[a..b].to_vec()
                }
            }
            6 => (0..rng.random_range(1..4))
                .map(|_| rng.random::<u8>())
                .collect(),
            _ => {
                let ok: Vec<u8> = (0..=255u8).filter(|&b| m.accepts(&[b])).collect();
                if ok.is_empty() {
                    return None;
                }
                vec![ok[rng.random_range(0..ok.len())]]
            }
        };
        if !c.is_empty() && m.accepts(&c) {
            return Some(c);
        }
    }
    None
}

fn finish_and_check(schema: &Schema, m: &Matcher, out: &[u8], what: &str) {
    let c = m.shortest_completion_bytes();
    let mut done = m.clone();
    assert!(
        done.advance(&c),
        "{what}: completion {:?} rejected after {:?}",
        String::from_utf8_lossy(&c),
        String::from_utf8_lossy(out)
    );
    assert!(done.is_complete(), "{what}: incomplete after completion");
    let mut text = out.to_vec();
    text.extend_from_slice(&c);
    let text = String::from_utf8(text).expect("output is UTF-8");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: {text:?} does not parse: {e}"));
    if let Err(e) = schema.validate(&v) {
        panic!("{what}: {text} invalid: {e}");
    }
    if std::str::from_utf8(&c).is_ok() {
        assert_eq!(m.shortest_completion().as_bytes(), &c[..]);
    }
}

#[test]
fn random_walks_complete_and_validate() {
    let mut rng = StdRng::seed_from_u64(0xba5a17);
    for round in 0..300 {
        let mut words = Vec::new();
        let sv = random_schema(&mut rng, 3, &mut words);
        let schema = Schema::compile(&sv).unwrap_or_else(|e| panic!("{sv}: {e}"));
        let g = Grammar::json(schema.clone());
        for walk in 0..6 {
            let mut m = g.matcher();
            let mut out = Vec::new();
            let steps = rng.random_range(0..80);
            for _ in 0..steps {
                let Some(c) = random_chunk(&mut rng, &m, &words) else {
                    break;
                };
                let mut probe = m.clone();
                assert!(probe.advance(&c), "accepts and advance disagree");
                m = probe;
                out.extend_from_slice(&c);
                if m.is_complete() {
                    let v: Value = serde_json::from_slice(&out).expect("complete output parses");
                    schema.validate(&v).expect("complete output validates");
                }
                if rng.random_bool(0.2) {
                    finish_and_check(
                        &schema,
                        &m,
                        &out,
                        &format!("round {round} walk {walk} schema {sv} (mid)"),
                    );
                }
            }
            finish_and_check(
                &schema,
                &m,
                &out,
                &format!("round {round} walk {walk} schema {sv}"),
            );
        }
    }
}

/// A random valid instance, written the way the grammar allows (optional spaces).
fn write_instance(rng: &mut StdRng, s: &Value, out: &mut String) {
    let sep = |rng: &mut StdRng, c: char, out: &mut String| {
        out.push(c);
        if rng.random_bool(0.5) {
            out.push(' ');
        }
    };
    if let Some(e) = s.get("enum") {
        let a = e.as_array().expect("enum array");
        out.push_str(&a[rng.random_range(0..a.len())].to_string());
        return;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") => {
            let pieces = [
                "a",
                "\u{e9}",
                "\u{1F600}",
                "\\n",
                "\\\"",
                "\\u00e9",
                "\\ud83d\\ude00",
                " ",
                "\\/",
            ];
            out.push('"');
            for _ in 0..rng.random_range(0..5) {
                out.push_str(pieces[rng.random_range(0..pieces.len())]);
            }
            out.push('"');
        }
        Some("number") => {
            let forms = ["0", "-0.5", "12.25", "3e7", "-1E-2", "6.02e+23", "123456"];
            out.push_str(forms[rng.random_range(0..forms.len())]);
        }
        Some("integer") => out.push_str(&rng.random_range(-5000..5000).to_string()),
        Some("boolean") => out.push_str(if rng.random_bool(0.5) {
            "true"
        } else {
            "false"
        }),
        Some("object") => {
            let required: Vec<&str> = s["required"]
                .as_array()
                .expect("required")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            out.push('{');
            let mut first = true;
            for (k, sub) in s["properties"].as_object().expect("properties") {
                if !required.contains(&k.as_str()) && rng.random_bool(0.5) {
                    continue;
                }
                if !first {
                    sep(rng, ',', out);
                }
                first = false;
                out.push_str(&Value::String(k.clone()).to_string());
                sep(rng, ':', out);
                write_instance(rng, sub, out);
            }
            out.push('}');
        }
        Some("array") => {
            let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let max = s.get("maxItems").and_then(Value::as_u64).unwrap_or(min + 3);
            out.push('[');
            for i in 0..rng.random_range(min..=max) {
                if i > 0 {
                    sep(rng, ',', out);
                }
                write_instance(rng, &s["items"], out);
            }
            out.push(']');
        }
        _ => {
            let any = ["null", "1", "\"s\"", "[1, {\"a\": []}]", "{\"k\":true}"];
            out.push_str(any[rng.random_range(0..any.len())]);
        }
    }
}

#[test]
fn random_valid_instances_are_accepted() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let sv = random_schema(&mut rng, 3, &mut Vec::new());
        let schema = Schema::compile(&sv).expect("compiles");
        let g = Grammar::json(schema.clone());
        for _ in 0..5 {
            let mut text = String::new();
            write_instance(&mut rng, &sv, &mut text);
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            schema
                .validate(&v)
                .unwrap_or_else(|e| panic!("{sv}: {text}: {e}"));
            let mut m = g.matcher();
            for (i, b) in text.bytes().enumerate() {
                assert!(m.advance(&[b]), "{sv}: byte {i} of {text} rejected");
            }
            assert!(m.is_complete(), "{sv}: {text} incomplete");
        }
    }
}

fn toy_vocab() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for s in CHUNKS.iter().chain(NAMES).chain(WORDS) {
        v.push(s.as_bytes().to_vec());
    }
    for s in [
        "{\"",
        "\":",
        "\": ",
        "\",",
        "\", \"",
        "}}",
        "]}",
        "\"}",
        "ing",
        " the",
        "00",
        "true,",
        "\u{e9}\"",
        "\"\u{1F600}",
    ] {
        v.push(s.as_bytes().to_vec());
    }
    v
}

#[test]
fn random_walks_over_a_token_trie() {
    let vocab = toy_vocab();
    let trie = TokenTrie::new(vocab.iter().enumerate().map(|(i, t)| (i as u32, t.clone())));
    let mut rng = StdRng::seed_from_u64(99);
    let mut allowed = Vec::new();
    for round in 0..200 {
        let sv = random_schema(&mut rng, 3, &mut Vec::new());
        let schema = Schema::compile(&sv).expect("compiles");
        let g = Grammar::json(schema.clone());
        let mut m = g.matcher();
        let mut out = Vec::new();
        for _ in 0..rng.random_range(0..60) {
            trie.allowed(&m, &mut allowed);
            let mut want: Vec<u32> = (0..vocab.len() as u32)
                .filter(|&i| m.accepts(&vocab[i as usize]))
                .collect();
            allowed.sort_unstable();
            want.sort_unstable();
            assert_eq!(
                allowed,
                want,
                "round {round}: trie and accepts disagree after {:?}",
                String::from_utf8_lossy(&out)
            );
            if allowed.is_empty() {
                assert!(m.is_finished(), "nothing allowed but not finished");
                break;
            }
            let t = &vocab[allowed[rng.random_range(0..allowed.len())] as usize];
            assert!(m.advance(t));
            out.extend_from_slice(t);
        }
        finish_and_check(
            &schema,
            &m,
            &out,
            &format!("trie round {round} schema {sv}"),
        );
    }
}

#[test]
fn tool_call_random_walks() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..100 {
        let tools: Vec<(String, Value)> = (0..rng.random_range(1..4))
            .map(|i| {
                (
                    format!("tool_{i}{}", if i % 2 == 0 { "x" } else { "" }),
                    random_schema(&mut rng, 2, &mut Vec::new()),
                )
            })
            .collect();
        let g = Grammar::tool_call(
            tools
                .iter()
                .map(|(n, s)| (n.clone(), Schema::compile(s).expect("compiles")))
                .collect(),
            "<tc>",
            "</tc>",
        );
        let words: Vec<String> = [
            "<tc>",
            "{\"name\": \"",
            "tool_",
            "0x",
            "1",
            "\", \"arguments\": ",
            "</tc>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut m = g.matcher();
        let mut out = Vec::new();
        for _ in 0..rng.random_range(0..120) {
            let Some(c) = random_chunk(&mut rng, &m, &words) else {
                break;
            };
            assert!(m.advance(&c));
            out.extend_from_slice(&c);
        }
        let c = m.shortest_completion_bytes();
        assert!(
            m.advance(&c) && m.is_finished(),
            "{:?} + {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&c)
        );
        out.extend_from_slice(&c);
        let text = String::from_utf8(out).expect("UTF-8");
        let body = text
            .strip_prefix("<tc>")
            .and_then(|t| t.strip_suffix("</tc>"))
            .expect("wrapped");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        let name = v["name"].as_str().expect("name");
        let (_, s) = tools.iter().find(|(n, _)| n == name).expect("known tool");
        Schema::compile(s)
            .expect("compiles")
            .validate(&v["arguments"])
            .unwrap_or_else(|e| panic!("{body}: {e}"));
    }
}
