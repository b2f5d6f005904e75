//! The screen: a cheap first stage before the embedding model, for denied topics and
//! content filters. Each vocabulary token has a static vector (the token passed once
//! through the same embedding model, mean-pooled), and a window's screen vector is
//! the mean of its tokens' vectors: no transformer runs. Small classifiers over these
//! vectors clear the windows that are clearly benign; every other window goes through
//! the full model, which makes every decision near a threshold. The cuts are set on
//! the calibration split so that no window the full model flags is cleared.

use serde::{Deserialize, Serialize};

use crate::calibration::Logistic;
use crate::config::ContentCategory;
use crate::dot;

/// How the static vectors are made; part of their cache key, so a new recipe never
/// reads an old table.
pub const STATIC_RECIPE: &str = "token-mean-v1";

const MAGIC: &[u8; 8] = b"BSTATIC1";

/// Most rows a table may hold (BERT vocabularies are ~30k; this bounds a damaged file).
const MAX_ROWS: usize = 1 << 20;
const MAX_DIM: usize = 4096;

/// One static vector per token id, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct StaticVectors {
    dim: usize,
    rows: Vec<f32>,
}

impl StaticVectors {
    pub fn new(dim: usize, rows: Vec<f32>) -> Result<Self, String> {
        if dim == 0
            || dim > MAX_DIM
            || !rows.len().is_multiple_of(dim)
            || rows.len() / dim > MAX_ROWS
        {
            return Err(format!(
                "a static vector table of {} values cannot have {dim} columns",
                rows.len()
            ));
        }
        Ok(Self { dim, rows })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.rows.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The file form: magic, row count and dimension (u32 LE), then f32 LE values.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.rows.len() * 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        for v in &self.rows {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let header = bytes
            .get(..16)
            .ok_or("the static vector file is shorter than its header")?;
        if &header[..8] != MAGIC {
            return Err("not a static vector file".into());
        }
        let word = |i: usize| {
            u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]) as usize
        };
        let (n, dim) = (word(8), word(12));
        if dim == 0 || dim > MAX_DIM || n > MAX_ROWS || bytes.len() != 16 + n * dim * 4 {
            return Err(format!(
                "the static vector file says {n} x {dim} but holds {} bytes",
                bytes.len()
            ));
        }
        let rows = bytes[16..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self::new(dim, rows)
    }

    /// The mean of every non-zero row: the direction all pooled vectors share, which
    /// would otherwise dominate every cosine.
    pub fn centre(&self) -> Vec<f32> {
        let mut sum = vec![0.0f32; self.dim];
        let mut n = 0usize;
        for row in self.rows.chunks_exact(self.dim) {
            if row.iter().any(|&x| x != 0.0) {
                sum.iter_mut().zip(row).for_each(|(s, r)| *s += r);
                n += 1;
            }
        }
        sum.iter_mut().for_each(|s| *s /= n.max(1) as f32);
        sum
    }

    /// The unit vector of the mean of the rows of `ids`, less `centre`; ids out of
    /// range and all-zero rows (special and unused tokens) are left out. All zeros when
    /// nothing is left.
    pub fn pool(&self, ids: &[u32], centre: &[f32]) -> Vec<f32> {
        let mut sum = vec![0.0f32; self.dim];
        let mut n = 0usize;
        for &id in ids {
            let Some(row) = self
                .rows
                .get(id as usize * self.dim..(id as usize + 1) * self.dim)
            else {
                continue;
            };
            if row.iter().all(|&x| x == 0.0) {
                continue;
            }
            sum.iter_mut().zip(row).for_each(|(s, r)| *s += r);
            n += 1;
        }
        if n == 0 {
            return sum;
        }
        sum.iter_mut()
            .zip(centre.iter().chain(std::iter::repeat(&0.0)))
            .for_each(|(s, c)| *s = *s / n as f32 - c);
        crate::normalise(sum)
    }
}

/// Screen vectors of some texts, and the static table they came from.
pub struct Screened {
    /// `<model sha256>-<recipe>`: must equal the calibration's, or the screen is off.
    pub key: String,
    /// Unit vectors, one per text.
    pub vectors: Vec<Vec<f32>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScreenCategory {
    pub category: ContentCategory,
    pub model: Logistic,
    /// Windows scoring under this probability are cleared for the category.
    pub cut: f32,
}

/// The screen's classifiers and cuts, learned by `basalt guardrails calibrate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScreenCalibration {
    /// The static table these were fitted on (`Screened::key`).
    pub key: String,
    pub content: Vec<ScreenCategory>,
    /// Windows whose best screen cosine to every topic text is under this are cleared
    /// for the topic.
    pub topic_cut: f32,
}

