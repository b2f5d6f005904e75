//! Sentence embeddings with candle's BERT: tokenise, run the encoder, mean-pool
//! over the attention mask. Vectors come back un-normalised; callers decide.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{Encoding, Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use crate::bert::BertEncoder;
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
    model: BertEncoder,
    /// One-thread pools, one per core (at most [`MAX_LANES`]): a call's forward passes
    /// run side by side, each on one core. On a 2-core VM, two one-core passes gave 1.8x
    /// the throughput of one pass with its products split over both cores, which gave
    /// 1.1x (docs/benchmarks.md).
    lanes: Vec<rayon::ThreadPool>,
    /// Where the next call starts, so that concurrent calls spread over the lanes.
    next_lane: AtomicUsize,
    /// Truncates to the model's limit and does not pad: batches are padded per forward pass.
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
/// Padded tokens (rows x longest row) per forward pass: bounds attention memory.
const FORWARD_TOKENS: usize = 32 * 512;
/// Padding, in tokens, worth a forward pass of its own: a pass costs about what a few
/// dozen tokens do, and each pad token costs what a real one does.
const SPLIT_PADDING: usize = 48;

/// Lanes at most: each pass in flight holds its own activations (up to a few hundred MB
/// for a full pass of long texts).
const MAX_LANES: usize = 8;

/// The elementwise thread pool's size that [`configure_candle_threads`] sets.
const CANDLE_THREADS_VAR: &str = "CANDLE_NUM_THREADS";
/// The matrix products' thread count, which candle looks up on every product.
const RAYON_THREADS_VAR: &str = "RAYON_NUM_THREADS";

/// Sets candle's thread counts once, leaving alone any the operator set. Call it first
/// thing in `main`, before any thread starts (it sets environment variables).
///
/// - Elementwise ops (GELU, softmax, adds) run on the calling thread; matrix products
///   outside the embedding lanes (image generation) still use every core. candle's
///   elementwise pool busy-waits on a barrier, which on a small, shared machine
///   (llama.cpp decoding beside it, or other processes) cost a third of an embedding
///   pass's time while doing nothing (perf); serial elementwise ops measured 1.2–2x
///   faster passes there.
/// - The matrix products' count is fixed at candle's own default, which is also the
///   number of embedding lanes. Unset, candle works it out again for every product by
///   reading /proc/cpuinfo (strace: about 1,300 opens in a few dozen small passes).
pub fn configure_candle_threads() {
    if std::env::var_os(CANDLE_THREADS_VAR).is_none() {
        std::env::set_var(CANDLE_THREADS_VAR, "1");
    }
    if std::env::var_os(RAYON_THREADS_VAR).is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var(RAYON_THREADS_VAR, threads.to_string());
    }
}

/// Halves the passes with the most rows until every lane has one, or no pass has two
/// rows: a call of one full pass would otherwise leave the other cores idle.
pub fn spread_over_lanes(mut passes: Vec<Range<usize>>, lanes: usize) -> Vec<Range<usize>> {
    while passes.len() < lanes {
        let Some((i, widest)) = passes
            .iter()
            .cloned()
            .enumerate()
            .filter(|(_, p)| p.len() > 1)
            .max_by_key(|(_, p)| p.len())
        else {
            break;
        };
        let mid = widest.start + widest.len() / 2;
        passes.splice(i..=i, [widest.start..mid, mid..widest.end]);
    }
    passes
}

