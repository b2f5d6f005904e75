//! The UNet of SDXL-architecture models: diffusers' `UNet2DConditionModel` with
//! `addition_embed_type: "text_time"`.
//!
//! candle-transformers 0.11.1's `UNet2DConditionModel` computes the time embedding inside
//! `forward` and keeps its blocks private, so there is no way to add SDXL's added conditioning
//! to it. This module builds the same network from candle's public blocks (`unet_2d_blocks`,
//! `embeddings`), under the same tensor names, and adds `add_embedding`. The wiring
//! (`new` and `forward` below) necessarily repeats candle's `unet_2d.rs`; the only new logic
//! is [`AddedConditioning`]. A test checks that without it this network gives exactly the
//! output of candle's own UNet on the same weights.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::{
    embeddings::{TimestepEmbedding, Timesteps},
    unet_2d::{BlockConfig, UNet2DConditionModelConfig},
    unet_2d_blocks::{
        CrossAttnDownBlock2D, CrossAttnDownBlock2DConfig, CrossAttnUpBlock2D,
        CrossAttnUpBlock2DConfig, DownBlock2D, DownBlock2DConfig, UNetMidBlock2DCrossAttn,
        UNetMidBlock2DCrossAttnConfig, UpBlock2D, UpBlock2DConfig,
    },
};

/// SDXL's "text_time" conditioning: the pooled text embedding and the six size/crop numbers
/// (each sinusoidally embedded), through `add_embedding`, added to the time embedding.
struct AddedConditioning {
    /// `addition_time_embed_dim`.
    channels: usize,
    embedding: TimestepEmbedding,
}

/// The numbers of `unet/config.json` the added conditioning needs.
#[derive(Debug, Clone, Copy)]
pub struct TextTimeConfig {
    /// `addition_time_embed_dim` (256 in SDXL): channels per time id.
    pub time_embed_dim: usize,
    /// `projection_class_embeddings_input_dim` (2816 in SDXL = 1280 pooled + 6 × 256).
    pub input_dim: usize,
}

/// The sinusoidal embedding of each of `ids` with `channels` channels (diffusers'
/// `get_timestep_embedding`, as candle's `Timesteps` computes it), flattened per row:
/// `ids` (batch, n) → (batch, n × channels). Computed in f32 (time ids reach 1024, which f16
/// products would blur), then cast to `dtype`.
pub(crate) fn embed_time_ids(
    ids: &Tensor,
    channels: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    dtype: DType,
) -> Result<Tensor> {
    let (b, n) = ids.dims2()?;
    let proj = Timesteps::new(channels, flip_sin_to_cos, freq_shift);
    proj.forward(&ids.to_dtype(DType::F32)?.flatten_all()?)?
        .reshape((b, n * channels))?
        .to_dtype(dtype)
}

/// What the UNet is conditioned on at one step.
pub(crate) struct Conditioning<'a> {
    /// (batch, tokens, cross_attention_dim).
    pub hidden: &'a Tensor,
    /// SDXL: (batch, pooled) pooled text embeddings and (batch, 6) time ids.
    pub added: Option<(&'a Tensor, &'a Tensor)>,
}

enum Down {
    Basic(DownBlock2D),
    CrossAttn(CrossAttnDownBlock2D),
}

enum Up {
    Basic(UpBlock2D),
    CrossAttn(CrossAttnUpBlock2D),
}