impl ScreenCalibration {
    /// Whether the full model must see a window with screen vector `v`, for these
    /// content categories and these topics (each topic's screen vectors). A category
    /// the screen has no classifier for always needs the model.
    pub fn needs_model(
        &self,
        v: &[f32],
        categories: &[ContentCategory],
        topics: &[Vec<Vec<f32>>],
    ) -> bool {
        categories.iter().any(|&c| {
            self.content
                .iter()
                .find(|s| s.category == c)
                .is_none_or(|s| s.model.probability(v) >= s.cut)
        }) || topics
            .iter()
            .any(|t| t.iter().any(|tv| dot(v, tv) >= self.topic_cut))
    }
}

/// The cut that keeps every score in `must_keep`: `margin` below the lowest, in logit
/// space for probabilities. `None` (keep everything) when there is nothing to learn from.
pub fn probability_cut(must_keep: &[f32], margin: f32) -> Option<f32> {
    let lowest = must_keep.iter().copied().fold(f32::INFINITY, f32::min);
    if !lowest.is_finite() {
        return None;
    }
    let p = lowest.clamp(1e-6, 1.0 - 1e-6);
    let logit = (p / (1.0 - p)).ln() - margin;
    Some(crate::calibration::sigmoid(logit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_through_bytes() {
        let t = StaticVectors::new(2, vec![1.0, 0.0, 0.5, -0.5, 0.0, 0.0]).expect("table");
        let back = StaticVectors::from_bytes(&t.to_bytes()).expect("parses");
        assert_eq!(back, t);
        assert_eq!(back.len(), 3);
    }

    #[test]
    fn damaged_tables_are_refused() {
        let t = StaticVectors::new(2, vec![1.0, 0.0, 0.5, -0.5]).expect("table");
        let mut bytes = t.to_bytes();
        bytes.pop();
        assert!(StaticVectors::from_bytes(&bytes).is_err());
        assert!(StaticVectors::from_bytes(b"short").is_err());
        let mut wrong = t.to_bytes();
        wrong[0] = b'X';
        assert!(StaticVectors::from_bytes(&wrong).is_err());
        assert!(StaticVectors::new(0, vec![]).is_err());
        assert!(StaticVectors::new(3, vec![1.0; 4]).is_err());
    }

    #[test]
    fn pool_is_the_unit_mean_and_skips_unknown_ids() {
        let t = StaticVectors::new(2, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).expect("table");
        let v = t.pool(&[0, 1, 2, 99], &[]);
        let r = 0.5f32.sqrt();
        assert!((v[0] - r).abs() < 1e-6 && (v[1] - r).abs() < 1e-6, "{v:?}");
        assert_eq!(t.pool(&[2], &[]), vec![0.0, 0.0]);
        assert_eq!(t.pool(&[], &[]), vec![0.0, 0.0]);
        // The centre is the mean of the non-zero rows, and pooling subtracts it.
        assert_eq!(t.centre(), vec![0.5, 0.5]);
        let v = t.pool(&[0], &t.centre());
        assert!((v[0] - r).abs() < 1e-6 && (v[1] + r).abs() < 1e-6, "{v:?}");
    }

    fn calibration() -> ScreenCalibration {
        ScreenCalibration {
            key: "k".into(),
            content: vec![ScreenCategory {
                category: ContentCategory::Hate,
                model: Logistic {
                    weights: vec![4.0, 0.0],
                    bias: -2.0,
                },
                cut: 0.3,
            }],
            topic_cut: 0.6,
        }
    }

    #[test]
    fn needs_model_when_any_check_is_near() {
        let c = calibration();
        let benign = [0.0, 1.0];
        let hateful = [1.0, 0.0];
        assert!(!c.needs_model(&benign, &[ContentCategory::Hate], &[]));
        assert!(c.needs_model(&hateful, &[ContentCategory::Hate], &[]));
        // No screen classifier for the category: the model decides.
        assert!(c.needs_model(&benign, &[ContentCategory::Insults], &[]));
        let topic = vec![vec![0.0, 1.0]];
        assert!(c.needs_model(&benign, &[], std::slice::from_ref(&topic)));
        assert!(!c.needs_model(&hateful, &[], &[topic]));
        assert!(!c.needs_model(&benign, &[], &[]));
    }

    #[test]
    fn probability_cut_sits_below_every_kept_score() {
        let cut = probability_cut(&[0.4, 0.9, 0.2], 1.0).expect("cut");
        assert!(cut < 0.2 && cut > 0.05, "{cut}");
        assert_eq!(probability_cut(&[], 1.0), None);
        assert!((probability_cut(&[0.5], 0.0).expect("cut") - 0.5).abs() < 1e-6);
    }
}
