//! Fitting embedding vectors to a requested width. Wider than the model: pad
//! with zeros, which keeps every dot product exactly. Narrower: project onto
//! the top principal directions of the model's own output space, which keeps
//! most of each dot product and so the similarity ordering.

/// A linear map from `input` to `output` dimensions (row-major, `output` rows).
#[derive(Debug, Clone)]
pub struct Projection {
    input: usize,
    output: usize,
    rows: Vec<f32>,
}

impl Projection {
    /// Principal directions of the uncentred second moment of `samples`: for cosine
    /// similarity the directions through the origin are what matter.
    pub fn principal(samples: &[Vec<f32>], output: usize) -> Option<Self> {
        let input = samples.first()?.len();
        if output == 0 || output > input || samples.iter().any(|s| s.len() != input) {
            return None;
        }
        let mut moment = vec![0f64; input * input];
        for s in samples {
            for i in 0..input {
                let si = f64::from(s[i]);
                for j in i..input {
                    moment[i * input + j] += si * f64::from(s[j]);
                }
            }
        }
        for i in 0..input {
            for j in 0..i {
                moment[i * input + j] = moment[j * input + i];
            }
        }
        let (values, vectors) = symmetric_eigen(input, moment);
        let mut order: Vec<usize> = (0..input).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let mut rows = Vec::with_capacity(output * input);
        for &k in order.iter().take(output) {
            rows.extend((0..input).map(|i| vectors[i * input + k] as f32));
        }
        Some(Self {
            input,
            output,
            rows,
        })
    }

    pub fn output(&self) -> usize {
        self.output
    }

    pub fn apply(&self, v: &[f32]) -> Vec<f32> {
        debug_assert_eq!(v.len(), self.input);
        self.rows
            .chunks(self.input)
            .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    }
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations.
/// Returns eigenvalues and a row-major matrix whose columns are the eigenvectors.
/// Cubic per sweep, which is well under a second for embedding widths (≤ 1024).
pub fn symmetric_eigen(n: usize, mut a: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..50 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i * n + i] * a[i * n + i])
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        if off <= 1e-22 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Pads or projects `v` to `width`.
pub fn fit(v: &[f32], width: usize, projection: Option<&Projection>) -> Vec<f32> {
    if width >= v.len() {
        let mut out = v.to_vec();
        out.resize(width, 0.0);
        return out;
    }
    match projection {
        Some(p) if p.output() == width => p.apply(v),
        // No projection for this width: keep the leading components.
        _ => v[..width].to_vec(),
    }
}

pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises_a_known_matrix() {
        // Eigenvalues of [[2,1],[1,2]] are 3 and 1.
        let (mut values, vectors) = symmetric_eigen(2, vec![2.0, 1.0, 1.0, 2.0]);
        values.sort_by(f64::total_cmp);
        assert!(
            (values[0] - 1.0).abs() < 1e-9 && (values[1] - 3.0).abs() < 1e-9,
            "{values:?}"
        );
        // Columns are orthonormal.
        let dot = vectors[0] * vectors[1] + vectors[2] * vectors[3];
        assert!(dot.abs() < 1e-9);
    }

    #[test]
    fn principal_projection_keeps_the_dominant_direction() {
        // Points spread along (1,1,0) with small noise in z.
        let samples: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                let t = i as f32 / 10.0 - 2.5;
                vec![t, t, 0.01 * (i % 3) as f32]
            })
            .collect();
        let p = Projection::principal(&samples, 1).expect("projection");
        let y = p.apply(&[1.0, 1.0, 0.0]);
        assert!((y[0].abs() - 2f32.sqrt()).abs() < 1e-3, "{y:?}");
    }

    #[test]
    fn padding_keeps_dot_products() {
        let a = fit(&[0.6, 0.8], 5, None);
        assert_eq!(a, vec![0.6, 0.8, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn normalise_makes_unit_vectors() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
