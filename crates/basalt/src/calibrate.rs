//! `basalt guardrails calibrate`: learns the guardrail calibration from the labelled
//! sets in crates/basalt-guardrails/data with the real embedding model, writes
//! data/calibration.json, and reports precision and recall on the held-out split.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use basalt_catalog::{Catalog, LocalModelKind};
use basalt_engine::{EmbeddingModel, EmbeddingModelConfig};
use basalt_guardrails::assess::{grounding_features, prompt_attack_lexicon_matches};
use basalt_guardrails::calibration::{
    best_threshold, fit_logistic, fit_scale, Calibration, CategoryModel,
};
use basalt_guardrails::config::{ContentCategory, Strength};
use basalt_guardrails::{dot, normalise, sentences, Embedder};
use basalt_server::guardrails::BatchedEmbedder;
use serde::Deserialize;

/// Probabilities where confidence becomes LOW, MEDIUM and HIGH.
const CONFIDENCE_CUTS: [f32; 3] = [0.5, 0.75, 0.9];
const WINDOW_WORDS: usize = 48;

#[derive(Deserialize)]
struct Labelled {
    text: String,
    labels: Vec<String>,
    split: String,
}

#[derive(Deserialize)]
struct TopicSet {
    topic: TopicSpec,
    texts: Vec<TopicText>,
}

#[derive(Deserialize)]
struct TopicSpec {
    name: String,
    definition: String,
    #[serde(default)]
    examples: Vec<String>,
}

#[derive(Deserialize)]
struct TopicText {
    text: String,
    #[serde(rename = "match")]
    matches: bool,
    split: String,
}

#[derive(Deserialize)]
struct GroundingCase {
    source: String,
    query: String,
    response: String,
    grounded: bool,
    relevant: bool,
    split: String,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Tally {
    tp: u32,
    fp: u32,
    fn_: u32,
}

impl Tally {
    fn add(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            _ => {}
        }
    }
    fn precision(&self) -> f32 {
        ratio(self.tp, self.tp + self.fp)
    }
    fn recall(&self) -> f32 {
        ratio(self.tp, self.tp + self.fn_)
    }
}

fn ratio(a: u32, b: u32) -> f32 {
    if b == 0 {
        f32::NAN
    } else {
        a as f32 / b as f32
    }
}

/// The catalog's embedding model, loaded from the model cache, and its local name.
pub(crate) fn load_embedder(models_dir: &Path) -> Result<(BatchedEmbedder, String)> {
    let catalog = Catalog::builtin();
    let (name, spec) = catalog
        .local_models()
        .iter()
        .find(|(_, m)| m.kind == LocalModelKind::Bert)
        .ok_or_else(|| anyhow!("the catalog has no embedding model"))?;
    let dir = if Path::new(&spec.path).is_absolute() {
        PathBuf::from(&spec.path)
    } else {
        models_dir.join(&spec.path)
    };
    let model = EmbeddingModel::load(&EmbeddingModelConfig {
        dir: dir.clone(),
        max_tokens: spec.max_tokens,
        max_queue: 64,
    })
    .map_err(|e| {
        anyhow!(
            "loading {name} from {}: {e} (run `basalt models fetch`)",
            dir.display()
        )
    })?;
    Ok((BatchedEmbedder(model), name.clone()))
}