/// Splits texts sorted by token count (shortest first) into forward passes: a pass
/// holds at most `max_rows` texts and `max_tokens` padded tokens, and a new one starts
/// where the next text would add more than `split_padding` pad tokens to the pass.
pub fn forward_batches(
    sorted_lengths: &[usize],
    max_rows: usize,
    max_tokens: usize,
    split_padding: usize,
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for k in 1..=sorted_lengths.len() {
        let split = k == sorted_lengths.len() || {
            let rows = k - start;
            let next = sorted_lengths[k];
            rows >= max_rows.max(1)
                || (rows + 1) * next > max_tokens
                || rows * (next - sorted_lengths[k - 1]) > split_padding
        };
        if split {
            out.push(start..k);
            start = k;
        }
    }
    out
}

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
        tokenizer.with_padding(None);
        let mut spans_tokenizer = tokenizer.clone();
        spans_tokenizer
            .with_truncation(None)
            .map_err(|e| load_err(format!("tokenizer truncation: {e}")))?;
        // The packaged tokenizer pads and truncates to a fixed 128; we pad per forward
        // pass and truncate at the model's own sequence limit.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_tokens,
                ..Default::default()
            }))
            .map_err(|e| load_err(format!("tokenizer truncation: {e}")))?;
        let weights = read("model.safetensors")?;
        let model = load_bert(&weights, &bert_config).map_err(|e| load_err(e.to_string()))?;
        let lanes = (0..candle_core::utils::get_num_threads().clamp(1, MAX_LANES))
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("embed-lane-{i}"))
                    .build()
                    .map_err(|e| load_err(format!("embedding thread: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                lanes,
                next_lane: AtomicUsize::new(0),
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

fn load_bert(weights: &Path, config: &Config) -> candle_core::Result<BertEncoder> {
    // Safe API: reads the file into memory (90 MB) instead of mapping it.
    let data = std::fs::read(weights)?;
    let vb = VarBuilder::from_buffered_safetensors(data, DType::F32, &Device::Cpu)?;
    BertEncoder::load(vb, config)
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

    /// Embeds texts in passes of similar length (sorted, split where padding would cost
    /// more than a pass); vectors come back in input order.
    fn embed_blocking(&self, texts: &[String]) -> Result<Embedded, EngineError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        let token_counts: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| token_counts[i]);
        let sorted: Vec<usize> = order.iter().map(|&i| token_counts[i]).collect();
        let passes = spread_over_lanes(
            forward_batches(&sorted, FORWARD_BATCH, FORWARD_TOKENS, SPLIT_PADDING),
            self.lanes.len(),
        );
        let rows: Vec<Vec<&Encoding>> = passes
            .iter()
            .map(|pass| order[pass.clone()].iter().map(|&i| &encodings[i]).collect())
            .collect();
        let mut vectors = vec![Vec::new(); texts.len()];
        for (pass, pooled) in passes.into_iter().zip(self.run_passes(&rows)?) {
            for (&i, v) in order[pass].iter().zip(pooled) {
                vectors[i] = v;
            }
        }
        Ok(Embedded {
            vectors,
            token_counts,
        })
    }

    /// Runs the passes on as many lanes as there are passes, longest first (the last to
    /// finish is then short); pooled vectors come back in pass order. Each pass is its
    /// own job on its lane, so a concurrent call's pass can run between two of ours.
    fn run_passes(&self, passes: &[Vec<&Encoding>]) -> Result<Vec<Vec<Vec<f32>>>, EngineError> {
        let next = AtomicUsize::new(0);
        let work = |lane: &rayon::ThreadPool| {
            let mut done = Vec::new();
            loop {
                let taken = next.fetch_add(1, Ordering::Relaxed);
                let Some(k) = passes.len().checked_sub(taken + 1) else {
                    return Ok(done);
                };
                let pooled = lane
                    .install(|| self.forward(&passes[k]))
                    .map_err(|e| EngineError::Inference(e.to_string()))?;
                done.push((k, pooled));
            }
        };
        let first = self.next_lane.fetch_add(1, Ordering::Relaxed);
        let lanes: Vec<&rayon::ThreadPool> = (0..self.lanes.len().min(passes.len()).max(1))
            .map(|i| &self.lanes[(first + i) % self.lanes.len()])
            .collect();
        let finished = std::thread::scope(|scope| {
            let others: Vec<_> = lanes[1..]
                .iter()
                .map(|&lane| scope.spawn(move || work(lane)))
                .collect();
            let mut finished = vec![work(lanes[0])];
            finished.extend(
                others
                    .into_iter()
                    .map(|h| h.join().unwrap_or(Err(EngineError::WorkerGone))),
            );
            finished
        });
        let mut pooled = vec![Vec::new(); passes.len()];
        for lane in finished {
            for (k, vectors) in lane? {
                pooled[k] = vectors;
            }
        }
        Ok(pooled)
    }

    /// One forward pass over `rows`, padded to the longest; mean-pooled vectors.
    fn forward(&self, rows: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let cols = rows.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = vec![0u32; rows.len() * cols];
        let mut mask = vec![0u32; rows.len() * cols];
        for (r, enc) in rows.iter().enumerate() {
            let n = enc.get_ids().len();
            ids[r * cols..r * cols + n].copy_from_slice(enc.get_ids());
            mask[r * cols..r * cols + n].fill(1);
        }
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows.len(), cols), &device)?;
        let mask = Tensor::from_vec(mask, (rows.len(), cols), &device)?;
        let hidden = self.model.forward(&ids, &mask)?;
        // Mean over real tokens only.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        summed.broadcast_div(&counts)?.to_vec2::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::{forward_batches, spread_over_lanes};

    /// A single pass (clippy reads `vec![a..b]` as a likely slip for a range's items).
    fn one(pass: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
        std::iter::once(pass).collect()
    }

    #[test]
    fn spread_over_lanes_halves_the_widest_pass() {
        assert_eq!(spread_over_lanes(one(0..32), 2), vec![0..16, 16..32]);
        assert_eq!(
            spread_over_lanes(vec![0..4, 4..5], 4),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        // One row cannot be split; enough passes are left alone.
        assert_eq!(spread_over_lanes(one(0..1), 2), one(0..1));
        assert_eq!(spread_over_lanes(vec![0..8, 8..9], 2), vec![0..8, 8..9]);
        assert!(spread_over_lanes(vec![], 2).is_empty());
    }

    #[test]
    fn forward_batches_cap_rows_and_split_on_padding() {
        assert!(forward_batches(&[], 32, 1024, 48).is_empty());
        // Equal lengths: only the row cap splits.
        assert_eq!(
            forward_batches(&[16; 70], 32, 16384, 48),
            vec![0..32, 32..64, 64..70]
        );
        // Four texts of 10 then one of 40: adding it would pad 4 x 30 = 120 > 48.
        assert_eq!(
            forward_batches(&[10, 10, 10, 10, 40], 32, 16384, 48),
            vec![0..4, 4..5]
        );
        // A small step is cheaper than a pass: kept together.
        assert_eq!(
            forward_batches(&[10, 11, 12, 13], 32, 16384, 48),
            vec![0..4]
        );
        // The padded-token cap: three rows of 512 exceed 1024.
        assert_eq!(
            forward_batches(&[512, 512, 512], 32, 1024, 48),
            vec![0..2, 2..3]
        );
        // A single row longer than the cap still runs, alone.
        assert_eq!(forward_batches(&[2000], 32, 1024, 48), vec![0..1]);
    }
}
