//! Reading the diffusers `config.json` files into candle configs.

use std::path::Path;

use candle_transformers::models::stable_diffusion::{
    ddim::DDIMSchedulerConfig,
    schedulers::{BetaSchedule, PredictionType, TimestepSpacing},
    unet_2d::{BlockConfig, UNet2DConditionModelConfig},
    vae::AutoEncoderKLConfig,
};
use serde_json::Value;

use crate::clip::{Activation, ClipConfig};
use crate::sampler::Sampler;
use crate::unet::TextTimeConfig;
use crate::DiffusionError;

pub(crate) fn read_json(path: &Path) -> Result<Value, DiffusionError> {
    if !path.is_file() {
        return Err(DiffusionError::MissingFile(path.to_path_buf()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not valid JSON: {e}")))
}

fn bad(path: &Path, message: impl Into<String>) -> DiffusionError {
    DiffusionError::Config {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

struct Fields<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize, DiffusionError> {
        match self.get(key) {
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(self.path, format!("`{key}` must be a non-negative integer"))),
            None => default.ok_or_else(|| bad(self.path, format!("`{key}` is missing"))),
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64, DiffusionError> {
        match self.get(key) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(self.path, format!("`{key}` must be a number"))),
            None => Ok(default),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool, DiffusionError> {
        match self.get(key) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(self.path, format!("`{key}` must be true or false"))),
            None => Ok(default),
        }
    }
    fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str, DiffusionError> {
        match self.get(key) {
            Some(v) => v
                .as_str()
                .ok_or_else(|| bad(self.path, format!("`{key}` must be a string"))),
            None => Ok(default),
        }
    }
    /// A required list member.
    fn list(&self, key: &str) -> Result<&Vec<Value>, DiffusionError> {
        self.get(key)
            .ok_or_else(|| bad(self.path, format!("`{key}` is missing")))?
            .as_array()
            .ok_or_else(|| bad(self.path, format!("`{key}` must be a list")))
    }
    fn usize_list(&self, key: &str) -> Result<Vec<usize>, DiffusionError> {
        self.list(key)?
            .iter()
            .map(|v| {
                v.as_u64().map(|n| n as usize).ok_or_else(|| {
                    bad(
                        self.path,
                        format!("`{key}` must list non-negative integers"),
                    )
                })
            })
            .collect()
    }
    fn str_list(&self, key: &str) -> Result<Vec<String>, DiffusionError> {
        self.list(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(self.path, format!("`{key}` must list strings")))
            })
            .collect()
    }
    /// An integer or a per-block list of integers.
    fn per_block(&self, key: &str, n: usize) -> Result<Option<Vec<usize>>, DiffusionError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(x)) => {
                let x = x
                    .as_u64()
                    .ok_or_else(|| bad(self.path, format!("`{key}` must be a positive integer")))?;
                Ok(Some(vec![x as usize; n]))
            }
            Some(Value::Array(_)) => {
                let list = self.usize_list(key)?;
                if list.len() != n {
                    return Err(bad(
                        self.path,
                        format!("`{key}` has {} entries for {n} blocks", list.len()),
                    ));
                }
                Ok(Some(list))
            }
            Some(_) => Err(bad(
                self.path,
                format!("`{key}` must be an integer or a list"),
            )),
        }
    }
}

/// `unet/config.json`.
#[derive(Debug, Clone)]
pub struct UNetSpec {
    pub config: UNet2DConditionModelConfig,
    pub in_channels: usize,
    pub out_channels: usize,
    /// SDXL's added conditioning (`addition_embed_type: "text_time"`).
    pub text_time: Option<TextTimeConfig>,
}