pub fn run(models_dir: &Path, data: &Path, out: &Path, report: Option<PathBuf>) -> Result<()> {
    let (embedder, name) = load_embedder(models_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(calibrate(&embedder, &name, data, out, report))
}

async fn calibrate(
    embedder: &BatchedEmbedder,
    model_name: &str,
    data: &Path,
    out: &Path,
    report_path: Option<PathBuf>,
) -> Result<()> {
    let mut report = String::new();
    let embed = |texts: Vec<String>| async move {
        embedder
            .embed(texts)
            .await
            .map(|v| v.into_iter().map(normalise).collect::<Vec<_>>())
            .map_err(|e| anyhow!(e))
    };

    // Content filters.
    let items: Vec<Labelled> = read_jsonl(&data.join("content_filters.jsonl"))?;
    let (train, heldout): (Vec<&Labelled>, Vec<&Labelled>) =
        items.iter().partition(|i| i.split == "train");
    eprintln!("embedding {} content-filter texts", items.len());
    let train_x = embed(train.iter().map(|i| i.text.clone()).collect()).await?;
    let mut content = Vec::new();
    for category in ContentCategory::ALL {
        let ys: Vec<bool> = train
            .iter()
            .map(|i| i.labels.iter().any(|l| l == category.as_str()))
            .collect();
        let model = fit_logistic(&train_x, &ys, 1e-3, 1500);
        content.push(CategoryModel { category, model });
    }
    // The held-out texts are judged as the server judges them: window by window.
    let mut windows = Vec::new();
    let mut owner = Vec::new();
    for (k, item) in heldout.iter().enumerate() {
        for (s, e) in sentences::windows(&item.text, WINDOW_WORDS) {
            windows.push(item.text[s..e].to_string());
            owner.push(k);
        }
    }
    let held_x = embed(windows).await?;

    let mut calibration = Calibration {
        embedding_model: format!("{model_name} (all-MiniLM-L6-v2, the default embedding package)"),
        content,
        confidence_cuts: CONFIDENCE_CUTS,
        topic_threshold: 0.5,
        grounding: basalt_guardrails::calibration::Scale {
            slope: 1.0,
            offset: 0.0,
        },
        relevance: basalt_guardrails::calibration::Scale {
            slope: 1.0,
            offset: 0.0,
        },
    };

    writeln!(
        report,
        "### Content filters (held-out: {} texts)\n",
        heldout.len()
    )?;
    writeln!(
        report,
        "| Category | Positives | Strength LOW: P / R | MEDIUM: P / R | HIGH: P / R |"
    )?;
    writeln!(report, "|---|---|---|---|---|")?;
    for category in ContentCategory::ALL {
        let Some(m) = calibration.category(category) else {
            continue;
        };
        let mut best = vec![0.0f32; heldout.len()];
        for (x, &k) in held_x.iter().zip(&owner) {
            best[k] = best[k].max(m.probability(x));
        }
        let mut row = format!("| {} | ", category.as_str());
        let positives = heldout
            .iter()
            .filter(|i| i.labels.iter().any(|l| l == category.as_str()))
            .count();
        write!(row, "{positives} |")?;
        for strength in [Strength::Low, Strength::Medium, Strength::High] {
            let mut t = Tally::default();
            for (item, &p) in heldout.iter().zip(&best) {
                let mut confidence = calibration.confidence(p);
                if category == ContentCategory::PromptAttack
                    && prompt_attack_lexicon_matches(&item.text)
                {
                    confidence = Strength::High;
                }
                let actual = item.labels.iter().any(|l| l == category.as_str());
                t.add(strength.catches(confidence), actual);
            }
            write!(row, " {:.2} / {:.2} |", t.precision(), t.recall())?;
        }
        writeln!(report, "{row}")?;
    }

    // Denied topics.
    let topics: Vec<TopicSet> = read_jsonl(&data.join("denied_topics.jsonl"))?;
    let mut train_scores = Vec::new();
    let mut train_ys = Vec::new();
    let mut held: Vec<(String, f32, bool)> = Vec::new();
    for set in &topics {
        let mut spec_texts = vec![format!("{}: {}", set.topic.name, set.topic.definition)];
        spec_texts.extend(set.topic.examples.iter().cloned());
        let spec_vecs = embed(spec_texts).await?;
        let text_vecs = embed(set.texts.iter().map(|t| t.text.clone()).collect()).await?;
        for (t, v) in set.texts.iter().zip(&text_vecs) {
            let score = spec_vecs.iter().map(|s| dot(s, v)).fold(f32::MIN, f32::max);
            if t.split == "train" {
                train_scores.push(score);
                train_ys.push(t.matches);
            } else {
                held.push((set.topic.name.clone(), score, t.matches));
            }
        }
    }
    calibration.topic_threshold = best_threshold(&train_scores, &train_ys);
    let mut by_topic: BTreeMap<String, Tally> = BTreeMap::new();
    let mut all = Tally::default();
    for (name, score, actual) in &held {
        let predicted = *score >= calibration.topic_threshold;
        by_topic
            .entry(name.clone())
            .or_default()
            .add(predicted, *actual);
        all.add(predicted, *actual);
    }
    writeln!(
        report,
        "\n### Denied topics (threshold {:.3} on cosine similarity, held-out: {} texts)\n",
        calibration.topic_threshold,
        held.len()
    )?;
    writeln!(report, "| Topic | Precision | Recall |\n|---|---|---|")?;
    for (name, t) in &by_topic {
        writeln!(
            report,
            "| {name} | {:.2} | {:.2} |",
            t.precision(),
            t.recall()
        )?;
    }
    writeln!(
        report,
        "| **all** | **{:.2}** | **{:.2}** |",
        all.precision(),
        all.recall()
    )?;

    // Contextual grounding.
    let cases: Vec<GroundingCase> = read_jsonl(&data.join("grounding.jsonl"))?;
    let mut feats = Vec::new();
    for c in &cases {
        feats.push(
            grounding_features(&c.source, &c.query, &c.response, embedder)
                .await
                .map_err(|e| anyhow!("{e}"))?,
        );
    }
    let train_idx: Vec<usize> = (0..cases.len())
        .filter(|&i| cases[i].split == "train")
        .collect();
    calibration.grounding = fit_scale(
        &train_idx
            .iter()
            .map(|&i| feats[i].grounding)
            .collect::<Vec<_>>(),
        &train_idx
            .iter()
            .map(|&i| cases[i].grounded)
            .collect::<Vec<_>>(),
    );
    calibration.relevance = fit_scale(
        &train_idx
            .iter()
            .map(|&i| feats[i].relevance)
            .collect::<Vec<_>>(),
        &train_idx
            .iter()
            .map(|&i| cases[i].relevant)
            .collect::<Vec<_>>(),
    );
    let (mut ungrounded, mut irrelevant) = (Tally::default(), Tally::default());
    let held_cases: Vec<usize> = (0..cases.len())
        .filter(|&i| cases[i].split != "train")
        .collect();
    for &i in &held_cases {
        // A filter at threshold 0.5 flags scores below it.
        ungrounded.add(
            calibration.grounding.apply(feats[i].grounding) < 0.5,
            !cases[i].grounded,
        );
        irrelevant.add(
            calibration.relevance.apply(feats[i].relevance) < 0.5,
            !cases[i].relevant,
        );
    }
    writeln!(
        report,
        "\n### Contextual grounding (threshold 0.5, held-out: {} cases)\n",
        held_cases.len()
    )?;
    writeln!(
        report,
        "| Filter | Flags | Precision | Recall |\n|---|---|---|---|"
    )?;
    writeln!(
        report,
        "| GROUNDING | ungrounded responses | {:.2} | {:.2} |",
        ungrounded.precision(),
        ungrounded.recall()
    )?;
    writeln!(
        report,
        "| RELEVANCE | irrelevant responses | {:.2} | {:.2} |",
        irrelevant.precision(),
        irrelevant.recall()
    )?;

    let json = serde_json::to_string(&calibration)?;
    std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    println!("{report}");
    if let Some(p) = report_path {
        std::fs::write(&p, &report).with_context(|| format!("writing {}", p.display()))?;
    }
    eprintln!("wrote {}", out.display());
    Ok(())
}
