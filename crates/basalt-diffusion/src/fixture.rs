//! Tiny SD- and SDXL-architecture models with random weights in the diffusers layout, for tests and
//! benchmarks (no real weights can be fetched here). Every tensor is created under the name
//! candle expects by building the networks on a `VarMap`, which is then saved.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::{
    unet_2d::UNet2DConditionModel, vae::AutoEncoderKL,
};
use serde_json::json;

use crate::DiffusionError;

/// Words of the tiny tokenizer's vocabulary (ids 2..); anything else is `<|endoftext|>`.
pub const WORDS: &[&str] = &[
    "a", "an", "the", "of", "in", "on", "with", "and", "photo", "painting", "drawing", "cat",
    "dog", "horse", "robot", "castle", "tree", "forest", "sea", "mountain", "sky", "city", "red",
    "green", "blue", "yellow", "black", "white", "dark", "bright", "blurry", "ugly", "low",
    "quality", "high", "detailed", "sunset", "night", "snow", "rain",
];

fn io(path: &Path, e: impl std::fmt::Display) -> DiffusionError {
    DiffusionError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), DiffusionError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    let text = serde_json::to_string_pretty(v).map_err(|e| io(path, e))?;
    std::fs::write(path, text).map_err(|e| io(path, e))
}

fn save(varmap: &VarMap, path: &Path) -> Result<(), DiffusionError> {
    varmap.save(path).map_err(|e| io(path, e))
}

/// Writes the tiny model into `dir`: a 2-layer CLIP (hidden 32, vocab 1000), a 2-block UNet
/// (32/64 channels, cross-attention only in the low-resolution block and the middle), a 6-block
/// VAE (factor 32, SD's is 8) with 8 to 16 channels, and a WordLevel `tokenizer.json`.
///
/// It is shaped for speed, not quality: the seed's 1024x1024, 50-step request must finish well
/// inside botocore's 60 s read timeout on two cores, so no attention runs at full latent
/// resolution and the VAE shrinks four times as far as SD's.
pub fn write_tiny_model(dir: &Path) -> Result<(), DiffusionError> {
    let device = Device::Cpu;

    // Text encoder.
    let text_config = json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": 1000,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 32,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
        "torch_dtype": "float32"
    });
    write_json(&dir.join("text_encoder/config.json"), &text_config)?;
    let clip_cfg = crate::config::clip(&dir.join("text_encoder/config.json"))?;
    let varmap = VarMap::new();
    crate::clip::ClipTextTransformer::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        &clip_cfg,
    )
    .map_err(|e| io(dir, e))?;
    save(&varmap, &dir.join("text_encoder/model.safetensors"))?;

    // UNet.
    let unet_config = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "cross_attention_dim": 32,
        "attention_head_dim": 2,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "center_input_sample": false,
        "use_linear_projection": false
    });
    write_json(&dir.join("unet/config.json"), &unet_config)?;
    let spec = crate::config::unet(&dir.join("unet/config.json"))?;
    let varmap = VarMap::new();
    UNet2DConditionModel::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        spec.in_channels,
        spec.out_channels,
        false,
        spec.config,
    )
    .map_err(|e| io(dir, e))?;
    save(
        &varmap,
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
    )?;

    write_vae(dir, 0.18215, None)?;

    // Scheduler (SD 1.5's).
    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &json!({
            "_class_name": "DDIMScheduler",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "prediction_type": "epsilon",
            "steps_offset": 1,
            "timestep_spacing": "leading"
        }),
    )?;

    write_json(&dir.join("tokenizer/tokenizer.json"), &tokenizer_json(&[]))?;
    write_json(
        &dir.join("model_index.json"),
        &json!({
            "_class_name": "StableDiffusionPipeline",
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", "DDIMScheduler"]
        }),
    )
}

