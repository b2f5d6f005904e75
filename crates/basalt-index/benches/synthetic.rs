//! The synthetic corpus both retrieval benchmarks draw from (this crate's
//! `retrieve` and basalt-pgvector's `versus_embedded`), so that their figures
//! describe the same vectors draw for draw.

#![allow(dead_code)]

use std::time::Duration;

use basalt_index::hnsw::dot;

pub struct Rng(pub u64);

impl Rng {
    pub fn u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn unit(&mut self) -> f64 {
        ((self.u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }
}

pub fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

pub fn random_unit(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
    normalise(&mut v);
    v
}

pub struct Corpus {
    pub dim: usize,
    pub centres: Vec<Vec<f32>>,
    style: Vec<Vec<f32>>,
}

impl Corpus {
    /// 2,000 topics in 100 groups: a topic is its group's centre plus as much
    /// again of its own direction, so neighbouring topics overlap.
    pub fn new(rng: &mut Rng, dim: usize) -> Self {
        let groups: Vec<Vec<f32>> = (0..100).map(|_| random_unit(rng, dim)).collect();
        let centres = (0..2000)
            .map(|i| {
                let own = random_unit(rng, dim);
                let mut c: Vec<f32> = groups[i % 100]
                    .iter()
                    .zip(&own)
                    .map(|(g, o)| g + o)
                    .collect();
                normalise(&mut c);
                c
            })
            .collect();
        Corpus {
            dim,
            centres,
            style: (0..64).map(|_| random_unit(rng, dim)).collect(),
        }
    }

    /// A point on topic `t`: centre + 0.7 * a mix of the shared style
    /// directions + `noise_weight` (0.5) * isotropic noise (nearest neighbours then have a
    /// cosine of about 0.7 to 0.8, unrelated chunks about 0 to 0.3, roughly
    /// as with all-MiniLM-L6-v2).
    pub fn draw(&self, rng: &mut Rng, t: usize, noise_weight: f32) -> Vec<f32> {
        let mut v = self.centres[t].clone();
        let mut mix = vec![0f32; self.dim];
        for s in &self.style {
            let w = rng.normal();
            mix.iter_mut().zip(s).for_each(|(m, x)| *m += w * x);
        }
        normalise(&mut mix);
        let noise = random_unit(rng, self.dim);
        for i in 0..self.dim {
            v[i] += 0.7 * mix[i] + noise_weight * noise[i];
        }
        normalise(&mut v);
        v
    }
}

pub const WORDS: [&str; 24] = [
    "basalt", "granite", "lava", "magma", "pump", "valve", "invoice", "contract", "river",
    "glacier", "engine", "turbine", "protein", "enzyme", "orbit", "comet", "ledger", "audit",
    "harbour", "bridge", "sensor", "cable", "vaccine", "clinic",
];

pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
