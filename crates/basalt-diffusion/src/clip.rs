//! The CLIP text encoder (`CLIPTextModel`), built from `text_encoder/config.json`.
//!
//! candle-transformers' `stable_diffusion::clip::Config` cannot be built from a config file
//! (its fields are private), so this is the same network with a public config; tensor names
//! are those of the diffusers/transformers checkpoints (`text_model.encoder.layers.N...`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

/// `hidden_act` of the text encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    QuickGelu,
    Gelu,
}

/// The fields of `text_encoder/config.json` the network needs.
#[derive(Debug, Clone)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
}

impl Activation {
    fn forward(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
            Activation::Gelu => xs.gelu_erf(),
        }
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, c: &ClipConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            q: linear(d, d, vb.pp("q_proj"))?,
            k: linear(d, d, vb.pp("k_proj"))?,
            v: linear(d, d, vb.pp("v_proj"))?,
            out: linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
            head_dim: d / c.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n, d) = xs.dims3()?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = split((self.q.forward(xs)? * scale)?)?;
        let k = split(self.k.forward(xs)?)?;
        let v = split(self.v.forward(xs)?)?;
        let w = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let w = candle_nn::ops::softmax_last_dim(&w)?;
        let o = w.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.out.forward(&o)
    }
}

struct Layer {
    attn: Attention,
    ln1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ln2: LayerNorm,
    act: Activation,
}

impl Layer {
    fn new(vb: VarBuilder, c: &ClipConfig) -> Result<Self> {
        Ok(Self {
            attn: Attention::new(vb.pp("self_attn"), c)?,
            ln1: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            fc1: linear(c.hidden_size, c.intermediate_size, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(c.intermediate_size, c.hidden_size, vb.pp("mlp").pp("fc2"))?,
            ln2: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            act: c.activation,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = (self.attn.forward(&self.ln1.forward(xs)?, mask)? + xs)?;
        let m = self.fc2.forward(
            &self
                .act
                .forward(&self.fc1.forward(&self.ln2.forward(&h)?)?)?,
        )?;
        m + h
    }
}

/// The text transformer; `forward` gives the last hidden state after the final layer norm
/// (what the SD 1.x/2.x pipelines feed the UNet).
pub struct ClipTextTransformer {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
}

impl ClipTextTransformer {
    pub fn new(vb: VarBuilder, c: &ClipConfig) -> Result<Self> {
        let vb = vb.pp("text_model");
        let emb = vb.pp("embeddings");
        let token_embedding = embedding(c.vocab_size, c.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding = embedding(
            c.max_position_embeddings,
            c.hidden_size,
            emb.pp("position_embedding"),
        )?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::new(vb.pp("encoder").pp("layers").pp(i.to_string()), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm: layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
        })
    }

    /// `ids`: (batch, seq) u32 token ids.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, last) = self.hidden_states(ids)?;
        self.final_layer_norm.forward(&last)
    }

    /// What SDXL's pipelines take (transformers' `hidden_states[-2]` and `last_hidden_state`):
    /// the penultimate layer's output, with no final layer norm, and the last layer's output
    /// after the final layer norm (the pooled embedding is read from it).
    pub fn forward_penultimate(&self, ids: &Tensor) -> Result<(Tensor, Tensor)> {
        let (penultimate, last) = self.hidden_states(ids)?;
        Ok((penultimate, self.final_layer_norm.forward(&last)?))
    }

    /// The input of the last layer (the embeddings when there is one layer) and its output.
    fn hidden_states(&self, ids: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, n) = ids.dims2()?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, n as u32, device)?;
        let xs = self
            .token_embedding
            .forward(ids)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = causal_mask(n, xs.dtype(), device)?;
        let mut previous = xs.clone();
        let mut xs = xs;
        for layer in &self.layers {
            previous = xs;
            xs = layer.forward(&previous, &mask)?;
        }
        Ok((previous, xs))
    }
}

/// `CLIPTextModelWithProjection`'s pooled output: the final-normed hidden state (1, seq,
/// hidden) at position `eos`, times `text_projection` (no bias) → (1, projection_dim).
pub fn pooled(last: &Tensor, eos: usize, projection: &Linear) -> Result<Tensor> {
    projection.forward(&last.narrow(1, eos, 1)?.squeeze(1)?)
}

/// Where the pooled embedding is read: transformers takes `argmax(input_ids)`, the first
/// end-of-text token in CLIP's vocabulary (whose `<|endoftext|>` has the largest id). This
/// looks for the first `eos` id itself, which is the same for CLIP's vocabulary and also
/// right for vocabularies where end-of-text is not the largest id (the tests' tiny one);
/// without one it takes the last position.
pub fn eos_position(ids: &[u32], eos: u32) -> usize {
    ids.iter()
        .position(|&id| id == eos)
        .unwrap_or(ids.len().saturating_sub(1))
}

fn causal_mask(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (n, n), device)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn the_pooled_embedding_is_read_at_the_first_end_of_text() {
        // transformers' argmax over CLIP ids (49407 = <|endoftext|>, the largest id), with
        // SDXL's second tokenizer padding with "!" (0) and the first with <|endoftext|>.
        let argmax = |ids: &[u32]| {
            let max = ids.iter().max().copied().unwrap_or(0);
            ids.iter().position(|&x| x == max).unwrap_or(0)
        };
        for ids in [
            vec![49406, 320, 2368, 49407, 0, 0, 0],
            vec![49406, 320, 2368, 530, 49407, 49407, 49407],
            vec![49406, 49407, 0],
        ] {
            assert_eq!(super::eos_position(&ids, 49407), argmax(&ids), "{ids:?}");
        }
        // The tiny vocabulary's end-of-text is 1, not the largest id.
        assert_eq!(super::eos_position(&[0, 7, 9, 1, 42, 42], 1), 3);
        assert_eq!(super::eos_position(&[0, 7, 9], 1), 2);

        // The row at that position, through the projection (here a 2→1 sum, no bias).
        let last =
            Tensor::new(&[[[1f32, 2.], [3., 4.], [5., 6.]]], &Device::Cpu).expect("tensor op");
        let projection = candle_nn::Linear::new(
            Tensor::new(&[[1f32, 1.]], &Device::Cpu).expect("tensor op"),
            None,
        );
        let pooled = super::pooled(&last, 1, &projection).expect("tensor op");
        assert_eq!(
            pooled.to_vec2::<f32>().expect("tensor op"),
            vec![vec![7f32]]
        );
    }
}
