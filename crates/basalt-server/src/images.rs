//! InvokeModel for image models (Stability SDXL, Stable Image / SD3, Titan Image and Nova
//! Canvas bodies): the guardrail checks the prompt, the on-demand request quota is charged,
//! and the diffusion model generates on the engine's blocking pool. A client that goes
//! away cancels the generation, because dropping this handler's future cancels it.

use std::time::Instant;

use axum::response::Response;
use basalt_engine::{ImageRequest, InitImage, Sampler};
use basalt_proto::BedrockError;
use basalt_providers::image_generation::{
    self, GeneratedImage, ImageInvocation, ImageSampler, ModelDefaults,
};
use basalt_providers::Prompt;
use rand::Rng;

use crate::edge::engine_error;
use crate::guarded::{self, Guard};
use crate::loaded::Loaded;
use crate::quotas::Charge;
use crate::runtime::{insert_number, model_timeout, Resolved};
use crate::AppState;

/// Init images' sides must be multiples of this.
const INIT_SIDE_MULTIPLE: usize = 64;

/// Bedrock's largest image seed.
const MAX_SEED: u64 = 4_294_967_295;

pub(crate) async fn invoke(
    state: &AppState,
    resolved: &Resolved,
    mut inv: ImageInvocation,
    mut guard: Option<Guard>,
    started: Instant,
) -> Result<Response, BedrockError> {
    let Loaded::Image(model) = &resolved.model else {
        return Err(BedrockError::internal(
            "the catalog maps an image body to a model that is not an image model",
        ));
    };
    let seed = inv
        .seed
        .unwrap_or_else(|| rand::rng().random_range(1..=MAX_SEED));
    let input_check = match &mut guard {
        Some(g) => {
            let mut prompt = Prompt::Raw(inv.prompt.clone());
            let check = g.check_prompt(state, &mut prompt, Vec::new()).await?;
            if let Prompt::Raw(masked) = prompt {
                inv.prompt = masked;
            }
            Some(check)
        }
        None => None,
    };
    let body = match (&guard, &input_check) {
        (Some(_), Some(input)) if input.blocked => {
            image_generation::filtered(inv.family, seed, &guarded::replacement(input))
        }
        _ => {
            let charge = if resolved.provision.is_some() {
                Charge::free()
            } else {
                state
                    .quotas
                    .admit(&resolved.account, &resolved.entry, 0, 0)?
            };
            // What the body left out comes from the model's folder (SDXL-Turbo: few steps,
            // no guidance, Euler ancestral).
            let defaults = model.defaults();
            let settled = inv.settle(ModelDefaults {
                sampler: image_sampler(defaults.sampler),
                few_step: defaults.few_step,
            });
            let init = match inv.init_image.take() {
                Some((bytes, strength)) => Some(init_image(bytes, strength).await?),
                None => None,
            };
            let (width, height) = match &init {
                Some(i) => (i.width as u32, i.height as u32),
                None => (inv.width, inv.height),
            };
            let request = ImageRequest {
                prompt: inv.prompt.clone(),
                negative_prompt: inv.negative_prompt.clone(),
                width: width as usize,
                height: height as usize,
                steps: settled.steps as usize,
                cfg_scale: f64::from(settled.cfg_scale),
                seed,
                samples: inv.samples as usize,
                init,
                sampler: match settled.sampler {
                    ImageSampler::Ddim => Sampler::Ddim,
                    ImageSampler::Euler => Sampler::Euler,
                    ImageSampler::EulerAncestral => Sampler::EulerAncestral,
                },
            };
            tracing::info!(
                model = %resolved.entry.model_id,
                width,
                height,
                image_to_image = request.init.is_some(),
                steps = settled.steps,
                cfg_scale = settled.cfg_scale,
                sampler = ?settled.sampler,
                samples = inv.samples,
                "image generation started"
            );
            let generated = match state.model_timeout {
                Some(limit) => tokio::time::timeout(limit, model.generate(request))
                    .await
                    .map_err(|_| model_timeout(limit))?,
                None => model.generate(request).await,
            }
            .map_err(engine_error)?;
            charge.settle(0);
            let images: Vec<GeneratedImage> = generated
                .into_iter()
                .map(|i| GeneratedImage {
                    png: i.png,
                    seed: i.seed,
                })
                .collect();
            image_generation::response(inv.family, &images)
        }
    };
    let elapsed = started.elapsed().as_millis() as u64;
    state
        .metrics
        .generation(&resolved.entry.model_id, 0, 0, None, elapsed);
    let mut resp = guarded::invoke_response(guard.as_ref(), input_check.as_ref(), &[], body);
    insert_number(&mut resp, "x-amzn-bedrock-invocation-latency", elapsed);
    Ok(resp)
}

fn image_sampler(s: Sampler) -> ImageSampler {
    match s {
        Sampler::Ddim => ImageSampler::Ddim,
        Sampler::Euler => ImageSampler::Euler,
        Sampler::EulerAncestral => ImageSampler::EulerAncestral,
    }
}

/// Decodes an init image off the reactor. Bedrock wants its sides in multiples of 64.
async fn init_image(bytes: Vec<u8>, strength: f32) -> Result<InitImage, BedrockError> {
    let mut init = tokio::task::spawn_blocking(move || basalt_engine::decode_image(&bytes))
        .await
        .map_err(|_| BedrockError::internal("decoding the init image stopped unexpectedly"))?
        .map_err(|e| engine_error(e.into()))?;
    if init.width % INIT_SIDE_MULTIPLE != 0 || init.height % INIT_SIDE_MULTIPLE != 0 {
        return Err(BedrockError::validation(format!(
            "The init image is {}x{}; its width and height must be multiples of {INIT_SIDE_MULTIPLE}.",
            init.width, init.height
        )));
    }
    init.strength = f64::from(strength);
    Ok(init)
}
