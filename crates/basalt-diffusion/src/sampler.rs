//! The denoising schedules a request can choose: DDIM (candle's), and Euler and
//! Euler-ancestral (k-diffusion's, as diffusers' EulerDiscrete and EulerAncestralDiscrete
//! schedulers compute them). Euler-ancestral adds fresh noise every step; it is drawn from
//! the request's seed here, since candle's own version draws it unseeded and a seed would
//! not repeat its image.

use candle_core::{Result, Tensor};
use candle_transformers::models::stable_diffusion::{
    ddim::DDIMSchedulerConfig,
    schedulers::{BetaSchedule, PredictionType, Scheduler, SchedulerConfig, TimestepSpacing},
};

/// How the latents are denoised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sampler {
    #[default]
    Ddim,
    Euler,
    EulerAncestral,
}

/// One request's schedule, stepped by index (0 = the noisiest step).
pub(crate) enum Schedule {
    Ddim {
        inner: Box<dyn Scheduler>,
        timesteps: Vec<usize>,
    },
    Euler(Euler),
}

impl Schedule {
    pub(crate) fn new(
        sampler: Sampler,
        config: &DDIMSchedulerConfig,
        steps: usize,
    ) -> Result<Self> {
        Ok(match sampler {
            Sampler::Ddim => {
                let inner = config.build(steps)?;
                let timesteps = inner.timesteps().to_vec();
                Self::Ddim { inner, timesteps }
            }
            Sampler::Euler => Self::Euler(Euler::new(config, steps, false)),
            Sampler::EulerAncestral => Self::Euler(Euler::new(config, steps, true)),
        })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Ddim { timesteps, .. } => timesteps.len(),
            Self::Euler(e) => e.timesteps.len(),
        }
    }

    /// The UNet's timestep input at step `i`.
    pub(crate) fn timestep(&self, i: usize) -> f64 {
        match self {
            Self::Ddim { timesteps, .. } => timesteps[i] as f64,
            Self::Euler(e) => e.timesteps[i],
        }
    }

    pub(crate) fn init_noise_sigma(&self) -> f64 {
        match self {
            Self::Ddim { inner, .. } => inner.init_noise_sigma(),
            Self::Euler(e) => e.init_noise_sigma,
        }
    }

    pub(crate) fn scale_model_input(&self, x: Tensor, i: usize) -> Result<Tensor> {
        match self {
            Self::Ddim { inner, timesteps } => inner.scale_model_input(x, timesteps[i]),
            Self::Euler(e) => x / (e.sigmas[i].powi(2) + 1.0).sqrt(),
        }
    }

    /// The latents after step `i`; `noise` gives fresh standard noise shaped like `x`
    /// (only Euler-ancestral asks for it).
    pub(crate) fn step(
        &mut self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        noise: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        match self {
            Self::Ddim { inner, timesteps } => inner.step(model_output, timesteps[i], x),
            Self::Euler(e) => e.step(model_output, i, x, noise),
        }
    }

    /// `original` noised to the level of step `i` (image-to-image starts there).
    pub(crate) fn add_noise(&self, original: &Tensor, noise: Tensor, i: usize) -> Result<Tensor> {
        match self {
            Self::Ddim { inner, timesteps } => inner.add_noise(original, noise, timesteps[i]),
            Self::Euler(e) => original + (noise * e.sigmas[i])?,
        }
    }
}

pub(crate) struct Euler {
    /// Descending, fractional for linspace spacing.
    timesteps: Vec<f64>,
    /// One per timestep, then 0.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
    ancestral: bool,
}

/// The training schedule's cumulative alphas.
fn alphas_cumprod(c: &DDIMSchedulerConfig) -> Vec<f64> {
    let n = c.train_timesteps;
    let linspace = |a: f64, b: f64, i: usize| a + (b - a) * i as f64 / (n.max(2) - 1) as f64;
    let betas: Vec<f64> = match c.beta_schedule {
        BetaSchedule::Linear => (0..n)
            .map(|i| linspace(c.beta_start, c.beta_end, i))
            .collect(),
        BetaSchedule::ScaledLinear => (0..n)
            .map(|i| linspace(c.beta_start.sqrt(), c.beta_end.sqrt(), i).powi(2))
            .collect(),
        BetaSchedule::SquaredcosCapV2 => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect()
        }
    };
    let mut product = 1.0;
    betas
        .iter()
        .map(|b| {
            product *= 1.0 - b;
            product
        })
        .collect()
}

