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
use basalt_guardrails::calibration::Logistic;
use basalt_guardrails::calibration::{
    best_threshold, fit_logistic, fit_scale, Calibration, CategoryModel,
};
use basalt_guardrails::config::{ContentCategory, Strength};
use basalt_guardrails::screen::{probability_cut, ScreenCalibration, ScreenCategory};
use basalt_guardrails::{dot, normalise, Embedder};
use basalt_server::guardrails::{BatchedEmbedder, StaticScreen};
use serde::Deserialize;

/// Probabilities where confidence becomes LOW, MEDIUM and HIGH.
const CONFIDENCE_CUTS: [f32; 3] = [0.5, 0.75, 0.9];
/// The screen must keep every calibration window whose full-model probability reaches
/// this (under LOW's 0.5: a margin on the model's side)...
const SCREEN_NEAR_PROBABILITY: f32 = 0.4;
/// ...and its cut sits this far (in logits) under the lowest such window's score.
const SCREEN_LOGIT_MARGIN: f32 = 1.0;
/// Likewise for topics: keep every pair within this of the topic threshold...
const SCREEN_NEAR_TOPIC: f32 = 0.05;
/// ...with the cut this far (in cosine) under the lowest such pair's screen score.
const SCREEN_TOPIC_MARGIN: f32 = 0.05;
/// The least share of held-out windows (every check on) the screen must clear to ship.
const MIN_SCREEN_CLEARED: f32 = 0.10;

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
pub(crate) fn load_embedder(models_dir: &Path) -> Result<(BatchedEmbedder, String, PathBuf)> {
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
    Ok((BatchedEmbedder(model), name.clone(), dir))
}

