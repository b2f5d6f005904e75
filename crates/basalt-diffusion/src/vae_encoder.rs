//! The VAE's encoder, for image-to-image. candle's `AutoEncoderKL::encode` samples its
//! latent distribution with an unseeded generator, so the same request would give a
//! different image each time; this builds the same network from the same tensors
//! (`encoder.*`, `quant_conv`) and samples with the request's seed instead.

use candle_core::{Module, Result, Tensor};
use candle_nn as nn;
use candle_transformers::models::stable_diffusion::{
    unet_2d_blocks::{
        DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
    },
    vae::AutoEncoderKLConfig,
};

pub(crate) struct VaeEncoder {
    conv_in: nn::Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2d,
    quant_conv: Option<nn::Conv2d>,
}

/// The latent distribution of one image: `mean + std * noise`.
pub(crate) struct Latent {
    pub mean: Tensor,
    pub std: Tensor,
}

impl VaeEncoder {
    /// `vb` is the VAE's root (the one `AutoEncoderKL::new` takes).
    pub(crate) fn new(
        vb: nn::VarBuilder,
        in_channels: usize,
        c: &AutoEncoderKLConfig,
    ) -> Result<Self> {
        let vs = vb.pp("encoder");
        let padded = nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let channels = &c.block_out_channels;
        let conv_in = nn::conv2d(in_channels, channels[0], 3, padded, vs.pp("conv_in"))?;
        let mut down_blocks = Vec::with_capacity(channels.len());
        for (i, &out) in channels.iter().enumerate() {
            let input = if i > 0 { channels[i - 1] } else { channels[0] };
            let cfg = DownEncoderBlock2DConfig {
                num_layers: c.layers_per_block,
                resnet_eps: 1e-6,
                resnet_groups: c.norm_num_groups,
                add_downsample: i + 1 < channels.len(),
                downsample_padding: 0,
                ..Default::default()
            };
            down_blocks.push(DownEncoderBlock2D::new(
                vs.pp("down_blocks").pp(i.to_string()),
                input,
                out,
                cfg,
            )?);
        }
        let last = channels[channels.len() - 1];
        let mid_cfg = UNetMidBlock2DConfig {
            resnet_eps: 1e-6,
            output_scale_factor: 1.,
            attn_num_head_channels: None,
            resnet_groups: Some(c.norm_num_groups),
            ..Default::default()
        };
        let mid_block = UNetMidBlock2D::new(vs.pp("mid_block"), last, None, mid_cfg)?;
        let conv_norm_out = nn::group_norm(c.norm_num_groups, last, 1e-6, vs.pp("conv_norm_out"))?;
        let conv_out = nn::conv2d(last, 2 * c.latent_channels, 3, padded, vs.pp("conv_out"))?;
        let quant_conv = if c.use_quant_conv {
            Some(nn::conv2d(
                2 * c.latent_channels,
                2 * c.latent_channels,
                1,
                Default::default(),
                vb.pp("quant_conv"),
            )?)
        } else {
            None
        };
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block,
            conv_norm_out,
            conv_out,
            quant_conv,
        })
    }

    /// `pixels` is (1, 3, h, w) in [-1, 1].
    pub(crate) fn encode(&self, pixels: &Tensor) -> Result<Latent> {
        let mut xs = self.conv_in.forward(pixels)?;
        for block in &self.down_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.mid_block.forward(&xs, None)?;
        let xs = nn::ops::silu(&self.conv_norm_out.forward(&xs)?)?;
        let mut xs = self.conv_out.forward(&xs)?;
        if let Some(q) = &self.quant_conv {
            xs = q.forward(&xs)?;
        }
        let parts = xs.chunk(2, 1)?;
        // diffusers clamps the log-variance to [-30, 20] before taking the deviation.
        let std = (parts[1].clamp(-30f32, 20f32)? * 0.5)?.exp()?;
        Ok(Latent {
            mean: parts[0].clone(),
            std,
        })
    }
}