pub(crate) fn unet(path: &Path) -> Result<UNetSpec, DiffusionError> {
    let v = read_json(path)?;
    let f = Fields { path, v: &v };
    let channels = f.usize_list("block_out_channels")?;
    let n = channels.len();
    if n == 0 {
        return Err(bad(path, "`block_out_channels` is empty"));
    }
    let down = f.str_list("down_block_types")?;
    if down.len() != n {
        return Err(bad(
            path,
            format!(
                "`down_block_types` has {} entries for {n} blocks",
                down.len()
            ),
        ));
    }
    let heads = match f.per_block("num_attention_heads", n)? {
        Some(h) => h,
        None => f
            .per_block("attention_head_dim", n)?
            .unwrap_or_else(|| vec![8; n]),
    };
    let transformer_layers = f
        .per_block("transformer_layers_per_block", n)?
        .unwrap_or_else(|| vec![1; n]);
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        let cross = match down[i].as_str() {
            "CrossAttnDownBlock2D" => Some(transformer_layers[i]),
            "DownBlock2D" => None,
            other => return Err(bad(path, format!("unsupported down block type `{other}`"))),
        };
        if heads[i] == 0 || !channels[i].is_multiple_of(heads[i]) {
            return Err(bad(
                path,
                format!(
                    "block {i}: {} channels do not split into {} attention heads",
                    channels[i], heads[i]
                ),
            ));
        }
        blocks.push(BlockConfig {
            out_channels: channels[i],
            use_cross_attn: cross,
            attention_head_dim: heads[i],
        });
    }
    if let Ok(up) = f.str_list("up_block_types") {
        let mirrored = up
            .iter()
            .rev()
            .zip(&down)
            .all(|(u, d)| u.starts_with("CrossAttn") == d.starts_with("CrossAttn"));
        if up.len() != n || !mirrored {
            return Err(bad(path, "`up_block_types` must mirror `down_block_types`"));
        }
    }
    let groups = f.usize_or("norm_num_groups", Some(32))?;
    check_norm_groups(path, &channels, groups)?;
    let cross_attention_dim = match f.get("cross_attention_dim") {
        Some(Value::Array(_)) => {
            return Err(bad(
                path,
                "a per-block `cross_attention_dim` is not supported",
            ))
        }
        _ => f.usize_or("cross_attention_dim", Some(1280))?,
    };
    let config = UNet2DConditionModelConfig {
        center_input_sample: f.bool_or("center_input_sample", false)?,
        flip_sin_to_cos: f.bool_or("flip_sin_to_cos", true)?,
        freq_shift: f.f64_or("freq_shift", 0.0)?,
        blocks,
        layers_per_block: f.usize_or("layers_per_block", Some(2))?,
        downsample_padding: f.usize_or("downsample_padding", Some(1))?,
        mid_block_scale_factor: f.f64_or("mid_block_scale_factor", 1.0)?,
        norm_num_groups: groups,
        norm_eps: f.f64_or("norm_eps", 1e-5)?,
        cross_attention_dim,
        sliced_attention_size: None,
        use_linear_projection: f.bool_or("use_linear_projection", false)?,
    };
    Ok(UNetSpec {
        config,
        in_channels: f.usize_or("in_channels", Some(4))?,
        out_channels: f.usize_or("out_channels", Some(4))?,
        text_time: match f.get("addition_embed_type").map(Value::as_str) {
            None => None,
            Some(Some("text_time")) => Some(TextTimeConfig {
                time_embed_dim: f.usize_or("addition_time_embed_dim", None)?,
                input_dim: f.usize_or("projection_class_embeddings_input_dim", None)?,
            }),
            Some(other) => {
                return Err(bad(
                    path,
                    format!(
                        "addition_embed_type {} is not supported (only SDXL's \"text_time\")",
                        other.map_or_else(|| "(not a string)".to_string(), |s| format!("`{s}`"))
                    ),
                ))
            }
        },
    })
}

/// `vae/config.json`.
#[derive(Debug, Clone)]
pub struct VaeSpec {
    pub config: AutoEncoderKLConfig,
    pub in_channels: usize,
    pub out_channels: usize,
    pub scaling_factor: f64,
    /// `force_upcast` (absent in SD 1.x/2.x configs; diffusers' default is true).
    pub force_upcast: Option<bool>,
}

impl VaeSpec {
    /// Pixels per latent along each side.
    pub fn downsampling(&self) -> usize {
        1 << (self.config.block_out_channels.len() - 1)
    }
}

/// Group norm needs every block's channels to split evenly into the groups.
fn check_norm_groups(path: &Path, channels: &[usize], groups: usize) -> Result<(), DiffusionError> {
    match channels
        .iter()
        .find(|c| groups == 0 || !c.is_multiple_of(groups))
    {
        Some(c) => Err(bad(
            path,
            format!("{c} channels do not split into {groups} norm groups"),
        )),
        None => Ok(()),
    }
}

