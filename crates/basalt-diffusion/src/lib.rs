//! Stable Diffusion text-to-image on the CPU, with candle-transformers' UNet, VAE and DDIM.
//!
//! [`Pipeline::load`] reads a diffusers folder (`text_encoder/`, `unet/`, `vae/`, `tokenizer/`,
//! `scheduler/`), builds every network from its own `config.json` (so SD 1.x/2.x-shaped models
//! of any size load, down to the tiny ones the tests make with [`fixture`]) and checks that each
//! file exists and that every tensor is there with the right shape; the errors name the file
//! and the tensor. [`Pipeline::generate`] runs classifier-free guidance (the negative prompt is
//! the unconditional text), DDIM with eta 0, VAE decoding and PNG encoding. The initial latents
//! come from a seeded `StdRng`, so a seed always gives the same image. Image-to-image encodes
//! the init image with the VAE's encoder (sampled with the same seed), noises it to the step
//! its strength names, and denoises from there.

mod clip;
mod config;
pub mod fixture;
pub mod png;
mod sampler;
mod vae_encoder;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::{
    ddim::DDIMSchedulerConfig, unet_2d::UNet2DConditionModel, vae::AutoEncoderKL,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

pub use candle_core::DType;
pub use clip::{Activation, ClipConfig};
pub use sampler::Sampler;

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
    /// Image-to-image: start from this picture (`width`×`height` must be its size).
    pub init: Option<InitImage>,
    pub sampler: Sampler,
}

/// The picture an image-to-image request starts from.
#[derive(Debug, Clone)]
pub struct InitImage {
    /// 8-bit RGB, row by row.
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
    /// The share of the steps that run, in [0, 1]: small keeps the picture, 1 redraws it.
    /// At least one step always runs.
    pub strength: f64,
}

