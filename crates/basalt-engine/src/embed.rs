//! Sentence embeddings with candle's BERT: tokenise, run the encoder, mean-pool
//! over the attention mask. Vectors come back un-normalised; callers decide.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use crate::error::EngineError;
use crate::projection::{self, Projection};

#[derive(Debug, Clone)]
pub struct EmbeddingModelConfig {
    /// Holds `model.safetensors`, `config.json` and `tokenizer.json`.
    pub dir: PathBuf,
    /// Longest input in tokens; longer inputs are truncated, as sentence-transformers does.
    pub max_tokens: usize,
    /// Calls that may wait or run at once; one more is refused with [`EngineError::Busy`].
    pub max_queue: usize,
}

/// The result of embedding a batch of texts.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of each input after truncation, special tokens included.
    pub token_counts: Vec<usize>,
}

#[derive(Clone)]
pub struct EmbeddingModel {
    inner: Arc<Inner>,
}

struct Inner {
    model: Mutex<BertModel>,
    tokenizer: Tokenizer,
    /// The same vocabulary without truncation or padding: token spans of whole documents.
    spans_tokenizer: Tokenizer,
    dimensions: usize,
    admission: Arc<Semaphore>,
    max_queue: usize,
    /// Narrowing projections by width, fitted on first use.
    projections: Mutex<HashMap<usize, Arc<Projection>>>,
}

/// Sentences in the calibration set that narrowing projections are fitted on.
const CALIBRATION_SENTENCES: usize = 1024;
const CALIBRATION_WORDS: usize = 8;

/// Texts per forward pass: bounds memory for large Cohere batches.
const FORWARD_BATCH: usize = 32;

impl EmbeddingModel {
    /// Loads weights and tokenizer. Blocking.
    pub fn load(config: &EmbeddingModelConfig) -> Result<Self, EngineError> {
        let load_err = |reason: String| EngineError::Load {
            path: config.dir.display().to_string(),
            reason,
        };
        let read = |name: &str| -> Result<PathBuf, EngineError> {
            let p = config.dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(load_err(format!("{name} is missing")))
            }
        };
        let bert_config: Config = serde_json::from_slice(
            &std::fs::read(read("config.json")?).map_err(|e| load_err(e.to_string()))?,
        )
        .map_err(|e| load_err(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(read("tokenizer.json")?)
            .map_err(|e| load_err(format!("tokenizer.json: {e}")))?;
        let mut spans_tokenizer = tokenizer.clone();
        spans_tokenizer.with_padding(None);
        spans_tokenizer
            .with_truncation(None)
            .map_err(|e| load_err(format!("tokenizer truncation: {e}")))?;
        // The packaged tokenizer pads and truncates to a fixed 128; we want longest-in-batch
        // padding and the model's own sequence limit.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_tokens,
                ..Default::default()
            }))
            .map_err(|e| load_err(format!("tokenizer truncation: {e}")))?;
        let weights = read("model.safetensors")?;
        let model = load_bert(&weights, &bert_config).map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model: Mutex::new(model),
                tokenizer,
                spans_tokenizer,
                dimensions: bert_config.hidden_size,
                admission: Arc::new(Semaphore::new(config.max_queue.max(1))),
                max_queue: config.max_queue.max(1),
                projections: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Width of the model's vectors.
    pub fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    /// Tokens `text` becomes, special tokens included, after truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize, EngineError> {
        let enc = self
            .inner
            .tokenizer
            .encode(text, true)
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        Ok(enc.get_ids().len())
    }

    /// Byte ranges of `text`'s tokens, special tokens left out and nothing truncated:
    /// what chunkers count in.
    pub fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, EngineError> {
        let enc = self
            .inner
            .spans_tokenizer
            .encode(text, false)
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        Ok(enc.get_offsets().to_vec())
    }

    /// Embeds `texts` on a blocking thread, refusing at once when too many calls are waiting.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embedded, EngineError> {
        let permit = Arc::clone(&self.inner.admission)
            .try_acquire_owned()
            .map_err(|_| EngineError::Busy {
                queued: self.inner.max_queue,
            })?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.embed_blocking(&texts)
        })
        .await
        .map_err(|_| EngineError::WorkerGone)?
    }

    /// Fits vectors to `width` (padding or projecting) and optionally L2-normalises them.
    /// Narrowing needs a projection, fitted once per width on the model's own outputs. Blocking.
    pub fn fit(
        &self,
        vectors: Vec<Vec<f32>>,
        width: usize,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let projection = if width < self.inner.dimensions {
            Some(self.inner.projection(width)?)
        } else {
            None
        };
        Ok(vectors
            .into_iter()
            .map(|v| {
                let mut out = projection::fit(&v, width, projection.as_deref());
                if normalize {
                    projection::l2_normalize(&mut out);
                }
                out
            })
            .collect())
    }

    /// Embeds on the calling thread (benchmarks and tests).
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Embedded, EngineError> {
        self.inner.embed_blocking(texts)
    }
}