/// Writes a tiny SDXL-architecture model into `dir`: two 2-layer text encoders (hidden 32;
/// the second a `CLIPTextModelWithProjection` with a 32-wide `text_projection` and a tokenizer
/// that pads with "!"), a 2-block UNet with SDXL's "text_time" added conditioning
/// (`addition_time_embed_dim` 8, so `add_embedding` takes 32 + 6 × 8 = 80), cross-attention of
/// 64 = 32 + 32, `transformer_layers_per_block` [1, 2] and linear projections, the tiny
/// factor-32 VAE with SDXL's scaling factor 0.13025, and SDXL's Euler scheduler config.
/// `sample_size` 32 makes its native size 1024, as SDXL's.
pub fn write_tiny_sdxl_model(dir: &Path) -> Result<(), DiffusionError> {
    let device = Device::Cpu;
    for (name, act, with_projection) in [
        ("text_encoder", "quick_gelu", false),
        ("text_encoder_2", "gelu", true),
    ] {
        let config = json!({
            "architectures": [if with_projection { "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
            "model_type": "clip_text_model",
            "vocab_size": 1000,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "projection_dim": 32,
            // The tiny vocabulary's ids (CLIP's defaults, 49406/49407, are out of range):
            // transformers pools at `eos_token_id`, as Basalt does at `<|endoftext|>`.
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
            "torch_dtype": "float32"
        });
        let path = dir.join(name).join("config.json");
        write_json(&path, &config)?;
        let cfg = crate::config::clip(&path)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        crate::clip::ClipTextTransformer::new(vb.clone(), &cfg).map_err(|e| io(dir, e))?;
        if with_projection {
            candle_nn::linear_no_bias(cfg.hidden_size, 32, vb.pp("text_projection"))
                .map_err(|e| io(dir, e))?;
        }
        save(&varmap, &dir.join(name).join("model.safetensors"))?;
    }

    let unet_config = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "transformer_layers_per_block": [1, 2],
        "cross_attention_dim": 64,
        "attention_head_dim": [2, 4],
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "center_input_sample": false,
        "use_linear_projection": true,
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80
    });
    write_json(&dir.join("unet/config.json"), &unet_config)?;
    let spec = crate::config::unet(&dir.join("unet/config.json"))?;
    let varmap = VarMap::new();
    crate::unet::UNet::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        spec.in_channels,
        spec.out_channels,
        spec.config,
        spec.text_time,
    )
    .map_err(|e| io(dir, e))?;
    save(
        &varmap,
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
    )?;

    write_vae(dir, 0.13025, Some(true))?;

    // SDXL base 1.0's scheduler.
    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &json!({
            "_class_name": "EulerDiscreteScheduler",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "interpolation_type": "linear",
            "num_train_timesteps": 1000,
            "prediction_type": "epsilon",
            "sample_max_value": 1.0,
            "steps_offset": 1,
            "timestep_spacing": "leading",
            "use_karras_sigmas": false
        }),
    )?;

    // SDXL's first tokenizer pads with <|endoftext|>, its second with "!".
    write_json(&dir.join("tokenizer/tokenizer.json"), &tokenizer_json(&[]))?;
    write_json(
        &dir.join("tokenizer/special_tokens_map.json"),
        &json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}),
    )?;
    write_json(
        &dir.join("tokenizer_2/tokenizer.json"),
        &tokenizer_json(&["!"]),
    )?;
    write_json(
        &dir.join("tokenizer_2/special_tokens_map.json"),
        &json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "!", "unk_token": "<|endoftext|>"}),
    )?;
    write_json(
        &dir.join("model_index.json"),
        &json!({
            "_class_name": "StableDiffusionXLPipeline",
            "force_zeros_for_empty_prompt": true,
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"]
        }),
    )
}

/// SDXL-Turbo's and SD-Turbo's published `scheduler/scheduler_config.json`: Euler-ancestral
/// with "trailing" timestep spacing, which Basalt reads as a few-step model.
pub fn turbo_scheduler_config() -> serde_json::Value {
    json!({
        "_class_name": "EulerAncestralDiscreteScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "sample_max_value": 1.0,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "timestep_spacing": "trailing",
        "trained_betas": null,
        "use_karras_sigmas": false
    })
}

/// The tiny SDXL model of [`write_tiny_sdxl_model`] with SDXL-Turbo's scheduler config (and
/// `model_index.json` naming its scheduler class), as an SDXL-Turbo folder is laid out.
pub fn write_tiny_sdxl_turbo_model(dir: &Path) -> Result<(), DiffusionError> {
    write_tiny_sdxl_model(dir)?;
    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &turbo_scheduler_config(),
    )?;
    let index_path = dir.join("model_index.json");
    let mut index = crate::config::read_json(&index_path)?;
    index["scheduler"] = json!(["diffusers", "EulerAncestralDiscreteScheduler"]);
    write_json(&index_path, &index)
}

/// The tiny factor-32 VAE (both fixtures share it; SDXL's differs in its scaling factor and
/// `force_upcast`).
fn write_vae(
    dir: &Path,
    scaling_factor: f64,
    force_upcast: Option<bool>,
) -> Result<(), DiffusionError> {
    let device = Device::Cpu;
    let vae_config = json!({
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "block_out_channels": [8, 8, 16, 16, 16, 16],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 64,
        "scaling_factor": scaling_factor
    });
    let mut vae_config = vae_config;
    if let Some(f) = force_upcast {
        vae_config["force_upcast"] = json!(f);
    }
    write_json(&dir.join("vae/config.json"), &vae_config)?;
    let spec = crate::config::vae(&dir.join("vae/config.json"))?;
    let varmap = VarMap::new();
    AutoEncoderKL::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        spec.in_channels,
        spec.out_channels,
        spec.config,
    )
    .map_err(|e| io(dir, e))?;
    save(
        &varmap,
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
    )?;

    Ok(())
}

/// A WordLevel tokenizer.json: lowercase, whitespace/punctuation split, and
/// `<|startoftext|> $A <|endoftext|>` around every text, as CLIP's does.
/// `extra` words get the ids after [`WORDS`]'.
fn tokenizer_json(extra: &[&str]) -> serde_json::Value {
    let mut vocab: HashMap<String, u32> = HashMap::new();
    vocab.insert("<|startoftext|>".into(), 0);
    vocab.insert("<|endoftext|>".into(), 1);
    for (i, w) in WORDS.iter().chain(extra).enumerate() {
        vocab.insert((*w).to_string(), i as u32 + 2);
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<|startoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|startoftext|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
            ],
            "pair": [
                {"SpecialToken": {"id": "<|startoftext|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
            ],
            "special_tokens": {
                "<|startoftext|>": {"id": "<|startoftext|>", "ids": [0], "tokens": ["<|startoftext|>"]},
                "<|endoftext|>": {"id": "<|endoftext|>", "ids": [1], "tokens": ["<|endoftext|>"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"}
    })
}
