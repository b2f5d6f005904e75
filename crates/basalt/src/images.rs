//! `basalt images generate`: one image from a diffusers folder or an imported model,
//! without a server, with a progress bar over the denoising steps. Useful to check an
//! import and to time a model on this machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use basalt_diffusion::{decode_image, Pipeline, Request, Sampler};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct Generate {
    /// The model cache.
    #[arg(long, env = "BASALT_MODELS_DIR", default_value_os_t = crate::default_models_dir())]
    pub models_dir: PathBuf,
    /// A diffusers folder, or an imported model (its ID, name, or the model ID it serves).
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    #[arg(long, default_value_t = 512)]
    pub width: usize,
    #[arg(long, default_value_t = 512)]
    pub height: usize,
    /// Default: 30, or for a few-step (Turbo) model 1 (2 with --init-image).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Default: 7, or for a few-step (Turbo) model 0 (no guidance).
    #[arg(long)]
    pub cfg_scale: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image-to-image: start from this PNG or JPEG (its size wins over --width/--height).
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// With --init-image: the share of the steps that run (0 keeps the image, 1 redraws it).
    #[arg(long, default_value_t = 0.65)]
    pub strength: f64,
    /// Default: the sampler the model folder's scheduler config names.
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerArg>,
    #[arg(long, default_value = "image.png")]
    pub out: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SamplerArg {
    Ddim,
    Euler,
    EulerAncestral,
}

impl From<SamplerArg> for Sampler {
    fn from(s: SamplerArg) -> Self {
        match s {
            SamplerArg::Ddim => Self::Ddim,
            SamplerArg::Euler => Self::Euler,
            SamplerArg::EulerAncestral => Self::EulerAncestral,
        }
    }
}

/// The folder `model` names: itself if it is one, else the import that serves it.
fn model_dir(models_dir: &Path, model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let found = basalt_model_import::scan(models_dir)
        .into_iter()
        .filter(|m| m.kind == "diffusion")
        .find(|m| m.id == model || m.name == model || m.serves.as_deref() == Some(model));
    match found {
        Some(m) => Ok(models_dir.join(m.path)),
        None => bail!(
            "{model} is neither a folder nor an imported image model in {} (see `basalt models list`)",
            models_dir.display()
        ),
    }
}

pub fn generate(g: Generate) -> Result<()> {
    let dir = model_dir(&g.models_dir, &g.model)?;
    let started = Instant::now();
    let pipeline = Pipeline::load(&dir)?;
    println!(
        "loaded {} in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    let (mut width, mut height) = (g.width, g.height);
    let init = match &g.init_image {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut init = decode_image(&bytes)?;
            init.strength = g.strength;
            (width, height) = (init.width, init.height);
            Some(init)
        }
        None => None,
    };
    // As the server does for a body that leaves them out: the model's own defaults.
    let defaults = pipeline.defaults();
    let steps = g
        .steps
        .unwrap_or(match (defaults.few_step, init.is_some()) {
            (false, _) => 30,
            (true, false) => 1,
            // Image-to-image runs strength × steps, which must leave at least one.
            (true, true) => 2,
        });
    let cfg_scale = g
        .cfg_scale
        .unwrap_or(if defaults.few_step { 0.0 } else { 7.0 });
    let request = Request {
        prompt: g.prompt,
        negative_prompt: g.negative_prompt,
        width,
        height,
        steps,
        cfg_scale,
        seed: g.seed,
        samples: 1,
        init,
        sampler: g.sampler.map_or(defaults.sampler, Sampler::from),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("steps [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let images = pipeline.generate(
        &request,
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        &|| false,
    )?;
    bar.finish();
    let Some(image) = images.into_iter().next() else {
        bail!("the pipeline made no image");
    };
    std::fs::write(&g.out, &image.png).with_context(|| format!("writing {}", g.out.display()))?;
    println!(
        "wrote {} ({width}x{height}, seed {}) in {:.1} s",
        g.out.display(),
        image.seed,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
