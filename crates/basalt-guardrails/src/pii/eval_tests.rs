//! Precision/recall over the labelled set in data/pii/eval.jsonl.
//! `cargo test -p basalt-guardrails pii_eval -- --nocapture` prints the tables.

use std::collections::BTreeMap;

use super::{detect, PiiType};

const EVAL: &str = include_str!("../../data/pii/eval.jsonl");

#[derive(Default, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Counts {
    fn precision(self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    fn recall(self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    fn f1(self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Scores one split; prints a markdown table and every miss.
fn evaluate(split: &str) -> Counts {
    let mut per: BTreeMap<PiiType, Counts> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut sentences = 0;
    for line in EVAL.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).expect("eval line is JSON");
        if row["split"] != split {
            continue;
        }
        sentences += 1;
        let text = row["text"].as_str().expect("text");
        let mut gold: Vec<(PiiType, String)> = row["entities"]
            .as_array()
            .expect("entities")
            .iter()
            .map(|e| {
                let t = e["type"].as_str().expect("type");
                let kind = PiiType::parse(t).unwrap_or_else(|| panic!("unknown type {t}"));
                (kind, e["value"].as_str().expect("value").to_string())
            })
            .collect();
        for m in detect(text, &PiiType::ALL) {
            let value = &text[m.start..m.end];
            let c = per.entry(m.kind).or_default();
            if let Some(i) = gold.iter().position(|(k, v)| *k == m.kind && v == value) {
                gold.swap_remove(i);
                c.tp += 1;
            } else {
                c.fp += 1;
                misses.push(format!("FP {} {value:?} in {text:?}", m.kind));
            }
        }
        for (k, v) in gold {
            per.entry(k).or_default().fn_ += 1;
            misses.push(format!("FN {k} {v:?} in {text:?}"));
        }
    }
    let mut total = Counts::default();
    println!("\n### PII eval, split `{split}` ({sentences} sentences)\n");
    println!("| type | TP | FP | FN | precision | recall |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (k, c) in &per {
        println!(
            "| {k} | {} | {} | {} | {:.2} | {:.2} |",
            c.tp,
            c.fp,
            c.fn_,
            c.precision(),
            c.recall()
        );
        total.tp += c.tp;
        total.fp += c.fp;
        total.fn_ += c.fn_;
    }
    println!(
        "| **micro** | {} | {} | {} | {:.2} | {:.2} |\n\nmicro F1 = {:.3}\n",
        total.tp,
        total.fp,
        total.fn_,
        total.precision(),
        total.recall(),
        total.f1()
    );
    for m in &misses {
        println!("- {m}");
    }
    total
}

#[test]
fn pii_eval_report() {
    let heldout = evaluate("heldout");
    assert!(
        heldout.f1() >= 0.8,
        "heldout micro F1 {:.3} fell below 0.8",
        heldout.f1()
    );
}

#[test]
fn pii_eval_dev() {
    let dev = evaluate("dev");
    assert!(
        dev.f1() >= 0.85,
        "dev micro F1 {:.3} fell below 0.85",
        dev.f1()
    );
}

#[test]
fn eval_covers_every_type() {
    let mut seen = std::collections::BTreeSet::new();
    for line in EVAL.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).expect("eval line is JSON");
        for e in row["entities"].as_array().expect("entities") {
            seen.insert(e["type"].as_str().expect("type").to_string());
        }
    }
    for t in PiiType::ALL {
        assert!(seen.contains(t.as_str()), "{t} has no labelled example");
    }
}
