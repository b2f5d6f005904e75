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
//!
//! SDXL-architecture folders (`text_encoder_2/`, a UNet with `addition_embed_type:
//! "text_time"`) load too: both encoders' penultimate states condition the UNet, and the
//! second encoder's pooled embedding with the six size/crop time ids feed the added
//! conditioning of Basalt's own UNet (`unet.rs`, candle's blocks plus `add_embedding`).

mod clip;
mod config;
pub mod fixture;
pub mod png;
mod sampler;
mod unet;
mod vae_encoder;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::stable_diffusion::{
    ddim::DDIMSchedulerConfig, schedulers::TimestepSpacing, unet_2d::UNet2DConditionModel,
    vae::AutoEncoderKL,
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

/// What a model's own folder says about running it (`scheduler/scheduler_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// The sampler its `_class_name` names: Euler, Euler-ancestral, or DDIM for any other.
    pub sampler: Sampler,
    /// A few-step distilled model, as SD-Turbo and SDXL-Turbo are: an Euler-family scheduler
    /// with `timestep_spacing: "trailing"` (their published configs; SD 1.x/2.x and SDXL base
    /// use "leading"). Such models are trained for 1 to 4 steps without guidance.
    pub few_step: bool,
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
    unet: Denoiser,
    /// SDXL's second text encoder; `None` for SD 1.x/2.x.
    xl: Option<Xl>,
    unet_in_channels: usize,
    vae: AutoEncoderKL,
    vae_encoder: vae_encoder::VaeEncoder,
    /// The VAE's dtype: f32 for SDXL models whose VAE config asks for `force_upcast` (SDXL's
    /// VAE overflows in f16), else the model's.
    vae_dtype: DType,
    vae_scale: f64,
    vae_factor: usize,
    latent_channels: usize,
    native_size: usize,
    scheduler: DDIMSchedulerConfig,
    defaults: Defaults,
    device: Device,
    dtype: DType,
}

enum Denoiser {
    /// SD 1.x/2.x: candle's UNet, unchanged.
    Sd(UNet2DConditionModel),
    /// SDXL: Basalt's UNet with the added "text_time" conditioning.
    Xl(unet::UNet),
}

/// SDXL's second text encoder (`CLIPTextModelWithProjection`) and its tokenizer.
struct Xl {
    tokenizer: tokenizers::Tokenizer,
    pad_id: u32,
    eos_id: u32,
    text_encoder: clip::ClipTextTransformer,
    projection: Linear,
    /// `force_zeros_for_empty_prompt`: an empty negative prompt is all zeros, not encoded "".
    force_zeros: bool,
}

/// The text a UNet step is conditioned on (batch 2 = [negative; prompt] under guidance).
struct TextConditioning {
    hidden: Tensor,
    /// SDXL: pooled embeddings (batch, projection_dim) and time ids (batch, 6), f32.
    added: Option<(Tensor, Tensor)>,
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
        if dir.join("transformer").is_dir() || dir.join("text_encoder_3").exists() {
            return Err(DiffusionError::Unsupported(
                "an SD3-style folder (transformer/, text_encoder_3/): the MMDiT of SD3 and SD3.5 is not supported; SD 1.x, SD 2.x, SDXL and SDXL-Turbo folders are".into(),
            ));
        }