pub(crate) fn vae(path: &Path) -> Result<VaeSpec, DiffusionError> {
    let v = read_json(path)?;
    let f = Fields { path, v: &v };
    let channels = f.usize_list("block_out_channels")?;
    if channels.is_empty() {
        return Err(bad(path, "`block_out_channels` is empty"));
    }
    let groups = f.usize_or("norm_num_groups", Some(32))?;
    check_norm_groups(path, &channels, groups)?;
    Ok(VaeSpec {
        config: AutoEncoderKLConfig {
            block_out_channels: channels,
            layers_per_block: f.usize_or("layers_per_block", Some(2))?,
            latent_channels: f.usize_or("latent_channels", Some(4))?,
            norm_num_groups: groups,
            use_quant_conv: f.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: f.bool_or("use_post_quant_conv", true)?,
        },
        in_channels: f.usize_or("in_channels", Some(3))?,
        out_channels: f.usize_or("out_channels", Some(3))?,
        scaling_factor: f.f64_or("scaling_factor", 0.18215)?,
        force_upcast: match f.get("force_upcast") {
            None => None,
            Some(_) => Some(f.bool_or("force_upcast", true)?),
        },
    })
}

/// `text_encoder/config.json`.
pub(crate) fn clip(path: &Path) -> Result<ClipConfig, DiffusionError> {
    let v = read_json(path)?;
    let f = Fields { path, v: &v };
    let activation = match f.str_or("hidden_act", "quick_gelu")? {
        "quick_gelu" => Activation::QuickGelu,
        "gelu" => Activation::Gelu,
        other => return Err(bad(path, format!("unsupported `hidden_act` `{other}`"))),
    };
    let c = ClipConfig {
        vocab_size: f.usize_or("vocab_size", Some(49408))?,
        hidden_size: f.usize_or("hidden_size", None)?,
        intermediate_size: f.usize_or("intermediate_size", None)?,
        num_hidden_layers: f.usize_or("num_hidden_layers", None)?,
        num_attention_heads: f.usize_or("num_attention_heads", None)?,
        max_position_embeddings: f.usize_or("max_position_embeddings", Some(77))?,
        layer_norm_eps: f.f64_or("layer_norm_eps", 1e-5)?,
        activation,
    };
    if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(bad(
            path,
            "`hidden_size` does not split into `num_attention_heads`",
        ));
    }
    Ok(c)
}

/// `projection_dim` of `text_encoder_2/config.json` (transformers' default is 512).
pub(crate) fn projection_dim(path: &Path) -> Result<usize, DiffusionError> {
    let v = read_json(path)?;
    Fields { path, v: &v }.usize_or("projection_dim", Some(512))
}

/// `force_zeros_for_empty_prompt` of an SDXL `model_index.json` (the pipeline's default is
/// true; an absent file reads as the default).
pub(crate) fn force_zeros_for_empty_prompt(path: &Path) -> Result<bool, DiffusionError> {
    if !path.is_file() {
        return Ok(true);
    }
    let v = read_json(path)?;
    Fields { path, v: &v }.bool_or("force_zeros_for_empty_prompt", true)
}

