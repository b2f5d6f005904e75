//! The BERT encoder behind sentence embeddings (all-MiniLM-L6-v2 and models like it).
//!
//! The layers, weight names and order of operations are candle-transformers' `BertModel`,
//! with two changes that profiles of embedding jobs asked for (perf, 2026-12-03):
//! - GELU is one elementwise pass that the compiler vectorises for the CPU it runs on.
//!   candle computes it with libm's scalar `erff`, which took 13% of a job's CPU time on a
//!   thread that leaves the other core idle.
//! - Query, key and value come from one fused product instead of three.
//!
//! The vectors match candle's `BertModel` to within float rounding (tests/embed.rs).

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

/// A BERT encoder: token, position and token-type embeddings, then the layers.
pub struct BertEncoder {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    /// Row 0 of the token-type table: every text here is a single segment.
    token_type_zero: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
}

struct Layer {
    /// Query, key and value rows stacked: one product gives all three.
    qkv: Linear,
    heads: usize,
    head_size: usize,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl BertEncoder {
    /// Loads the weights under `vb` (optionally under a `bert.` prefix). Only the exact
    /// GELU is supported: it is what BERT sentence encoders use.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        if config.hidden_act != HiddenAct::Gelu {
            candle_core::bail!(
                "hidden_act {:?} is not supported; BERT sentence encoders use gelu",
                config.hidden_act
            );
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} does not split into {} attention heads",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let emb = vb.pp("embeddings");
        let token_types = embedding(
            config.type_vocab_size,
            hidden,
            emb.pp("token_type_embeddings"),
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: embedding(config.vocab_size, hidden, emb.pp("word_embeddings"))?,
            position_embeddings: embedding(
                config.max_position_embeddings,
                hidden,
                emb.pp("position_embeddings"),
            )?,
            token_type_zero: token_types.embeddings().get(0)?,
            embeddings_norm: layer_norm(hidden, eps, emb.pp("LayerNorm"))?,
            layers,
        })
    }

    /// Hidden states `(rows, cols, hidden)` for token ids `(rows, cols)`; `mask` is 1 for
    /// real tokens and 0 for padding, which no token attends to.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, cols) = ids.dims2()?;
        let positions = Tensor::arange(0u32, cols as u32, ids.device())?;
        let embedded = self
            .word_embeddings
            .forward(ids)?
            .broadcast_add(&self.token_type_zero)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        let mut hidden = self.embeddings_norm.forward(&embedded)?;
        // (rows, 1, 1, cols): 0 where attended, the float minimum where padded.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(1)?.unsqueeze(1)?;
        let mask = ((1.0 - mask)? * f64::from(f32::MIN))?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &mask)?;
        }
        Ok(hidden)
    }
}

impl Layer {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let attention = vb.pp("attention");
        let (mut weights, mut biases) = (Vec::with_capacity(3), Vec::with_capacity(3));
        for name in ["query", "key", "value"] {
            let vb = attention.pp("self").pp(name);
            weights.push(vb.get((hidden, hidden), "weight")?);
            biases.push(vb.get(hidden, "bias")?);
        }
        let qkv = Linear::new(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?));
        Ok(Self {
            qkv,
            heads: config.num_attention_heads,
            head_size: hidden / config.num_attention_heads,
            attention_output: linear(hidden, hidden, attention.pp("output.dense"))?,
            attention_norm: layer_norm(hidden, eps, attention.pp("output.LayerNorm"))?,
            intermediate: linear(
                hidden,
                config.intermediate_size,
                vb.pp("intermediate.dense"),
            )?,
            output: linear(config.intermediate_size, hidden, vb.pp("output.dense"))?,
            output_norm: layer_norm(hidden, eps, vb.pp("output.LayerNorm"))?,
        })
    }

    fn forward(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (rows, cols, _) = hidden.dims3()?;
        // (3, rows, heads, cols, head_size)
        let qkv = self
            .qkv
            .forward(hidden)?
            .reshape((rows, cols, 3, self.heads, self.head_size))?
            .permute((2, 0, 3, 1, 4))?;
        let query = qkv.get(0)?.contiguous()?;
        let key = qkv.get(1)?.contiguous()?;
        let value = qkv.get(2)?.contiguous()?;
        let scores = (query.matmul(&key.t()?)? / (self.head_size as f64).sqrt())?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask)?)?;
        let context = probs
            .matmul(&value)?
            .transpose(1, 2)?
            .contiguous()?
            .flatten_from(D::Minus2)?;
        let attended = self
            .attention_norm
            .forward(&(self.attention_output.forward(&context)? + hidden)?)?;
        let activated = self.intermediate.forward(&attended)?;
        activated.inplace_op1(&GeluErf)?;
        self.output_norm
            .forward(&(self.output.forward(&activated)? + attended)?)
    }
}

/// GELU with the exact (erf) form, as BERT defines it, applied in place: the product it
/// follows made a fresh tensor that nothing else holds, so no copy is needed.
struct GeluErf;

impl InplaceOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("gelu-erf: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu-erf: the input must be contiguous");
        };
        gelu_erf_in_place(&mut data[start..end]);
        Ok(())
    }
}

/// `x * (1 + erf(x / sqrt 2)) / 2` for each value, in place, compiled for the widest
/// vector unit the CPU has (pulp picks it at run time).
pub fn gelu_erf_in_place(values: &mut [f32]) {
    pulp::Arch::new().dispatch(
        #[inline(always)]
        || {
            for x in values.iter_mut() {
                *x = gelu_erf(*x);
            }
        },
    );
}

/// Abramowitz and Stegun 7.1.28: `erf(a) = 1 - (1 + a1 a + ... + a6 a^6)^-16` for a >= 0,
/// absolute error under 3e-7 (under 2e-6 evaluated in f32). No branch and no libm call,
/// so a loop of it vectorises.
const ERF_COEFFICIENTS: [f32; 6] = [
    0.070_523_08,
    0.042_282_01,
    0.009_270_527,
    0.000_152_014_3,
    0.000_276_567_2,
    0.000_043_063_8,
];

#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let [a1, a2, a3, a4, a5, a6] = ERF_COEFFICIENTS;
    let mut p = 1.0 + a * (a1 + a * (a2 + a * (a3 + a * (a4 + a * (a5 + a * a6)))));
    for _ in 0..4 {
        p *= p;
    }
    // erf(|z|) is 1 - 1/p; at large |z| p overflows to infinity and erf is 1.
    let erf = (1.0 - 1.0 / p).copysign(z);
    0.5 * x * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu_reference(x: f32) -> f32 {
        (candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x
    }

    #[test]
    fn gelu_matches_the_exact_form_within_float_noise() {
        let mut values: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 * 2.5e-4).collect();
        values.extend([-1e30, -80.0, -12.0, 12.0, 80.0, 1e30, 0.0, -0.0]);
        let mut computed = values.clone();
        gelu_erf_in_place(&mut computed);
        for (x, got) in values.iter().zip(&computed) {
            let want = gelu_reference(*x);
            // erf's error under 2e-6, scaled by x / 2, plus rounding.
            let tolerance = 1.25e-6 * x.abs().max(1.0);
            assert!(
                (got - want).abs() <= tolerance,
                "gelu({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn gelu_keeps_nan_and_saturates_without_nan() {
        let mut values = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e38];
        gelu_erf_in_place(&mut values);
        assert!(values[0].is_nan());
        assert_eq!(values[1], f32::INFINITY);
        assert_eq!(values[3], 1e38);
    }
}
