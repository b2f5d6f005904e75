//! The numbers that turn embeddings into guardrail decisions: one logistic
//! classifier per content-filter category, the denied-topic similarity threshold,
//! and the grounding and relevance score scales. They are learned from the labelled
//! sets in `data/` by `basalt guardrails calibrate`, which writes
//! `data/calibration.json`; that file is compiled in.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::config::{ContentCategory, Strength};
use crate::dot;
use crate::screen::ScreenCalibration;

const EMBEDDED: &str = include_str!("../data/calibration.json");

static CALIBRATION: LazyLock<Option<Calibration>> =
    LazyLock::new(|| serde_json::from_str(EMBEDDED).ok());

/// A logistic model over sentence embeddings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Logistic {
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl Logistic {
    pub fn probability(&self, x: &[f32]) -> f32 {
        sigmoid(dot(&self.weights, x) + self.bias)
    }
}

/// A logistic map of one raw score onto [0, 1].
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Scale {
    pub slope: f32,
    pub offset: f32,
}

impl Scale {
    pub fn apply(&self, raw: f32) -> f32 {
        sigmoid(self.slope * raw + self.offset)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CategoryModel {
    pub category: ContentCategory,
    pub model: Logistic,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Calibration {
    /// The embedding model the vectors came from (its package and sha256).
    pub embedding_model: String,
    pub content: Vec<CategoryModel>,
    /// Probabilities at which a category's confidence becomes LOW, MEDIUM and HIGH.
    pub confidence_cuts: [f32; 3],
    /// Cosine similarity at or above which a text matches a denied topic.
    pub topic_threshold: f32,
    pub grounding: Scale,
    pub relevance: Scale,
    /// The cheap first stage for topics and content filters; absent, every window
    /// goes through the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<ScreenCalibration>,
}

impl Calibration {
    /// The compiled-in calibration; `None` only if the file is missing or damaged,
    /// which the crate's tests rule out.
    pub fn embedded() -> Option<&'static Calibration> {
        CALIBRATION.as_ref()
    }

    pub fn category(&self, category: ContentCategory) -> Option<&Logistic> {
        self.content
            .iter()
            .find(|c| c.category == category)
            .map(|c| &c.model)
    }

    pub fn confidence(&self, probability: f32) -> Strength {
        let [low, medium, high] = self.confidence_cuts;
        if probability >= high {
            Strength::High
        } else if probability >= medium {
            Strength::Medium
        } else if probability >= low {
            Strength::Low
        } else {
            Strength::None
        }
    }
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Fits a logistic model by full-batch gradient descent with L2 regularisation.
/// Positives and negatives are weighted equally overall, so that a small class is
/// not drowned by the benign majority.
pub fn fit_logistic(xs: &[Vec<f32>], ys: &[bool], l2: f32, epochs: usize) -> Logistic {
    let dim = xs.first().map_or(0, Vec::len);
    let positives = ys.iter().filter(|&&y| y).count().max(1) as f32;
    let negatives = ys.iter().filter(|&&y| !y).count().max(1) as f32;
    let mut w = vec![0.0f32; dim];
    let mut b = 0.0f32;
    let rate = 0.5f32;
    let total = positives + negatives;
    for _ in 0..epochs {
        let mut gw = vec![0.0f32; dim];
        let mut gb = 0.0f32;
        for (x, &y) in xs.iter().zip(ys) {
            let p = sigmoid(dot(&w, x) + b);
            let weight = if y {
                total / (2.0 * positives)
            } else {
                total / (2.0 * negatives)
            };
            let err = weight * (p - if y { 1.0 } else { 0.0 });
            gw.iter_mut().zip(x).for_each(|(g, xi)| *g += err * xi);
            gb += err;
        }
        let n = xs.len().max(1) as f32;
        w.iter_mut()
            .zip(&gw)
            .for_each(|(wi, g)| *wi -= rate * (g / n + l2 * *wi));
        b -= rate * gb / n;
    }
    Logistic {
        weights: w,
        bias: b,
    }
}

/// Fits a one-feature logistic scale (Platt scaling).
pub fn fit_scale(raw: &[f32], ys: &[bool]) -> Scale {
    let xs: Vec<Vec<f32>> = raw.iter().map(|&r| vec![r]).collect();
    let m = fit_logistic(&xs, ys, 0.0, 4000);
    Scale {
        slope: m.weights.first().copied().unwrap_or(1.0),
        offset: m.bias,
    }
}

/// The threshold on `scores` that maximises F1 against `ys`.
pub fn best_threshold(scores: &[f32], ys: &[bool]) -> f32 {
    let mut candidates: Vec<f32> = scores.to_vec();
    candidates.sort_by(f32::total_cmp);
    let mut best = (0.0f32, 0.5f32);
    for &t in &candidates {
        let (mut tp, mut fp, mut fn_) = (0.0f32, 0.0f32, 0.0f32);
        for (&s, &y) in scores.iter().zip(ys) {
            match (s >= t, y) {
                (true, true) => tp += 1.0,
                (true, false) => fp += 1.0,
                (false, true) => fn_ += 1.0,
                _ => {}
            }
        }
        let f1 = if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fn_)
        };
        if f1 > best.0 {
            best = (f1, t);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_separates_a_separable_set() {
        let xs = vec![
            vec![1.0, 0.0],
            vec![0.9, 0.1],
            vec![0.0, 1.0],
            vec![0.1, 0.9],
        ];
        let ys = [true, true, false, false];
        let m = fit_logistic(&xs, &ys, 0.0, 2000);
        assert!(m.probability(&[1.0, 0.0]) > 0.8);
        assert!(m.probability(&[0.0, 1.0]) < 0.2);
    }

    #[test]
    fn best_threshold_splits_scores() {
        let t = best_threshold(&[0.1, 0.2, 0.7, 0.8], &[false, false, true, true]);
        assert!((0.2..=0.7).contains(&t), "{t}");
    }

    #[test]
    fn scale_is_increasing_when_higher_is_positive() {
        let s = fit_scale(
            &[0.1, 0.2, 0.3, 0.7, 0.8, 0.9],
            &[false, false, false, true, true, true],
        );
        assert!(s.apply(0.9) > s.apply(0.1));
    }

    #[test]
    fn embedded_calibration_parses_and_covers_every_category() {
        let c = Calibration::embedded().expect("data/calibration.json parses");
        for cat in ContentCategory::ALL {
            let m = c.category(cat).expect("a model per category");
            assert_eq!(m.weights.len(), 384, "{cat:?}");
        }
        assert!(c.confidence_cuts[0] < c.confidence_cuts[1]);
        assert!(c.confidence_cuts[1] < c.confidence_cuts[2]);
    }
}