/// `scheduler/scheduler_config.json` (optional: SD defaults without it): the beta schedule
/// every sampler runs on, and the sampler its `_class_name` names (DDIM for the schedulers
/// Basalt does not run, such as SD 1.5's PNDM).
pub(crate) fn scheduler(path: &Path) -> Result<(DDIMSchedulerConfig, Sampler), DiffusionError> {
    let mut c = DDIMSchedulerConfig::default();
    if !path.is_file() {
        return Ok((c, Sampler::Ddim));
    }
    let v = read_json(path)?;
    let f = Fields { path, v: &v };
    let sampler = match f.str_or("_class_name", "DDIMScheduler")? {
        "EulerDiscreteScheduler" => Sampler::Euler,
        "EulerAncestralDiscreteScheduler" => Sampler::EulerAncestral,
        _ => Sampler::Ddim,
    };
    c.beta_start = f.f64_or("beta_start", c.beta_start)?;
    c.beta_end = f.f64_or("beta_end", c.beta_end)?;
    c.beta_schedule = match f.str_or("beta_schedule", "scaled_linear")? {
        "scaled_linear" => BetaSchedule::ScaledLinear,
        "linear" => BetaSchedule::Linear,
        "squaredcos_cap_v2" => BetaSchedule::SquaredcosCapV2,
        other => return Err(bad(path, format!("unsupported `beta_schedule` `{other}`"))),
    };
    c.steps_offset = f.usize_or("steps_offset", Some(c.steps_offset))?;
    c.train_timesteps = f.usize_or("num_train_timesteps", Some(c.train_timesteps))?;
    c.prediction_type = match f.str_or("prediction_type", "epsilon")? {
        "epsilon" => PredictionType::Epsilon,
        "v_prediction" => PredictionType::VPrediction,
        "sample" => PredictionType::Sample,
        other => {
            return Err(bad(
                path,
                format!("unsupported `prediction_type` `{other}`"),
            ))
        }
    };
    c.timestep_spacing = match f.str_or("timestep_spacing", "leading")? {
        "leading" => TimestepSpacing::Leading,
        "linspace" => TimestepSpacing::Linspace,
        "trailing" => TimestepSpacing::Trailing,
        other => {
            return Err(bad(
                path,
                format!("unsupported `timestep_spacing` `{other}`"),
            ))
        }
    };
    Ok((c, sampler))
}

#[cfg(test)]
mod tests {
    //! The `config.json` files of SD 1.5 and SD 2.1 (as published) give the networks
    //! candle-transformers hard-codes for them.

    use candle_transformers::models::stable_diffusion::StableDiffusionConfig;
    use serde_json::json;

    use crate::clip::Activation;

