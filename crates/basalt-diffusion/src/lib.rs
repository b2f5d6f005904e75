//! Stable Diffusion text-to-image on the CPU, with candle-transformers' UNet, VAE and DDIM.
//!
//! [`Pipeline::load`] reads a diffusers folder (`text_encoder/`, `unet/`, `vae/`, `tokenizer/`,
//! `scheduler/`), builds every network from its own `config.json` (so SD 1.x/2.x-shaped models
//! of any size load, down to the tiny ones the tests make with [`fixture`]) and checks that each
//! file exists and that every tensor is there with the right shape; the errors name the file
//! and the tensor. [`Pipeline::generate`] runs classifier-free guidance (the negative prompt is
//! the unconditional text), DDIM with eta 0, VAE decoding and PNG encoding. The initial latents
//! come from a seeded `StdRng`, so a seed always gives the same image.

mod clip;
mod config;
pub mod fixture;
pub mod png;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::{
    ddim::DDIMSchedulerConfig, schedulers::SchedulerConfig, unet_2d::UNet2DConditionModel,
    vae::AutoEncoderKL,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

pub use candle_core::DType;
pub use clip::{Activation, ClipConfig};

/// Why a model did not load or an image was not made.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("missing file {0}")]
    MissingFile(PathBuf),
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A weights file that does not read, lacks a tensor or has one of the wrong shape.
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("cancelled")]
    Cancelled,
    #[error("inference failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One text-to-image request.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: String,
    /// The unconditional text of classifier-free guidance ("" when there is none).
    pub negative_prompt: String,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    /// Guidance scale; at 1 or below there is no guidance (one UNet pass a step).
    pub cfg_scale: f64,
    /// Seed of the first image; image `i` uses `seed + i` (wrapping).
    pub seed: u64,
    pub samples: usize,
}

/// A generated image.
#[derive(Debug, Clone)]
pub struct Image {
    pub png: Vec<u8>,
    pub seed: u64,
}

/// Limits [`Pipeline::generate`] enforces.
pub const MAX_STEPS: usize = 150;
pub const MAX_SAMPLES: usize = 10;
pub const MAX_SIDE: usize = 2048;

/// How to load a model.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// F32 (default) or F16/BF16 (slower on most CPUs).
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32 }
    }
}

/// A loaded Stable Diffusion model.
pub struct Pipeline {
    tokenizer: tokenizers::Tokenizer,
    pad_id: u32,
    max_tokens: usize,
    text_encoder: clip::ClipTextTransformer,
    unet: UNet2DConditionModel,
    unet_in_channels: usize,
    vae: AutoEncoderKL,
    vae_scale: f64,
    vae_factor: usize,
    latent_channels: usize,
    native_size: usize,
    scheduler: DDIMSchedulerConfig,
    device: Device,
    dtype: DType,
}

/// The weights file of a component: the first of `names` that exists in `dir`.
fn weights_file(dir: &Path, names: &[&str]) -> Result<PathBuf, DiffusionError> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DiffusionError::MissingFile(dir.join(names[0])))
}