pub(crate) struct UNet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    added: Option<AddedConditioning>,
    down_blocks: Vec<Down>,
    mid_block: UNetMidBlock2DCrossAttn,
    up_blocks: Vec<Up>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNet2DConditionModelConfig,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl UNet {
    pub(crate) fn new(
        vs: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        config: UNet2DConditionModelConfig,
        text_time: Option<TextTimeConfig>,
    ) -> Result<Self> {
        let n_blocks = config.blocks.len();
        let (first, last) = match (config.blocks.first(), config.blocks.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => candle_core::bail!("the UNet has no blocks"),
        };
        let b_channels = first.out_channels;
        let bl_channels = last.out_channels;
        let time_embed_dim = b_channels * 4;
        let conv_cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv_in = candle_nn::conv2d(in_channels, b_channels, 3, conv_cfg, vs.pp("conv_in"))?;
        let time_proj = Timesteps::new(b_channels, config.flip_sin_to_cos, config.freq_shift);
        let time_embedding =
            TimestepEmbedding::new(vs.pp("time_embedding"), b_channels, time_embed_dim)?;
        let added = match text_time {
            Some(t) => Some(AddedConditioning {
                channels: t.time_embed_dim,
                embedding: TimestepEmbedding::new(
                    vs.pp("add_embedding"),
                    t.input_dim,
                    time_embed_dim,
                )?,
            }),
            None => None,
        };

        let vs_db = vs.pp("down_blocks");
        let mut down_blocks = Vec::with_capacity(n_blocks);
        for (i, block) in config.blocks.iter().enumerate() {
            let BlockConfig {
                out_channels,
                use_cross_attn,
                attention_head_dim,
            } = *block;
            let in_channels = if i > 0 {
                config.blocks[i - 1].out_channels
            } else {
                b_channels
            };
            let db_cfg = DownBlock2DConfig {
                num_layers: config.layers_per_block,
                resnet_eps: config.norm_eps,
                resnet_groups: config.norm_num_groups,
                add_downsample: i < n_blocks - 1,
                downsample_padding: config.downsample_padding,
                ..Default::default()
            };
            down_blocks.push(match use_cross_attn {
                Some(transformer_layers_per_block) => Down::CrossAttn(CrossAttnDownBlock2D::new(
                    vs_db.pp(i.to_string()),
                    in_channels,
                    out_channels,
                    Some(time_embed_dim),
                    false,
                    CrossAttnDownBlock2DConfig {
                        downblock: db_cfg,
                        attn_num_head_channels: attention_head_dim,
                        cross_attention_dim: config.cross_attention_dim,
                        sliced_attention_size: config.sliced_attention_size,
                        use_linear_projection: config.use_linear_projection,
                        transformer_layers_per_block,
                    },
                )?),
                None => Down::Basic(DownBlock2D::new(
                    vs_db.pp(i.to_string()),
                    in_channels,
                    out_channels,
                    Some(time_embed_dim),
                    db_cfg,
                )?),
            });
        }

        // diffusers gives the middle block the last block's transformer depth.
        let mid_block = UNetMidBlock2DCrossAttn::new(
            vs.pp("mid_block"),
            bl_channels,
            Some(time_embed_dim),
            false,
            UNetMidBlock2DCrossAttnConfig {
                resnet_eps: config.norm_eps,
                output_scale_factor: config.mid_block_scale_factor,
                cross_attn_dim: config.cross_attention_dim,
                attn_num_head_channels: last.attention_head_dim,
                resnet_groups: Some(config.norm_num_groups),
                use_linear_projection: config.use_linear_projection,
                transformer_layers_per_block: last.use_cross_attn.unwrap_or(1),
                ..Default::default()
            },
        )?;

        let vs_ub = vs.pp("up_blocks");
        let mut up_blocks = Vec::with_capacity(n_blocks);
        for i in 0..n_blocks {
            let BlockConfig {
                out_channels,
                use_cross_attn,
                attention_head_dim,
            } = config.blocks[n_blocks - 1 - i];
            let prev_out_channels = if i > 0 {
                config.blocks[n_blocks - i].out_channels
            } else {
                bl_channels
            };
            let in_channels = config.blocks[if i == n_blocks - 1 {
                0
            } else {
                n_blocks - i - 2
            }]
            .out_channels;
            let ub_cfg = UpBlock2DConfig {
                num_layers: config.layers_per_block + 1,
                resnet_eps: config.norm_eps,
                resnet_groups: config.norm_num_groups,
                add_upsample: i < n_blocks - 1,
                ..Default::default()
            };
            up_blocks.push(match use_cross_attn {
                Some(transformer_layers_per_block) => Up::CrossAttn(CrossAttnUpBlock2D::new(
                    vs_ub.pp(i.to_string()),
                    in_channels,
                    prev_out_channels,
                    out_channels,
                    Some(time_embed_dim),
                    false,
                    CrossAttnUpBlock2DConfig {
                        upblock: ub_cfg,
                        attn_num_head_channels: attention_head_dim,
                        cross_attention_dim: config.cross_attention_dim,
                        sliced_attention_size: config.sliced_attention_size,
                        use_linear_projection: config.use_linear_projection,
                        transformer_layers_per_block,
                    },
                )?),
                None => Up::Basic(UpBlock2D::new(
                    vs_ub.pp(i.to_string()),
                    in_channels,
                    prev_out_channels,
                    out_channels,
                    Some(time_embed_dim),
                    ub_cfg,
                )?),
            });
        }

        let conv_norm_out = candle_nn::group_norm(
            config.norm_num_groups,
            b_channels,
            config.norm_eps,
            vs.pp("conv_norm_out"),
        )?;
        let conv_out = candle_nn::conv2d(b_channels, out_channels, 3, conv_cfg, vs.pp("conv_out"))?;
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            flip_sin_to_cos: config.flip_sin_to_cos,
            freq_shift: config.freq_shift,
            added,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            config,
        })
    }

    /// The time embedding, plus (SDXL) `add_embedding(cat(pooled, embedded time ids))`.
    fn embedding(&self, xs: &Tensor, timestep: f64, c: &Conditioning) -> Result<Tensor> {
        let bsize = xs.dim(0)?;
        let t = (Tensor::ones(bsize, xs.dtype(), xs.device())? * timestep)?;
        let emb = self.time_embedding.forward(&self.time_proj.forward(&t)?)?;
        match (&self.added, c.added) {
            (None, None) => Ok(emb),
            (Some(added), Some((pooled, time_ids))) => {
                let time = embed_time_ids(
                    time_ids,
                    added.channels,
                    self.flip_sin_to_cos,
                    self.freq_shift,
                    pooled.dtype(),
                )?;
                let input = Tensor::cat(&[pooled, &time], 1)?;
                emb + added.embedding.forward(&input)?
            }
            (Some(_), None) => candle_core::bail!("this UNet needs SDXL's added conditioning"),
            (None, Some(_)) => candle_core::bail!("this UNet has no added conditioning"),
        }
    }

    pub(crate) fn forward(&self, xs: &Tensor, timestep: f64, c: &Conditioning) -> Result<Tensor> {
        let (_, _, height, width) = xs.dims4()?;
        let n_blocks = self.config.blocks.len();
        let up_factor = 1usize << (n_blocks - 1);
        let forward_upsample_size = height % up_factor != 0 || width % up_factor != 0;
        let xs = if self.config.center_input_sample {
            ((xs * 2.0)? - 1.0)?
        } else {
            xs.clone()
        };
        let emb = self.embedding(&xs, timestep, c)?;
        let hidden = c.hidden;
        let xs = self.conv_in.forward(&xs)?;
        let mut res = vec![xs.clone()];
        let mut xs = xs;
        for block in &self.down_blocks {
            let (out, states) = match block {
                Down::Basic(b) => b.forward(&xs, Some(&emb))?,
                Down::CrossAttn(b) => b.forward(&xs, Some(&emb), Some(hidden))?,
            };
            res.extend(states);
            xs = out;
        }
        let mut xs = self.mid_block.forward(&xs, Some(&emb), Some(hidden))?;
        let mut upsample_size = None;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let n = match block {
                Up::Basic(b) => b.resnets.len(),
                Up::CrossAttn(b) => b.upblock.resnets.len(),
            };
            if n > res.len() {
                candle_core::bail!(
                    "the UNet's up blocks take more states than its down blocks made"
                );
            }
            let res_xs = res.split_off(res.len() - n);
            if i < n_blocks - 1 && forward_upsample_size {
                if let Some(last) = res.last() {
                    let (_, _, h, w) = last.dims4()?;
                    upsample_size = Some((h, w));
                }
            }
            xs = match block {
                Up::Basic(b) => b.forward(&xs, &res_xs, Some(&emb), upsample_size)?,
                Up::CrossAttn(b) => {
                    b.forward(&xs, &res_xs, Some(&emb), upsample_size, Some(hidden))?
                }
            };
        }
        let xs = candle_nn::ops::silu(&self.conv_norm_out.forward(&xs)?)?;
        self.conv_out.forward(&xs)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;

    use super::{Conditioning, UNet};

    /// Expected values from diffusers' `get_timestep_embedding` formulas (flip_sin_to_cos,
    /// shift 0: `[cos(t·f_i), sin(t·f_i)]`, `f_i = exp(-ln(10000)·i/half)`), computed in
    /// float64 by a separate Python script, not by this code.
    #[test]
    fn time_ids_embed_as_diffusers_computes_them() {
        let ids =
            Tensor::new(&[[768f32, 1344., 0., 0., 768., 1344.]], &Device::Cpu).expect("tensor op");
        let got = super::embed_time_ids(&ids, 8, true, 0.0, DType::F32)
            .expect("tensor op")
            .to_vec2::<f32>()
            .expect("tensor op");
        let block = [
            0.119120, 0.168216, 0.173105, 0.719302, 0.992880, 0.985750, 0.984903, 0.694698,
            0.824400, -0.772210, 0.642048, 0.224857, -0.566008, 0.635367, 0.766664, 0.974392,
        ];
        let zero = [1., 1., 1., 1., 0., 0., 0., 0.];
        let expected: Vec<f64> = block
            .iter()
            .chain(&zero)
            .chain(&zero)
            .chain(&block)
            .copied()
            .collect();
        assert_eq!(got[0].len(), 48);
        for (i, (g, e)) in got[0].iter().zip(&expected).enumerate() {
            assert!((*g as f64 - e).abs() < 5e-4, "{i}: {g} vs {e}");
        }
        // SDXL's 256 channels, one id of 1024.
        let ids = Tensor::new(&[[1024f32]], &Device::Cpu).expect("tensor op");
        let got = super::embed_time_ids(&ids, 256, true, 0.0, DType::F16)
            .expect("tensor op")
            .to_dtype(DType::F32)
            .expect("tensor op")
            .to_vec2::<f32>()
            .expect("tensor op");
        for (i, e) in [
            (0, 0.987354),
            (1, -0.537610),
            (100, 0.719377),
            (127, 0.993952),
            (128, -0.158533),
            (129, -0.843193),
            (200, -0.501049),
            (255, 0.109818),
        ] {
            assert!(
                (got[0][i] as f64 - e).abs() < 2e-3,
                "{i}: {} vs {e}",
                got[0][i]
            );
        }
    }

    /// Without added conditioning this network is candle's `UNet2DConditionModel`: same
    /// tensors, same output on the tiny SD fixture's weights.
    #[test]
    fn without_added_conditioning_it_is_candles_unet() {
        let dir = tempfile::tempdir().expect("tensor op");
        crate::fixture::write_tiny_model(dir.path()).expect("tensor op");
        let spec = crate::config::unet(&dir.path().join("unet/config.json")).expect("tensor op");
        let file = dir.path().join("unet/diffusion_pytorch_model.safetensors");
        let device = Device::Cpu;
        let vb = || {
            VarBuilder::from_buffered_safetensors(
                std::fs::read(&file).expect("tensor op"),
                DType::F32,
                &device,
            )
            .expect("tensor op")
        };
        let candle =
            UNet2DConditionModel::new(vb(), 4, 4, false, spec.config.clone()).expect("tensor op");
        let ours = UNet::new(vb(), 4, 4, spec.config.clone(), None).expect("tensor op");
        let x = Tensor::randn(0f32, 1., (2, 4, 6, 10), &device).expect("tensor op");
        let hidden = Tensor::randn(0f32, 1., (2, 77, 32), &device).expect("tensor op");
        let a = candle.forward(&x, 501., &hidden).expect("tensor op");
        let b = ours
            .forward(
                &x,
                501.,
                &Conditioning {
                    hidden: &hidden,
                    added: None,
                },
            )
            .expect("tensor op");
        let diff = (a - b)
            .expect("tensor op")
            .abs()
            .expect("tensor op")
            .max_all()
            .expect("tensor op")
            .to_scalar::<f32>()
            .expect("tensor op");
        assert_eq!(diff, 0.0);
        // It refuses added conditioning it has no weights for.
        let pooled = Tensor::zeros((2, 32), DType::F32, &device).expect("tensor op");
        let ids = Tensor::zeros((2, 6), DType::F32, &device).expect("tensor op");
        assert!(ours
            .forward(
                &x,
                1.,
                &Conditioning {
                    hidden: &hidden,
                    added: Some((&pooled, &ids))
                }
            )
            .is_err());
    }
}