    fn write(dir: &std::path::Path, name: &str, v: serde_json::Value) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, v.to_string()).expect("write");
        path
    }

    fn sd15_unet() -> serde_json::Value {
        json!({
            "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
            "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
            "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
            "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
        })
    }

    fn sd_vae() -> serde_json::Value {
        json!({
            "_class_name": "AutoencoderKL", "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 512,
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
        })
    }

    #[test]
    fn sd15_configs_match_candle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let candle = format!("{:?}", StableDiffusionConfig::v1_5(None, None, None));
        let unet = super::unet(&write(dir.path(), "unet.json", sd15_unet())).expect("unet");
        assert!(
            candle.contains(&format!("unet: {:?}", unet.config)),
            "{candle}\n{unet:?}"
        );
        let vae = super::vae(&write(dir.path(), "vae.json", sd_vae())).expect("vae");
        assert!(
            candle.contains(&format!("autoencoder: {:?}", vae.config)),
            "{candle}"
        );
        assert_eq!((vae.downsampling(), vae.scaling_factor), (8, 0.18215));
        let clip = super::clip(&write(
            dir.path(),
            "clip.json",
            json!({
                "architectures": ["CLIPTextModel"], "hidden_act": "quick_gelu", "hidden_size": 768,
                "intermediate_size": 3072, "max_position_embeddings": 77,
                "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768,
                "vocab_size": 49408, "layer_norm_eps": 1e-05
            }),
        ))
        .expect("clip");
        assert_eq!(
            (
                clip.hidden_size,
                clip.intermediate_size,
                clip.num_hidden_layers,
                clip.num_attention_heads
            ),
            (768, 3072, 12, 12)
        );
        assert_eq!(clip.activation, Activation::QuickGelu);
    }

    #[test]
    fn sd21_configs_match_candle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let candle = format!("{:?}", StableDiffusionConfig::v2_1(None, None, None));
        let mut unet = sd15_unet();
        unet["attention_head_dim"] = json!([5, 10, 20, 20]);
        unet["cross_attention_dim"] = json!(1024);
        unet["use_linear_projection"] = json!(true);
        unet["upcast_attention"] = json!(true);
        unet["sample_size"] = json!(96);
        let unet = super::unet(&write(dir.path(), "unet.json", unet)).expect("unet");
        assert!(
            candle.contains(&format!("unet: {:?}", unet.config)),
            "{candle}\n{unet:?}"
        );
        let clip = super::clip(&write(
            dir.path(),
            "clip.json",
            json!({
                "hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
                "max_position_embeddings": 77, "num_attention_heads": 16,
                "num_hidden_layers": 23, "projection_dim": 512, "vocab_size": 49408
            }),
        ))
        .expect("clip");
        assert_eq!((clip.hidden_size, clip.num_hidden_layers), (1024, 23));
        assert_eq!(clip.activation, Activation::Gelu);
        let sched = super::scheduler(&write(
            dir.path(),
            "sched.json",
            json!({
                "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
                "prediction_type": "v_prediction", "set_alpha_to_one": false,
                "steps_offset": 1, "trained_betas": null
            }),
        ))
        .expect("scheduler");
        assert_eq!(sched.1, crate::Sampler::Ddim);
        assert!(matches!(
            sched.0.prediction_type,
            candle_transformers::models::stable_diffusion::schedulers::PredictionType::VPrediction
        ));
    }

    /// SDXL base 1.0's `unet/config.json` (as published) gives candle's `sdxl()` UNet, plus the
    /// added conditioning candle's UNet lacks.
    #[test]
    fn sdxl_configs_match_candle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let candle = format!("{:?}", StableDiffusionConfig::sdxl(None, None, None));
        // Too long for one `json!` (its recursion limit): parsed from text.
        let unet: serde_json::Value = serde_json::from_str(
            r#"{
            "_class_name": "UNet2DConditionModel", "act_fn": "silu",
            "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
            "block_out_channels": [320, 640, 1280], "center_input_sample": false,
            "class_embed_type": null, "class_embeddings_concat": false, "conv_in_kernel": 3,
            "conv_out_kernel": 3, "cross_attention_dim": 2048, "cross_attention_norm": null,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "downsample_padding": 1, "dual_cross_attention": false,
            "encoder_hid_dim": null, "encoder_hid_dim_type": null, "flip_sin_to_cos": true,
            "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
            "mid_block_only_cross_attention": null, "mid_block_scale_factor": 1,
            "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
            "norm_num_groups": 32, "num_attention_heads": null,
            "num_class_embeds": null, "only_cross_attention": false, "out_channels": 4,
            "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
            "resnet_skip_time_act": false, "resnet_time_scale_shift": "default",
            "sample_size": 128, "time_cond_proj_dim": null, "time_embedding_act_fn": null,
            "time_embedding_dim": null, "time_embedding_type": "positional",
            "timestep_post_act": null, "transformer_layers_per_block": [1, 2, 10],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "upcast_attention": null, "use_linear_projection": true
        }"#,
        )
        .expect("SDXL unet config");
        let unet = super::unet(&write(dir.path(), "unet.json", unet)).expect("unet");
        assert!(
            candle.contains(&format!("unet: {:?}", unet.config)),
            "{candle}\n{unet:?}"
        );
        let tt = unet.text_time.expect("text_time");
        assert_eq!((tt.time_embed_dim, tt.input_dim), (256, 2816));
        let mut vae = sd_vae();
        vae["scaling_factor"] = json!(0.13025);
        vae["force_upcast"] = json!(true);
        let vae = super::vae(&write(dir.path(), "vae.json", vae)).expect("vae");
        assert_eq!(
            (vae.scaling_factor, vae.force_upcast),
            (0.13025, Some(true))
        );
        let mut unet = sd15_unet();
        unet["addition_embed_type"] = json!("image");
        let err = super::unet(&write(dir.path(), "unet.json", unet))
            .expect_err("not text_time")
            .to_string();
        assert!(err.contains("addition_embed_type `image`"), "{err}");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut unet = sd15_unet();
        unet["attention_head_dim"] = json!([5, 10]);
        let err = super::unet(&write(dir.path(), "unet.json", unet))
            .expect_err("2 entries for 4 blocks")
            .to_string();
        assert!(
            err.contains("unet.json") && err.contains("attention_head_dim"),
            "{err}"
        );
        let mut unet = sd15_unet();
        unet["down_block_types"][0] = json!("SimpleCrossAttnDownBlock2D");
        let err = super::unet(&write(dir.path(), "unet.json", unet))
            .expect_err("unsupported block")
            .to_string();
        assert!(err.contains("SimpleCrossAttnDownBlock2D"), "{err}");
        let err = super::clip(&write(dir.path(), "clip.json", json!({"hidden_size": 8})))
            .expect_err("missing fields")
            .to_string();
        assert!(err.contains("intermediate_size"), "{err}");
    }
}