fn var_builder(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, DiffusionError> {
    let data = std::fs::read(path).map_err(|e| DiffusionError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    VarBuilder::from_buffered_safetensors(data, dtype, device).map_err(|e| weights_error(path, e))
}

fn weights_error(path: &Path, e: candle_core::Error) -> DiffusionError {
    // candle's messages name the tensor: "cannot find tensor X", "shape mismatch for X, ...".
    let message = e.to_string();
    let message = message.lines().next().unwrap_or_default().to_string();
    DiffusionError::Weights {
        path: path.to_path_buf(),
        message,
    }
}

impl Pipeline {
    /// Loads `dir` in f32.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, DiffusionError> {
        Self::load_with(dir, LoadOptions::default())
    }

    pub fn load_with(dir: impl AsRef<Path>, options: LoadOptions) -> Result<Self, DiffusionError> {
        let dir = dir.as_ref();
        let device = Device::Cpu;
        let dtype = options.dtype;
        if dir.join("text_encoder_2").exists() {
            return Err(DiffusionError::Unsupported(
                "two text encoders (SDXL, text_encoder_2/) are not supported yet".into(),
            ));
        }

        let clip_cfg = config::clip(&dir.join("text_encoder/config.json"))?;
        let unet_spec = config::unet(&dir.join("unet/config.json"))?;
        let vae_spec = config::vae(&dir.join("vae/config.json"))?;
        let scheduler = config::scheduler(&dir.join("scheduler/scheduler_config.json"))?;
        let unet_json = config::read_json(&dir.join("unet/config.json"))?;
        if let Some(kind) = &unet_spec.addition_embed_type {
            return Err(DiffusionError::Unsupported(format!(
                "unet/config.json: addition_embed_type `{kind}` (SDXL added conditioning)"
            )));
        }
        if unet_spec.config.cross_attention_dim != clip_cfg.hidden_size {
            return Err(DiffusionError::Config {
                path: dir.join("unet/config.json"),
                message: format!(
                    "cross_attention_dim {} does not match the text encoder's hidden_size {}",
                    unet_spec.config.cross_attention_dim, clip_cfg.hidden_size
                ),
            });
        }
        if unet_spec.in_channels != vae_spec.config.latent_channels
            || unet_spec.out_channels != vae_spec.config.latent_channels
        {
            return Err(DiffusionError::Unsupported(format!(
                "unet/config.json: in/out channels {}/{} for {} latent channels (inpainting models are not supported)",
                unet_spec.in_channels, unet_spec.out_channels, vae_spec.config.latent_channels
            )));
        }

        let (tokenizer, pad_id) = load_tokenizer(&dir.join("tokenizer"))?;

        let te_dir = dir.join("text_encoder");
        let te_file = weights_file(&te_dir, &["model.safetensors", "model.fp16.safetensors"])?;
        let text_encoder =
            clip::ClipTextTransformer::new(var_builder(&te_file, dtype, &device)?, &clip_cfg)
                .map_err(|e| weights_error(&te_file, e))?;

        let unet_names = [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
        ];
        let unet_file = weights_file(&dir.join("unet"), &unet_names)?;
        let unet = UNet2DConditionModel::new(
            var_builder(&unet_file, dtype, &device)?,
            unet_spec.in_channels,
            unet_spec.out_channels,
            false,
            unet_spec.config.clone(),
        )
        .map_err(|e| weights_error(&unet_file, e))?;

        let vae_file = weights_file(&dir.join("vae"), &unet_names)?;
        let vae = AutoEncoderKL::new(
            var_builder(&vae_file, dtype, &device)?,
            vae_spec.in_channels,
            vae_spec.out_channels,
            vae_spec.config.clone(),
        )
        .map_err(|e| weights_error(&vae_file, e))?;

        let sample_size = unet_json
            .get("sample_size")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(64) as usize;
        Ok(Self {
            tokenizer,
            pad_id,
            max_tokens: clip_cfg.max_position_embeddings,
            text_encoder,
            unet,
            unet_in_channels: unet_spec.in_channels,
            vae_factor: vae_spec.downsampling(),
            native_size: sample_size * vae_spec.downsampling(),
            latent_channels: vae_spec.config.latent_channels,
            vae_scale: vae_spec.scaling_factor,
            vae,
            scheduler,
            device,
            dtype,
        })
    }

    /// The side in pixels the model was trained at (`unet` sample_size × VAE factor).
    pub fn native_size(&self) -> usize {
        self.native_size
    }

    /// Width and height must be multiples of this (8 for every SD VAE).
    pub fn size_multiple(&self) -> usize {
        self.vae_factor.max(8)
    }

    fn validate(&self, r: &Request) -> Result<(), DiffusionError> {
        let m = self.size_multiple();
        for (name, v) in [("width", r.width), ("height", r.height)] {
            if v == 0 || !v.is_multiple_of(m) || v > MAX_SIDE {
                return Err(DiffusionError::InvalidRequest(format!(
                    "{name} {v} must be a positive multiple of {m} up to {MAX_SIDE}"
                )));
            }
        }
        if r.steps == 0 || r.steps > MAX_STEPS {
            return Err(DiffusionError::InvalidRequest(format!(
                "steps {} must be between 1 and {MAX_STEPS}",
                r.steps
            )));
        }
        if r.samples == 0 || r.samples > MAX_SAMPLES {
            return Err(DiffusionError::InvalidRequest(format!(
                "samples {} must be between 1 and {MAX_SAMPLES}",
                r.samples
            )));
        }
        if !r.cfg_scale.is_finite() || r.cfg_scale < 0.0 {
            return Err(DiffusionError::InvalidRequest(format!(
                "cfg_scale {} must be a non-negative number",
                r.cfg_scale
            )));
        }
        Ok(())
    }

    fn token_ids(&self, text: &str) -> Result<Tensor, DiffusionError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| DiffusionError::InvalidRequest(format!("tokenizing the prompt: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > self.max_tokens {
            // Keep the end-of-text token the post-processor put last.
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_tokens);
            ids[self.max_tokens - 1] = last;
        }
        ids.resize(self.max_tokens, self.pad_id);
        Ok(Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?)
    }

    /// Text embeddings: (2, tokens, dim) = [negative; prompt] with guidance, else (1, ..).
    fn embeddings(&self, r: &Request, guided: bool) -> Result<Tensor, DiffusionError> {
        let cond = self.text_encoder.forward(&self.token_ids(&r.prompt)?)?;
        if !guided {
            return Ok(cond);
        }
        let uncond = self
            .text_encoder
            .forward(&self.token_ids(&r.negative_prompt)?)?;
        Ok(Tensor::cat(&[uncond, cond], 0)?)
    }

    /// Makes `r.samples` images. `progress(done, total)` is called after each UNet step
    /// (total = steps × samples); `cancel()` is polled before each one.
    pub fn generate(
        &self,
        r: &Request,
        progress: &dyn Fn(usize, usize),
        cancel: &dyn Fn() -> bool,
    ) -> Result<Vec<Image>, DiffusionError> {
        self.validate(r)?;
        let guided = r.cfg_scale > 1.0;
        let emb = self.embeddings(r, guided)?.to_dtype(self.dtype)?;
        let total = r.steps * r.samples;
        let mut done = 0;
        let mut images = Vec::with_capacity(r.samples);
        for i in 0..r.samples {
            let seed = r.seed.wrapping_add(i as u64);
            let mut scheduler = self.scheduler.build(r.steps)?;
            let (lh, lw) = (r.height / self.vae_factor, r.width / self.vae_factor);
            let noise = gaussian(seed, self.latent_channels * lh * lw);
            let mut latents =
                (Tensor::from_vec(noise, (1, self.latent_channels, lh, lw), &self.device)?
                    .to_dtype(self.dtype)?
                    * scheduler.init_noise_sigma())?;
            debug_assert_eq!(self.unet_in_channels, self.latent_channels);
            let timesteps = scheduler.timesteps().to_vec();
            for t in timesteps {
                if cancel() {
                    return Err(DiffusionError::Cancelled);
                }
                let input = if guided {
                    Tensor::cat(&[&latents, &latents], 0)?
                } else {
                    latents.clone()
                };
                let input = scheduler.scale_model_input(input, t)?;
                let noise = self.unet.forward(&input, t as f64, &emb)?;
                let noise = if guided {
                    let parts = noise.chunk(2, 0)?;
                    (&parts[0] + ((&parts[1] - &parts[0])? * r.cfg_scale)?)?
                } else {
                    noise
                };
                latents = scheduler.step(&noise, t, &latents)?;
                done += 1;
                progress(done, total);
            }
            if cancel() {
                return Err(DiffusionError::Cancelled);
            }
            images.push(Image {
                png: self.decode(&latents, r.width, r.height)?,
                seed,
            });
        }
        Ok(images)
    }

    fn decode(
        &self,
        latents: &Tensor,
        width: usize,
        height: usize,
    ) -> Result<Vec<u8>, DiffusionError> {
        let x = self.vae.decode(&(latents / self.vae_scale)?)?;
        let x = ((x.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
        let x = (x * 255.0)?.round()?.to_dtype(DType::U8)?;
        let rgb = x
            .squeeze(0)?
            .permute((1, 2, 0))?
            .flatten_all()?
            .to_vec1::<u8>()?;
        if rgb.len() != width * height * 3 {
            return Err(DiffusionError::Candle(candle_core::Error::Msg(format!(
                "the VAE made {} values for a {width}x{height} RGB image",
                rgb.len()
            ))));
        }
        Ok(png::encode_rgb(width as u32, height as u32, &rgb))
    }
}

/// Standard normal values from a seeded `StdRng` (Box-Muller).
fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

fn load_tokenizer(dir: &Path) -> Result<(tokenizers::Tokenizer, u32), DiffusionError> {
    let path = dir.join("tokenizer.json");
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    let tokenizer = if path.is_file() {
        tokenizers::Tokenizer::from_file(&path).map_err(|e| DiffusionError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?
    } else if vocab.is_file() && merges.is_file() {
        clip_bpe_tokenizer(&vocab, &merges)?
    } else {
        return Err(DiffusionError::MissingFile(path));
    };
    // SD 1.x pads with <|endoftext|>, SD 2.x with "!" (special_tokens_map.json says which).
    let mut pad = "<|endoftext|>".to_string();
    let map = dir.join("special_tokens_map.json");
    if map.is_file() {
        let v = config::read_json(&map)?;
        match v.get("pad_token") {
            Some(serde_json::Value::String(s)) => pad = s.clone(),
            Some(o) => {
                if let Some(s) = o.get("content").and_then(serde_json::Value::as_str) {
                    pad = s.to_string();
                }
            }
            None => {}
        }
    }
    let pad_id = tokenizer
        .token_to_id(&pad)
        .ok_or_else(|| DiffusionError::Tokenizer {
            path: path.clone(),
            message: format!("the padding token `{pad}` is not in the vocabulary"),
        })?;
    Ok((tokenizer, pad_id))
}

/// CLIP's tokenizer (what `CLIPTokenizerFast` saves as tokenizer.json) from the
/// `vocab.json` + `merges.txt` the diffusers repositories ship.
fn clip_bpe_tokenizer(
    vocab: &Path,
    merges: &Path,
) -> Result<tokenizers::Tokenizer, DiffusionError> {
    let vocab_json = config::read_json(vocab)?;
    let merges_text = std::fs::read_to_string(merges).map_err(|e| DiffusionError::Tokenizer {
        path: merges.to_path_buf(),
        message: e.to_string(),
    })?;
    let merges_list: Vec<&str> = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .collect();
    let id = |token: &str| -> Result<u64, DiffusionError> {
        vocab_json
            .get(token)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| DiffusionError::Tokenizer {
                path: vocab.to_path_buf(),
                message: format!("`{token}` is not in the vocabulary"),
            })
    };
    let (bos, eos) = (id("<|startoftext|>")?, id("<|endoftext|>")?);
    let special = |content: &str, id: u64| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": true, "special": true})
    };
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special("<|startoftext|>", bos), special("<|endoftext|>", eos)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", eos],
            "cls": ["<|startoftext|>", bos], "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": false,
            "byte_fallback": false, "vocab": vocab_json, "merges": merges_list}
    });
    json.to_string()
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| DiffusionError::Tokenizer {
            path: vocab.to_path_buf(),
            message: format!("building the CLIP tokenizer from vocab.json and merges.txt: {e}"),
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_tokenizer_from_vocab_and_merges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vocab = serde_json::json!({
            "!": 0, "a": 1, "c": 2, "t": 3, "a</w>": 4, "t</w>": 5, "at</w>": 6, "cat</w>": 7,
            "!</w>": 8, "<|startoftext|>": 9, "<|endoftext|>": 10
        });
        std::fs::write(dir.path().join("vocab.json"), vocab.to_string()).expect("vocab");
        std::fs::write(
            dir.path().join("merges.txt"),
            "#version: 0.2\na t</w>\nc at</w>\n",
        )
        .expect("merges");
        let (tok, pad) = super::load_tokenizer(dir.path()).expect("tokenizer");
        assert_eq!(pad, 10);
        let ids = tok.encode("A  CAT!", true).expect("encode");
        assert_eq!(ids.get_ids(), &[9, 4, 7, 8, 10]);
    }

    #[test]
    fn gaussian_is_seeded_and_standard() {
        let a = super::gaussian(7, 10_001);
        assert_eq!(a, super::gaussian(7, 10_001));
        assert_ne!(a, super::gaussian(8, 10_001));
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