        let clip_cfg = config::clip(&dir.join("text_encoder/config.json"))?;
        let unet_spec = config::unet(&dir.join("unet/config.json"))?;
        let vae_spec = config::vae(&dir.join("vae/config.json"))?;
        let (scheduler, sampler) = config::scheduler(&dir.join("scheduler/scheduler_config.json"))?;
        let defaults = Defaults {
            sampler,
            few_step: sampler != Sampler::Ddim
                && matches!(scheduler.timestep_spacing, TimestepSpacing::Trailing),
        };
        let unet_json = config::read_json(&dir.join("unet/config.json"))?;
        let te2_dir = dir.join("text_encoder_2");
        // SDXL: a second text encoder and the UNet's added conditioning go together.
        let xl_cfg = match (&unet_spec.text_time, te2_dir.exists()) {
            (None, false) => None,
            (None, true) => {
                return Err(DiffusionError::Config {
                    path: dir.join("unet/config.json"),
                    message: "the folder has text_encoder_2/ (SDXL) but the UNet has no `addition_embed_type: \"text_time\"`".into(),
                })
            }
            (Some(text_time), _) => {
                let path = te2_dir.join("config.json");
                let cfg = config::clip(&path)?;
                Some((cfg, config::projection_dim(&path)?, *text_time))
            }
        };
        let unet_config_path = dir.join("unet/config.json");
        let unet_error = |message: String| DiffusionError::Config {
            path: unet_config_path.clone(),
            message,
        };
        match &xl_cfg {
            None => {
                if unet_spec.config.cross_attention_dim != clip_cfg.hidden_size {
                    return Err(unet_error(format!(
                        "cross_attention_dim {} does not match the text encoder's hidden_size {}",
                        unet_spec.config.cross_attention_dim, clip_cfg.hidden_size
                    )));
                }
            }
            Some((cfg2, projection_dim, text_time)) => {
                let both = clip_cfg.hidden_size + cfg2.hidden_size;
                if unet_spec.config.cross_attention_dim != both {
                    return Err(unet_error(format!(
                        "cross_attention_dim {} does not match the text encoders' hidden sizes {} + {}",
                        unet_spec.config.cross_attention_dim, clip_cfg.hidden_size, cfg2.hidden_size
                    )));
                }
                if text_time.time_embed_dim == 0 || text_time.time_embed_dim % 2 == 1 {
                    return Err(unet_error(format!(
                        "addition_time_embed_dim {} must be a positive even number",
                        text_time.time_embed_dim
                    )));
                }
                let expected = projection_dim + TIME_IDS * text_time.time_embed_dim;
                if text_time.input_dim != expected {
                    return Err(unet_error(format!(
                        "projection_class_embeddings_input_dim {} is not text_encoder_2's projection_dim {projection_dim} + {TIME_IDS} × addition_time_embed_dim {} = {expected} (refiner models, with an aesthetic score, are not supported)",
                        text_time.input_dim, text_time.time_embed_dim
                    )));
                }
                if cfg2.max_position_embeddings != clip_cfg.max_position_embeddings {
                    return Err(DiffusionError::Config {
                        path: te2_dir.join("config.json"),
                        message: format!(
                            "max_position_embeddings {} differs from text_encoder's {}",
                            cfg2.max_position_embeddings, clip_cfg.max_position_embeddings
                        ),
                    });
                }
            }
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
        let te_names = ["model.safetensors", "model.fp16.safetensors"];
        let te_file = weights_file(&te_dir, &te_names)?;
        let text_encoder =
            clip::ClipTextTransformer::new(var_builder(&te_file, dtype, &device)?, &clip_cfg)
                .map_err(|e| weights_error(&te_file, e))?;

        let xl = match &xl_cfg {
            None => None,
            Some((cfg2, projection_dim, _)) => {
                let tok_dir = dir.join("tokenizer_2");
                let (tokenizer, pad_id) = load_tokenizer(&tok_dir)?;
                let eos_id = tokenizer.token_to_id("<|endoftext|>").ok_or_else(|| {
                    DiffusionError::Tokenizer {
                        path: tok_dir.clone(),
                        message: "`<|endoftext|>` is not in the vocabulary".into(),
                    }
                })?;
                let file = weights_file(&te2_dir, &te_names)?;
                let vb = var_builder(&file, dtype, &device)?;
                let text_encoder = clip::ClipTextTransformer::new(vb.clone(), cfg2)
                    .map_err(|e| weights_error(&file, e))?;
                let projection = candle_nn::linear_no_bias(
                    cfg2.hidden_size,
                    *projection_dim,
                    vb.pp("text_projection"),
                )
                .map_err(|e| weights_error(&file, e))?;
                Some(Xl {
                    tokenizer,
                    pad_id,
                    eos_id,
                    text_encoder,
                    projection,
                    force_zeros: config::force_zeros_for_empty_prompt(
                        &dir.join("model_index.json"),
                    )?,
                })
            }
        };

        let unet_names = [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
        ];
        let unet_file = weights_file(&dir.join("unet"), &unet_names)?;
        let unet_vb = var_builder(&unet_file, dtype, &device)?;
        let unet = match &xl_cfg {
            None => Denoiser::Sd(
                UNet2DConditionModel::new(
                    unet_vb,
                    unet_spec.in_channels,
                    unet_spec.out_channels,
                    false,
                    unet_spec.config.clone(),
                )
                .map_err(|e| weights_error(&unet_file, e))?,
            ),
            Some((_, _, text_time)) => Denoiser::Xl(
                unet::UNet::new(
                    unet_vb,
                    unet_spec.in_channels,
                    unet_spec.out_channels,
                    unet_spec.config.clone(),
                    Some(*text_time),
                )
                .map_err(|e| weights_error(&unet_file, e))?,
            ),
        };

        // diffusers' SDXL pipelines decode in f32 when the VAE says `force_upcast` (its
        // default); SD 1.x/2.x pipelines never upcast.
        let vae_dtype = if xl.is_some() && vae_spec.force_upcast.unwrap_or(true) {
            DType::F32
        } else {
            dtype
        };
        let vae_file = weights_file(&dir.join("vae"), &unet_names)?;
        let vae = AutoEncoderKL::new(
            var_builder(&vae_file, vae_dtype, &device)?,
            vae_spec.in_channels,
            vae_spec.out_channels,
            vae_spec.config.clone(),
        )
        .map_err(|e| weights_error(&vae_file, e))?;
        let vae_encoder = vae_encoder::VaeEncoder::new(
            var_builder(&vae_file, vae_dtype, &device)?,
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
            xl,
            unet_in_channels: unet_spec.in_channels,
            vae_factor: vae_spec.downsampling(),
            native_size: sample_size * vae_spec.downsampling(),
            latent_channels: vae_spec.config.latent_channels,
            vae_scale: vae_spec.scaling_factor,
            vae,
            vae_encoder,
            vae_dtype,
            scheduler,
            defaults,
            device,
            dtype,
        })
    }

    /// Whether this is an SDXL-architecture model (two text encoders, added conditioning).
    pub fn is_sdxl(&self) -> bool {
        self.xl.is_some()
    }

    /// What the folder's scheduler config suggests for requests that leave it to the model.
    pub fn defaults(&self) -> Defaults {
        self.defaults
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

    /// Token ids of `text`, cut to `max_tokens` (keeping the end-of-text token) and padded.
    fn token_ids(
        &self,
        tokenizer: &tokenizers::Tokenizer,
        pad_id: u32,
        text: &str,
    ) -> Result<Vec<u32>, DiffusionError> {
        let enc = tokenizer
            .encode(text, true)
            .map_err(|e| DiffusionError::InvalidRequest(format!("tokenizing the prompt: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > self.max_tokens {
            // Keep the end-of-text token the post-processor put last.
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_tokens);
            ids[self.max_tokens - 1] = last;
        }
        ids.resize(self.max_tokens, pad_id);
        Ok(ids)
    }

    fn ids_tensor(&self, ids: &[u32]) -> Result<Tensor, DiffusionError> {
        Ok(Tensor::new(ids, &self.device)?.unsqueeze(0)?)
    }

    /// SD 1.x/2.x: the last hidden state, (1, tokens, dim).
    fn encode_sd(&self, text: &str) -> Result<Tensor, DiffusionError> {
        let ids = self.token_ids(&self.tokenizer, self.pad_id, text)?;
        Ok(self.text_encoder.forward(&self.ids_tensor(&ids)?)?)
    }

    /// SDXL: both encoders' penultimate states side by side, (1, tokens, dim1 + dim2), and the
    /// second encoder's pooled, projected embedding, (1, projection_dim).
    fn encode_xl(&self, xl: &Xl, text: &str) -> Result<(Tensor, Tensor), DiffusionError> {
        let ids = self.token_ids(&self.tokenizer, self.pad_id, text)?;
        let (h1, _) = self
            .text_encoder
            .forward_penultimate(&self.ids_tensor(&ids)?)?;
        let ids = self.token_ids(&xl.tokenizer, xl.pad_id, text)?;
        let (h2, last) = xl
            .text_encoder
            .forward_penultimate(&self.ids_tensor(&ids)?)?;
        let pooled = clip::pooled(&last, clip::eos_position(&ids, xl.eos_id), &xl.projection)?;
        Ok((Tensor::cat(&[h1, h2], 2)?, pooled))
    }

    /// The text conditioning: batch 2 = [negative; prompt] with guidance, else batch 1.
    fn conditioning(&self, r: &Request, guided: bool) -> Result<TextConditioning, DiffusionError> {
        let Some(xl) = &self.xl else {
            let cond = self.encode_sd(&r.prompt)?;
            let hidden = if guided {
                Tensor::cat(&[self.encode_sd(&r.negative_prompt)?, cond], 0)?
            } else {
                cond
            };
            return Ok(TextConditioning {
                hidden: hidden.to_dtype(self.dtype)?,
                added: None,
            });
        };
        let (hidden, pooled) = self.encode_xl(xl, &r.prompt)?;
        let (hidden, pooled) = if guided {
            let (neg_hidden, neg_pooled) = if r.negative_prompt.is_empty() && xl.force_zeros {
                (hidden.zeros_like()?, pooled.zeros_like()?)
            } else {
                self.encode_xl(xl, &r.negative_prompt)?
            };
            (
                Tensor::cat(&[neg_hidden, hidden], 0)?,
                Tensor::cat(&[neg_pooled, pooled], 0)?,
            )
        } else {
            (hidden, pooled)
        };
        let batch = hidden.dim(0)?;
        let ids = time_ids(r.width, r.height);
        let ids = Tensor::new(&ids, &self.device)?
            .unsqueeze(0)?
            .repeat((batch, 1))?;
        Ok(TextConditioning {
            hidden: hidden.to_dtype(self.dtype)?,
            added: Some((pooled.to_dtype(self.dtype)?, ids)),
        })
    }

    fn denoise(
        &self,
        x: &Tensor,
        timestep: f64,
        c: &TextConditioning,
    ) -> Result<Tensor, DiffusionError> {
        Ok(match &self.unet {
            Denoiser::Sd(u) => u.forward(x, timestep, &c.hidden)?,
            Denoiser::Xl(u) => u.forward(
                x,
                timestep,
                &unet::Conditioning {
                    hidden: &c.hidden,
                    added: c.added.as_ref().map(|(p, t)| (p, t)),
                },
            )?,
        })
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
        let emb = self.conditioning(r, guided)?;
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
                    .to_dtype(self.vae_dtype)?;
                    let encoded = ((latent.mean + (latent.std * sample)?)? * self.vae_scale)?
                        .to_dtype(self.dtype)?;
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
                let noise = self.denoise(&input, schedule.timestep(step), &emb)?;
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
        Ok(x.to_dtype(self.vae_dtype)?)
    }

    fn decode(
        &self,
        latents: &Tensor,
        width: usize,
        height: usize,
    ) -> Result<Vec<u8>, DiffusionError> {
        let x = self
            .vae
            .decode(&(latents.to_dtype(self.vae_dtype)? / self.vae_scale)?)?;
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

/// How many numbers SDXL's "text_time" conditioning takes.
const TIME_IDS: usize = 6;

/// SDXL's `add_time_ids` for a `width`×`height` image: original size (h, w), crop top-left
/// (0, 0), target size (h, w), as diffusers' SDXL pipelines default them.
fn time_ids(width: usize, height: usize) -> [f32; TIME_IDS] {
    let (h, w) = (height as f32, width as f32);
    [h, w, 0.0, 0.0, h, w]
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