impl Euler {
    fn new(c: &DDIMSchedulerConfig, steps: usize, ancestral: bool) -> Self {
        let train = c.train_timesteps;
        let train_sigmas: Vec<f64> = alphas_cumprod(c)
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect();
        let steps = steps.max(1);
        let timesteps: Vec<f64> = match c.timestep_spacing {
            TimestepSpacing::Linspace => (0..steps)
                .rev()
                .map(|i| (train - 1) as f64 * i as f64 / (steps.max(2) - 1) as f64)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = train / steps;
                (0..steps)
                    .rev()
                    .map(|i| (i * ratio + c.steps_offset).min(train - 1) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = train as f64 / steps as f64;
                (0..steps)
                    .map(|i| ((train as f64 - i as f64 * ratio).round() - 1.0).max(0.0))
                    .collect()
            }
        };
        // Linear interpolation of the training sigmas at fractional timesteps.
        let sigma_at = |t: f64| {
            let lo = (t.floor() as usize).min(train - 1);
            let hi = (lo + 1).min(train - 1);
            let w = t - lo as f64;
            train_sigmas[lo] * (1.0 - w) + train_sigmas[hi] * w
        };
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| sigma_at(t)).collect();
        let max = sigmas.iter().copied().fold(0.0, f64::max);
        sigmas.push(0.0);
        let init_noise_sigma = match c.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        };
        Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction: c.prediction_type,
            ancestral,
        }
    }

    fn step(
        &self,
        model_output: &Tensor,
        i: usize,
        x: &Tensor,
        noise: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let denoised = match self.prediction {
            PredictionType::Epsilon => (x - (model_output * sigma)?)?,
            PredictionType::VPrediction => {
                let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
                ((model_output * c_out)? + (x / (sigma * sigma + 1.0))?)?
            }
            PredictionType::Sample => model_output.clone(),
        };
        let derivative = ((x - denoised)? / sigma)?;
        if !self.ancestral {
            return x + (derivative * (next - sigma))?;
        }
        let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
        let down = (next * next - up * up).max(0.0).sqrt();
        let x = (x + (derivative * (down - sigma))?)?;
        if up == 0.0 {
            return Ok(x);
        }
        x + (noise()? * up)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> DDIMSchedulerConfig {
        DDIMSchedulerConfig {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            timestep_spacing: TimestepSpacing::Leading,
            ..DDIMSchedulerConfig::default()
        }
    }

    #[test]
    fn euler_sigmas_match_diffusers_for_sd15() {
        // SD 1.5's config, 10 steps, leading spacing: timesteps [901, 801, ..., 1];
        // sigmas[0] is the training sigma at t = 901, sqrt((1 - a) / a) of the cumulative
        // alpha there (8.3907, computed independently), and init_noise_sigma is
        // sqrt(sigma_max^2 + 1), as diffusers' EulerDiscreteScheduler gives.
        let e = Euler::new(&sd15(), 10, false);
        assert_eq!(e.timesteps.first().copied(), Some(901.0));
        assert_eq!(e.timesteps.last().copied(), Some(1.0));
        assert_eq!(e.sigmas.len(), 11);
        assert_eq!(e.sigmas[10], 0.0);
        assert!((e.sigmas[0] - 8.3907).abs() < 1e-3, "{}", e.sigmas[0]);
        assert!(e.sigmas.windows(2).all(|w| w[0] > w[1]), "sigmas fall");
        let expected = (e.sigmas[0].powi(2) + 1.0).sqrt();
        assert!((e.init_noise_sigma - expected).abs() < 1e-9);
        let linspace = DDIMSchedulerConfig {
            timestep_spacing: TimestepSpacing::Linspace,
            ..sd15()
        };
        let l = Euler::new(&linspace, 10, false);
        assert_eq!(l.timesteps.first().copied(), Some(999.0));
        assert_eq!(l.timesteps.last().copied(), Some(0.0));
        assert!(
            (l.sigmas[0] - 14.6146).abs() < 1e-3,
            "sigma_max {}",
            l.sigmas[0]
        );
        assert!((l.init_noise_sigma - l.sigmas[0]).abs() < 1e-12);
    }

    #[test]
    fn an_euler_step_moves_toward_the_prediction() {
        let device = candle_core::Device::Cpu;
        let e = Euler::new(&sd15(), 10, false);
        let x = Tensor::new(&[2.0f32], &device).expect("x");
        // With epsilon = x / sigma the model predicts a clean sample of 0.
        let eps = (x.clone() / e.sigmas[0]).expect("eps");
        let next = e
            .step(&eps, 0, &x, || unreachable!("plain Euler draws no noise"))
            .expect("step");
        let v = next.to_vec1::<f32>().expect("vec")[0] as f64;
        assert!((v - 2.0 * e.sigmas[1] / e.sigmas[0]).abs() < 1e-5, "{v}");
        // The ancestral step draws noise, scaled by sigma_up.
        let a = Euler::new(&sd15(), 10, true);
        let with_noise = a
            .step(&eps, 0, &x, || Tensor::new(&[1.0f32], &device))
            .expect("step");
        assert_ne!(with_noise.to_vec1::<f32>().expect("vec")[0] as f64, v);
    }
}