/// Decodes a PNG or JPEG into 8-bit RGB (alpha dropped, grey widened), refusing sides over
/// [`MAX_SIDE`] before decoding the pixels.
pub fn decode_image(bytes: &[u8]) -> Result<InitImage, DiffusionError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let invalid = |m: String| DiffusionError::InvalidRequest(m);
    let options = DecoderOptions::default()
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        .png_set_strip_to_8bit(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let (pixels, channels, (width, height)) = if bytes.starts_with(b"\x89PNG") {
        let mut d = zune_png::PngDecoder::new_with_options(ZCursor::new(bytes), options);
        let pixels = d
            .decode()
            .map_err(|e| invalid(format!("the PNG image could not be read: {e:?}")))?;
        let pixels = match pixels {
            zune_core::result::DecodingResult::U8(p) => p,
            _ => return Err(invalid("the PNG image is not 8 bits per sample".into())),
        };
        let channels = d.colorspace().map_or(0, |c| c.num_components());
        (pixels, channels, d.dimensions().unwrap_or_default())
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        let pixels = d
            .decode()
            .map_err(|e| invalid(format!("the JPEG image could not be read: {e:?}")))?;
        (pixels, 3, d.dimensions().unwrap_or_default())
    } else {
        return Err(invalid("the image is neither a PNG nor a JPEG".into()));
    };
    if width == 0 || height == 0 || channels == 0 || pixels.len() != width * height * channels {
        return Err(invalid(format!(
            "the image decoded to {} bytes, not {width}x{height} pixels",
            pixels.len()
        )));
    }
    let rgb = match channels {
        3 => pixels,
        4 => pixels
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        1 => pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        2 => pixels
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        n => return Err(invalid(format!("the image has {n} channels"))),
    };
    Ok(InitImage {
        rgb,
        width,
        height,
        strength: 1.0,
    })
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
    vae_encoder: vae_encoder::VaeEncoder,
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
        let vae_encoder = vae_encoder::VaeEncoder::new(
            var_builder(&vae_file, dtype, &device)?,
            vae_spec.in_channels,
            &vae_spec.config,
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
            vae_encoder,
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
        if let Some(init) = &r.init {
            if (init.width, init.height) != (r.width, r.height)
                || init.rgb.len() != init.width * init.height * 3
            {
                return Err(DiffusionError::InvalidRequest(format!(
                    "the init image is {}x{}, but the request asks for {}x{}",
                    init.width, init.height, r.width, r.height
                )));
            }
            if !(0.0..=1.0).contains(&init.strength) {
                return Err(DiffusionError::InvalidRequest(format!(
                    "the init image's strength {} must be between 0 and 1",
                    init.strength
                )));
            }
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
        // Image-to-image skips the first steps: it starts from the init image, noised.
        let start = match &r.init {
            Some(init) => {
                r.steps - ((r.steps as f64 * init.strength).round() as usize).clamp(1, r.steps)
            }
            None => 0,
        };
        let init_pixels = match &r.init {
            Some(init) => Some(self.pixels(init)?),
            None => None,
        };
        let total = (r.steps - start) * r.samples;
        let mut done = 0;
        let mut images = Vec::with_capacity(r.samples);
        for i in 0..r.samples {
            let seed = r.seed.wrapping_add(i as u64);
            let mut schedule = sampler::Schedule::new(r.sampler, &self.scheduler, r.steps)?;
            let (lh, lw) = (r.height / self.vae_factor, r.width / self.vae_factor);
            let shape = (1, self.latent_channels, lh, lw);
            let noise = Tensor::from_vec(
                gaussian(seed, self.latent_channels * lh * lw),
                shape,
                &self.device,
            )?
            .to_dtype(self.dtype)?;
            debug_assert_eq!(self.unet_in_channels, self.latent_channels);
            let mut latents = match &init_pixels {
                None => (noise * schedule.init_noise_sigma())?,
                Some(pixels) => {
                    let latent = self.vae_encoder.encode(pixels)?;
                    // Another stream of the same seed: the encoder's sample must not repeat
                    // the noise added below.
                    let sample = Tensor::from_vec(
                        gaussian(seed ^ ENCODER_SEED_SALT, latent.mean.elem_count()),
                        latent.mean.shape(),
                        &self.device,
                    )?
                    .to_dtype(self.dtype)?;
                    let encoded = ((latent.mean + (latent.std * sample)?)? * self.vae_scale)?;
                    schedule.add_noise(&encoded, noise, start)?
                }
            };
            for step in start..schedule.len() {
                if cancel() {
                    return Err(DiffusionError::Cancelled);
                }
                let input = if guided {
                    Tensor::cat(&[&latents, &latents], 0)?
                } else {
                    latents.clone()
                };
                let input = schedule.scale_model_input(input, step)?;
                let noise = self.unet.forward(&input, schedule.timestep(step), &emb)?;
                let noise = if guided {
                    let parts = noise.chunk(2, 0)?;
                    (&parts[0] + ((&parts[1] - &parts[0])? * r.cfg_scale)?)?
                } else {
                    noise
                };
                // Euler-ancestral's fresh noise: a stream of its own per step and seed.
                let fresh = || {
                    Tensor::from_vec(
                        gaussian(
                            seed ^ ANCESTRAL_SEED_SALT.wrapping_add(step as u64),
                            latents.elem_count(),
                        ),
                        latents.shape(),
                        &self.device,
                    )?
                    .to_dtype(self.dtype)
                };
                latents = schedule.step(&noise, step, &latents, fresh)?;
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

    /// The init image as (1, 3, h, w) in [-1, 1].
    fn pixels(&self, init: &InitImage) -> Result<Tensor, DiffusionError> {
        let x = Tensor::from_vec(init.rgb.clone(), (init.height, init.width, 3), &self.device)?
            .permute((2, 0, 1))?
            .to_dtype(DType::F32)?;
        let x = ((x / 127.5)? - 1.0)?.unsqueeze(0)?;
        Ok(x.to_dtype(self.dtype)?)
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

/// Mixed into the seed of the init image's latent sample.
const ENCODER_SEED_SALT: u64 = 0x9E37_79B9_7F4A_7C15;
/// Mixed (plus the step) into the seed of Euler-ancestral's noise.
const ANCESTRAL_SEED_SALT: u64 = 0xD1B5_4A32_D192_ED03;

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
    use super::{decode_image, DiffusionError, MAX_SIDE};

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
    fn init_images_decode_to_rgb_whatever_their_colour_type() {
        use crate::png::{encode, ColourType};
        let grey = decode_image(&encode(2, 1, ColourType::Grey, &[10, 200])).expect("grey");
        assert_eq!((grey.width, grey.height), (2, 1));
        assert_eq!(grey.rgb, vec![10, 10, 10, 200, 200, 200]);
        let rgba = decode_image(&encode(1, 2, ColourType::Rgba, &[1, 2, 3, 255, 4, 5, 6, 0]))
            .expect("rgba");
        assert_eq!(rgba.rgb, vec![1, 2, 3, 4, 5, 6]);
        let rgb = decode_image(&encode(1, 1, ColourType::Rgb, &[7, 8, 9])).expect("rgb");
        assert_eq!(rgb.rgb, vec![7, 8, 9]);
        for bad in [
            &b"GIF89a"[..],
            b"\x89PNG\r\n\x1a\nbroken",
            &[0xFF, 0xD8, 0xFF, 0x00],
        ] {
            assert!(matches!(
                decode_image(bad),
                Err(DiffusionError::InvalidRequest(_))
            ));
        }
        let huge = encode(
            (MAX_SIDE + 1) as u32,
            1,
            ColourType::Grey,
            &vec![0; MAX_SIDE + 1],
        );
        assert!(matches!(
            decode_image(&huge),
            Err(DiffusionError::InvalidRequest(_))
        ));
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
