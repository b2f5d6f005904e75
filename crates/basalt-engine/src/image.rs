//! Image generation: a Stable Diffusion pipeline behind the same bounded admission as the
//! other models. One image request runs at a time per model (each already uses every core);
//! the rest wait in the queue, and past `max_queue` waiting they are refused at once.
//! Dropping the future of a request (the client went away) cancels it before its next step.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use basalt_diffusion::{DiffusionError, Pipeline};
use tokio::sync::Semaphore;

use crate::EngineError;

pub use basalt_diffusion::{
    decode_image, Defaults as ImageDefaults, Image, InitImage, Request as ImageRequest, Sampler,
    MAX_SAMPLES, MAX_SIDE, MAX_STEPS,
};

#[derive(Debug, Clone)]
pub struct ImageModelConfig {
    /// A diffusers folder.
    pub dir: PathBuf,
    pub max_queue: usize,
}

/// A loaded image model; clones share it.
#[derive(Clone)]
pub struct ImageModel {
    inner: Arc<Inner>,
}

struct Inner {
    /// Serialises generations: two at once would only split the same cores.
    pipeline: Mutex<Pipeline>,
    native_size: usize,
    size_multiple: usize,
    defaults: ImageDefaults,
    admission: Arc<Semaphore>,
    max_queue: usize,
}

/// Sets the cancel flag when the request's future is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl From<DiffusionError> for EngineError {
    fn from(e: DiffusionError) -> Self {
        match e {
            DiffusionError::InvalidRequest(m) => EngineError::InvalidRequest(m),
            DiffusionError::Candle(e) => EngineError::Inference(e.to_string()),
            DiffusionError::Cancelled => EngineError::Inference("cancelled".into()),
            other => EngineError::Load {
                path: String::new(),
                reason: other.to_string(),
            },
        }
    }
}

impl ImageModel {
    /// Loads and checks the folder (every file and tensor shape). Blocking.
    pub fn load(config: &ImageModelConfig) -> Result<Self, EngineError> {
        let pipeline = Pipeline::load(&config.dir).map_err(|e| EngineError::Load {
            path: config.dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                native_size: pipeline.native_size(),
                size_multiple: pipeline.size_multiple(),
                defaults: pipeline.defaults(),
                pipeline: Mutex::new(pipeline),
                admission: Arc::new(Semaphore::new(config.max_queue.max(1))),
                max_queue: config.max_queue.max(1),
            }),
        })
    }

    /// The side in pixels the model was trained at.
    pub fn native_size(&self) -> usize {
        self.inner.native_size
    }

    /// The sampler and step regime the model's folder names (SDXL-Turbo: few steps).
    pub fn defaults(&self) -> ImageDefaults {
        self.inner.defaults
    }

    /// Width and height must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        self.inner.size_multiple
    }

    /// Generates on a blocking thread, logging progress every tenth of the steps. The work
    /// stops at the next step once the returned future is dropped.
    pub async fn generate(&self, request: ImageRequest) -> Result<Vec<Image>, EngineError> {
        let permit = Arc::clone(&self.inner.admission)
            .try_acquire_owned()
            .map_err(|_| EngineError::Busy {
                queued: self.inner.max_queue,
            })?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancelled));
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pipeline = inner.pipeline.lock().map_err(|_| {
                EngineError::Inference("the image pipeline lock is poisoned".into())
            })?;
            if cancelled.load(Ordering::Relaxed) {
                return Err(EngineError::Inference("cancelled".into()));
            }
            let every = (request.steps * request.samples / 10).max(1);
            let progress = |done: usize, total: usize| {
                if done.is_multiple_of(every) || done == total {
                    tracing::info!(step = done, of = total, "image generation");
                }
            };
            let cancel = || cancelled.load(Ordering::Relaxed);
            let images = pipeline.generate(&request, &progress, &cancel);
            if cancel() {
                tracing::info!("image generation cancelled: the client went away");
            }
            Ok(images?)
        })
        .await
        .map_err(|_| EngineError::WorkerGone)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (tempfile::TempDir, ImageModel) {
        let dir = tempfile::tempdir().expect("tempdir");
        basalt_diffusion::fixture::write_tiny_model(dir.path()).expect("fixture");
        let model = ImageModel::load(&ImageModelConfig {
            dir: dir.path().to_path_buf(),
            max_queue: 1,
        })
        .expect("load");
        (dir, model)
    }

    fn request(steps: usize) -> ImageRequest {
        ImageRequest {
            prompt: "a red cat".into(),
            negative_prompt: String::new(),
            width: 64,
            height: 64,
            steps,
            cfg_scale: 7.0,
            seed: 3,
            samples: 1,
            init: None,
            sampler: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn generates_and_refuses_past_the_queue() {
        let (_dir, model) = tiny();
        let images = model.generate(request(2)).await.expect("generate");
        assert_eq!(images.len(), 1);
        assert_eq!(
            basalt_diffusion::png::dimensions(&images[0].png),
            Some((64, 64))
        );
        // With a queue of one, a second request while the first runs is refused.
        let long = model.clone();
        let first = tokio::spawn(async move { long.generate(request(150)).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let second = model.generate(request(1)).await;
        assert!(
            matches!(second, Err(EngineError::Busy { .. })),
            "{second:?}"
        );
        first.abort();
        let _ = first.await;
        // The aborted request's future was dropped: generation stops and the slot frees.
        let mut freed = false;
        for _ in 0..100 {
            if model.generate(request(1)).await.is_ok() {
                freed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(freed, "the cancelled generation did not give its slot back");
    }

    #[tokio::test]
    async fn an_invalid_request_is_an_invalid_request() {
        let (_dir, model) = tiny();
        let err = model
            .generate(ImageRequest {
                width: 60,
                ..request(1)
            })
            .await
            .expect_err("60 is not a multiple of 32");
        assert!(matches!(err, EngineError::InvalidRequest(_)), "{err:?}");
    }
}