fn load_bert(weights: &Path, config: &Config) -> candle_core::Result<BertModel> {
    // Safe API: reads the file into memory (90 MB) instead of mapping it.
    let data = std::fs::read(weights)?;
    let vb = VarBuilder::from_buffered_safetensors(data, DType::F32, &Device::Cpu)?;
    BertModel::load(vb, config)
}

impl Inner {
    fn projection(&self, width: usize) -> Result<Arc<Projection>, EngineError> {
        let mut cache = self
            .projections
            .lock()
            .map_err(|_| EngineError::Inference("projection cache lock poisoned".into()))?;
        if let Some(p) = cache.get(&width) {
            return Ok(Arc::clone(p));
        }
        let mut samples = self.embed_blocking(&self.calibration_sentences())?.vectors;
        samples.iter_mut().for_each(|v| projection::l2_normalize(v));
        let p = Projection::principal(&samples, width).ok_or_else(|| {
            EngineError::Inference(format!("cannot project to {width} dimensions"))
        })?;
        let p = Arc::new(p);
        cache.insert(width, Arc::clone(&p));
        Ok(p)
    }

    /// Deterministic word sequences drawn from the tokenizer's own vocabulary: a spread
    /// of topics without shipping a corpus.
    fn calibration_sentences(&self) -> Vec<String> {
        let mut words: Vec<(u32, String)> = self
            .tokenizer
            .get_vocab(false)
            .into_iter()
            .filter(|(w, _)| {
                (3..=12).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())
            })
            .map(|(w, id)| (id, w))
            .collect();
        words.sort();
        if words.is_empty() {
            return vec!["calibration".to_string()];
        }
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..CALIBRATION_SENTENCES)
            .map(|_| {
                (0..CALIBRATION_WORDS)
                    .map(|_| {
                        // xorshift: reproducible across runs and platforms.
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        words[(state % words.len() as u64) as usize].1.as_str()
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn embed_blocking(&self, texts: &[String]) -> Result<Embedded, EngineError> {
        let mut out = Embedded {
            vectors: Vec::with_capacity(texts.len()),
            token_counts: Vec::with_capacity(texts.len()),
        };
        for chunk in texts.chunks(FORWARD_BATCH) {
            self.embed_chunk(chunk, &mut out)
                .map_err(|e| EngineError::Inference(e.to_string()))?;
        }
        Ok(out)
    }

    fn embed_chunk(&self, texts: &[String], out: &mut Embedded) -> candle_core::Result<()> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(candle_core::Error::msg)?;
        let rows = encodings.len();
        let cols = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * cols);
        let mut mask = Vec::with_capacity(rows * cols);
        for enc in &encodings {
            ids.extend_from_slice(enc.get_ids());
            mask.extend_from_slice(enc.get_attention_mask());
            out.token_counts
                .push(enc.get_attention_mask().iter().filter(|&&m| m == 1).count());
        }
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows, cols), &device)?;
        let mask = Tensor::from_vec(mask, (rows, cols), &device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = {
            let model = self
                .model
                .lock()
                .map_err(|_| candle_core::Error::msg("embedding model lock poisoned"))?;
            model.forward(&ids, &type_ids, Some(&mask))?
        };
        // Mean over real tokens only.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let pooled = summed.broadcast_div(&counts)?;
        out.vectors.extend(pooled.to_vec2::<f32>()?);
        Ok(())
    }
}