/// Builds the guardrail screen's static token vectors into the models cache (a step
/// of `basalt models fetch`), unless they are there already.
pub fn prepare_screen(models_dir: &Path) -> Result<()> {
    if Calibration::embedded()
        .and_then(|c| c.screen.as_ref())
        .is_none()
    {
        println!("guardrail screen: off in the shipped calibration; nothing to build");
        return Ok(());
    }
    let (embedder, _, model_dir) = load_embedder(models_dir)?;
    let started = std::time::Instant::now();
    let screen = StaticScreen::load_or_build(&embedder.0, &model_dir, models_dir)
        .map_err(|e| anyhow!("the guardrail screen: {e}"))?;
    println!(
        "guardrail screen: {} static token vectors ready ({:.1} s)",
        screen.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn run(models_dir: &Path, data: &Path, out: &Path, report: Option<PathBuf>) -> Result<()> {
    let (embedder, name, model_dir) = load_embedder(models_dir)?;
    eprintln!("loading or building the screen's static token vectors");
    let screen = StaticScreen::load_or_build(&embedder.0, &model_dir, models_dir)
        .map_err(|e| anyhow!("the guardrail screen: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(calibrate(&embedder, &screen, &name, data, out, report))
}

async fn calibrate(
    embedder: &BatchedEmbedder,
    screen: &StaticScreen,
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
    // The held-out texts are judged as the server judges them: by its windows and
    // the sentences it scores alone.
    let mut windows = Vec::new();
    let mut owner = Vec::new();
    for (k, item) in heldout.iter().enumerate() {
        for unit in basalt_guardrails::assess::scoring_units(&[item.text.as_str()]) {
            windows.push(unit.to_string());
            owner.push(k);
        }
    }
    let windows_text = windows.clone();
    let held_x = embed(windows).await?;

    let mut calibration = Calibration {
        embedding_model: format!("{model_name} (all-MiniLM-L6-v2, the default embedding package)"),
        content,
        confidence_cuts: CONFIDENCE_CUTS,
        topic_threshold: 0.5,
        screen: None,
        grounding: basalt_guardrails::calibration::Scale {
            slope: 1.0,
            offset: 0.0,
        },
        relevance: basalt_guardrails::calibration::Scale {
            slope: 1.0,
            offset: 0.0,
        },
    };

    let all_windows = vec![true; held_x.len()];
    writeln!(
        report,
        "### Content filters (held-out: {} texts)\n",
        heldout.len()
    )?;
    let full_table = content_table(&calibration, &heldout, &held_x, &owner, &all_windows)?;
    report.push_str(&full_table);
    // Denied topics.
    let topics: Vec<TopicSet> = read_jsonl(&data.join("denied_topics.jsonl"))?;
    let mut train_scores = Vec::new();
    let mut train_ys = Vec::new();
    let mut held: Vec<HeldTopic> = Vec::new();
    // Every topic's spec vectors, and every topic text's vector, for the screen.
    let mut spec_full = Vec::new();
    let mut topic_texts: Vec<(&TopicText, Vec<f32>)> = Vec::new();
    for set in &topics {
        let mut spec_texts = vec![format!("{}: {}", set.topic.name, set.topic.definition)];
        spec_texts.extend(set.topic.examples.iter().cloned());
        let spec_vecs = embed(spec_texts.clone()).await?;
        let text_vecs = embed(set.texts.iter().map(|t| t.text.clone()).collect()).await?;
        for (t, v) in set.texts.iter().zip(&text_vecs) {
            let score = spec_vecs.iter().map(|s| dot(s, v)).fold(f32::MIN, f32::max);
            if t.split == "train" {
                train_scores.push(score);
                train_ys.push(t.matches);
            } else {
                held.push(HeldTopic {
                    topic: set.topic.name.clone(),
                    text: t.text.clone(),
                    score,
                    actual: t.matches,
                });
            }
        }
        topic_texts.extend(set.texts.iter().zip(text_vecs));
        spec_full.push((spec_texts, spec_vecs));
    }
    calibration.topic_threshold = best_threshold(&train_scores, &train_ys);
    writeln!(
        report,
        "\n### Denied topics (threshold {:.3} on cosine similarity, held-out: {} texts)\n",
        calibration.topic_threshold,
        held.len()
    )?;
    let all_topics = vec![true; held.len()];
    let full_topics = topic_table(&held, calibration.topic_threshold, &all_topics)?;
    report.push_str(&full_topics);

    // The screen.
    let screen_of = |texts: Vec<&str>| -> Result<Vec<Vec<f32>>> {
        screen
            .screen(&texts)
            .map(|s| s.vectors)
            .ok_or_else(|| anyhow!("the screen's tokenizer failed"))
    };
    let train_s = screen_of(train.iter().map(|i| i.text.as_str()).collect())?;
    let mut screen_content = Vec::new();
    for category in ContentCategory::ALL {
        let Some(full) = calibration.category(category) else {
            continue;
        };
        let near: Vec<bool> = train_x
            .iter()
            .map(|x| full.probability(x) >= SCREEN_NEAR_PROBABILITY)
            .collect();
        let ys: Vec<bool> = train
            .iter()
            .zip(&near)
            .map(|(i, &n)| n || i.labels.iter().any(|l| l == category.as_str()))
            .collect();
        let model = fit_logistic(&train_s, &ys, 1e-3, 1500);
        let kept: Vec<f32> = train_s
            .iter()
            .zip(&near)
            .filter(|(_, &n)| n)
            .map(|(v, _)| model.probability(v))
            .collect();
        // Nothing flagged to learn from: the screen clears nothing for the category.
        let cut = probability_cut(&kept, SCREEN_LOGIT_MARGIN).unwrap_or(0.0);
        screen_content.push(ScreenCategory {
            category,
            model,
            cut,
        });
    }
    let spec_screen: Vec<Vec<Vec<f32>>> = spec_full
        .iter()
        .map(|(texts, _)| screen_of(texts.iter().map(String::as_str).collect()))
        .collect::<Result<_>>()?;
    let topic_screen = screen_of(topic_texts.iter().map(|(t, _)| t.text.as_str()).collect())?;
    let mut kept_pairs = Vec::new();
    for ((t, full), sv) in topic_texts.iter().zip(&topic_screen) {
        if t.split != "train" {
            continue;
        }
        for ((_, spec), spec_s) in spec_full.iter().zip(&spec_screen) {
            let f = spec.iter().map(|s| dot(s, full)).fold(f32::MIN, f32::max);
            if f >= calibration.topic_threshold - SCREEN_NEAR_TOPIC {
                kept_pairs.push(spec_s.iter().map(|s| dot(s, sv)).fold(f32::MIN, f32::max));
            }
        }
    }
    let topic_cut = kept_pairs.iter().copied().fold(f32::INFINITY, f32::min) - SCREEN_TOPIC_MARGIN;
    let screen_cal = ScreenCalibration {
        key: screen.key().to_string(),
        content: screen_content,
        topic_cut: if topic_cut.is_finite() {
            topic_cut
        } else {
            f32::MIN
        },
    };

    // The screen on the held-out split: what it clears, and what it would have hidden.
    let held_s = screen_of(windows_text.iter().map(String::as_str).collect())?;
    let needs_all = |v: &[f32]| screen_cal.needs_model(v, &ContentCategory::ALL, &spec_screen);
    let content_keep: Vec<bool> = held_s.iter().map(|v| needs_all(v)).collect();
    writeln!(report, "\n### The screen (held-out split)\n")?;
    writeln!(
        report,
        "| Check | Windows the model flags | Of those, cleared by the screen (false negatives) | Windows cleared |\n|---|---|---|---|"
    )?;
    for sc in &screen_cal.content {
        let Some(full) = calibration.category(sc.category) else {
            continue;
        };
        let (mut flagged, mut missed, mut cleared) = (0, 0, 0);
        for (x, v) in held_x.iter().zip(&held_s) {
            let clear = sc.model.probability(v) < sc.cut;
            let flag = full.probability(x) >= CONFIDENCE_CUTS[0];
            flagged += usize::from(flag);
            missed += usize::from(flag && clear);
            cleared += usize::from(clear);
        }
        writeln!(
            report,
            "| {} (alone, cut {:.3}) | {flagged} | {missed} | {cleared} of {} |",
            sc.category.as_str(),
            sc.cut,
            held_x.len()
        )?;
    }
    let held_topic_s = screen_of(held.iter().map(|h| h.text.as_str()).collect())?;
    let held_topic_full = embed(held.iter().map(|h| h.text.clone()).collect()).await?;
    let (mut flagged, mut missed, mut cleared, mut pairs) = (0, 0, 0, 0);
    for (x, v) in held_topic_full.iter().zip(&held_topic_s) {
        for ((_, spec), spec_s) in spec_full.iter().zip(&spec_screen) {
            let f = spec.iter().map(|s| dot(s, x)).fold(f32::MIN, f32::max);
            let s = spec_s.iter().map(|s| dot(s, v)).fold(f32::MIN, f32::max);
            let flag = f >= calibration.topic_threshold;
            let clear = s < screen_cal.topic_cut;
            pairs += 1;
            flagged += usize::from(flag);
            missed += usize::from(flag && clear);
            cleared += usize::from(clear);
        }
    }
    writeln!(
        report,
        "| denied topics (text, topic) pairs (cut {:.3}) | {flagged} | {missed} | {cleared} of {pairs} |",
        screen_cal.topic_cut
    )?;
    let topic_keep: Vec<bool> = held_topic_s.iter().map(|v| needs_all(v)).collect();
    let skipped = content_keep
        .iter()
        .chain(&topic_keep)
        .filter(|&&k| !k)
        .count();
    writeln!(
        report,
        "\nWith every check on (6 categories, 9 topics), the screen clears {skipped} of {} held-out windows ({:.0}%).",
        content_keep.len() + topic_keep.len(),
        100.0 * skipped as f32 / (content_keep.len() + topic_keep.len()).max(1) as f32
    )?;
    // The benchmark's 500-token support message: which checks keep each piece.
    let bench: Vec<&str> =
        basalt_guardrails::assess::scoring_units(&[crate::guardrail_bench::INPUT]);
    let bench_s = screen_of(bench.clone())?;
    let mut bench_notes = Vec::new();
    for v in &bench_s {
        let mut keeps: Vec<String> = screen_cal
            .content
            .iter()
            .filter(|c| c.model.probability(v) >= c.cut)
            .map(|c| format!("{} {:.3}", c.category.as_str(), c.model.probability(v)))
            .collect();
        let best_topic = spec_screen
            .iter()
            .flat_map(|t| t.iter().map(|tv| dot(tv, v)))
            .fold(f32::MIN, f32::max);
        if best_topic >= screen_cal.topic_cut {
            keeps.push(format!("topic {best_topic:.3}"));
        }
        bench_notes.push(if keeps.is_empty() {
            "cleared".to_string()
        } else {
            keeps.join(", ")
        });
    }
    eprintln!("benchmark input windows: {}", bench_notes.join(" | "));
    writeln!(
        report,
        "On the benchmark's 500-token support message, it clears {} of {} windows.",
        bench_notes.iter().filter(|n| *n == "cleared").count(),
        bench_notes.len()
    )?;
    let cascade_table = content_table(&calibration, &heldout, &held_x, &owner, &content_keep)?;
    let cascade_topics = topic_table(&held, calibration.topic_threshold, &topic_keep)?;
    for (what, full, cascade) in [
        ("content-filter", &full_table, &cascade_table),
        ("denied-topic", &full_topics, &cascade_topics),
    ] {
        if full == cascade {
            writeln!(
                report,
                "\nThe {what} table end to end through the screen and the model is the same as the model's alone."
            )?;
        } else {
            writeln!(
                report,
                "\nThe {what} table end to end through the screen and the model differs:\n\n{cascade}"
            )?;
        }
    }
    // A screen that clears little costs more (tokenising every window, and building
    // the token table) than it saves: it ships only when it clears enough.
    let share = skipped as f32 / (content_keep.len() + topic_keep.len()).max(1) as f32;
    if share >= MIN_SCREEN_CLEARED {
        calibration.screen = Some(screen_cal);
        writeln!(
            report,
            "\nThe screen is on: it is written into the calibration."
        )?;
    } else {
        writeln!(
            report,
            "\nThe screen is off: it clears under {:.0}% of windows with every check on, so the calibration leaves it out and every window goes to the model.",
            100.0 * MIN_SCREEN_CLEARED
        )?;
    }

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

/// A held-out denied-topic text and its best similarity to its topic.
struct HeldTopic {
    topic: String,
    text: String,
    score: f32,
    actual: bool,
}

/// The content-filter precision/recall rows; a window whose `keep` is false was
/// cleared by the screen and counts as probability 0.
fn content_table(
    calibration: &Calibration,
    heldout: &[&Labelled],
    held_x: &[Vec<f32>],
    owner: &[usize],
    keep: &[bool],
) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "| Category | Positives | Strength LOW: P / R | MEDIUM: P / R | HIGH: P / R |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for category in ContentCategory::ALL {
        let Some(m): Option<&Logistic> = calibration.category(category) else {
            continue;
        };
        let mut best = vec![0.0f32; heldout.len()];
        for ((x, &k), &kept) in held_x.iter().zip(owner).zip(keep) {
            if kept {
                best[k] = best[k].max(m.probability(x));
            }
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
        writeln!(out, "{row}")?;
    }
    Ok(out)
}

/// The denied-topic precision/recall rows; a text whose `keep` is false was cleared by
/// the screen and matches nothing.
fn topic_table(held: &[HeldTopic], threshold: f32, keep: &[bool]) -> Result<String> {
    let mut by_topic: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut all = Tally::default();
    for (h, &kept) in held.iter().zip(keep) {
        let predicted = kept && h.score >= threshold;
        by_topic
            .entry(&h.topic)
            .or_default()
            .add(predicted, h.actual);
        all.add(predicted, h.actual);
    }
    let mut out = String::new();
    writeln!(out, "| Topic | Precision | Recall |\n|---|---|---|")?;
    for (name, t) in &by_topic {
        writeln!(out, "| {name} | {:.2} | {:.2} |", t.precision(), t.recall())?;
    }
    writeln!(
        out,
        "| **all** | **{:.2}** | **{:.2}** |",
        all.precision(),
        all.recall()
    )?;
    Ok(out)
}
