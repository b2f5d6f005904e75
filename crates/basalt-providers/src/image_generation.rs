//! Image-generation bodies: Stability SDXL v1 (`text_prompts`), the Stable Image
//! Core / Ultra and SD3 family (`prompt`, `aspect_ratio`), and Titan Image
//! Generator / Nova Canvas (`taskType` TEXT_IMAGE), each parsed into one
//! [`ImageInvocation`] and its response shaped back.

use basalt_proto::{from_json, BedrockError};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// What the diffusion engine is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInvocation {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: Steps,
    /// `None`: the body left it out; [`ImageInvocation::settle`] picks the model's.
    pub cfg_scale: Option<f32>,
    /// `None`: pick one at random, and report it.
    pub seed: Option<u64>,
    pub samples: u32,
    /// Image-to-image: the init image's bytes (PNG or JPEG), and the share of the
    /// steps that redraw it (diffusers' `strength`: 0 keeps it, 1 ignores it).
    pub init_image: Option<(Vec<u8>, f32)>,
    /// `None`: the body named none; the model's folder decides.
    pub sampler: Option<ImageSampler>,
    /// The responder the reply is shaped by.
    pub family: ImageFamily,
}

/// The denoising steps a body asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steps {
    /// An explicit count (the SDXL body's `steps`), already checked against the body's range.
    Given(u32),
    /// The model's usual count: the body has no steps field, or left it out.
    Usual,
    /// More than usual (Titan's `quality: "premium"`).
    Premium,
}

/// What the loaded model's folder says about running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelDefaults {
    /// The sampler its scheduler config names.
    pub sampler: ImageSampler,
    /// A few-step distilled model (SD-Turbo, SDXL-Turbo): trained for 1 to 4 steps without
    /// guidance.
    pub few_step: bool,
}

/// The steps, guidance and sampler a request runs with, once the model's defaults fill in
/// what the body left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settled {
    pub steps: u32,
    pub cfg_scale: f32,
    pub sampler: ImageSampler,
}

/// Steps a few-step model runs when the body leaves them to the model: 1 for text-to-image
/// and 2 for image-to-image (as SDXL-Turbo's model card runs them; with 2 steps a strength of
/// 0.5 runs the second from half noise), 4 for "premium". The SDXL body keeps Bedrock's
/// range of 10 to 50, so there the fewest it allows, 10.
const FEW_STEP_TEXT: u32 = 1;
const FEW_STEP_IMAGE: u32 = 2;
const FEW_STEP_PREMIUM: u32 = 4;
const SDXL_MIN_STEPS: u32 = 10;

impl ImageInvocation {
    /// Fills in what the body left to the model. Explicit values always win; they were
    /// checked against each body's own limits when it was parsed.
    pub fn settle(&self, model: ModelDefaults) -> Settled {
        let steps = match (self.steps, model.few_step) {
            (Steps::Given(n), _) => n,
            (Steps::Usual, false) => 30,
            (Steps::Premium, false) => 50,
            (Steps::Usual, true) if self.family == ImageFamily::StabilitySdxl => SDXL_MIN_STEPS,
            (Steps::Usual, true) if self.init_image.is_some() => FEW_STEP_IMAGE,
            (Steps::Usual, true) => FEW_STEP_TEXT,
            (Steps::Premium, true) => FEW_STEP_PREMIUM,
        };
        // Few-step models are distilled without classifier-free guidance: Bedrock's default
        // scales would over-saturate them, so a body that names none gets none.
        let cfg_scale = self
            .cfg_scale
            .unwrap_or(match (model.few_step, self.family) {
                (true, _) => 0.0,
                (false, ImageFamily::TitanImage) => 8.0,
                (false, _) => 7.0,
            });
        Settled {
            steps,
            cfg_scale,
            sampler: self.sampler.unwrap_or(model.sampler),
        }
    }
}

fn decode_base64(member: &str, data: &str) -> Result<Vec<u8>, BedrockError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| BedrockError::validation(format!("{member}: not valid base64 ({e}).")))
}

fn unit_interval(member: &str, value: f32) -> Result<f32, BedrockError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            member,
            value,
            "Member must have value between 0 and 1",
        ))
    }
}

/// Stability's `sampler` values this server runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageSampler {
    #[default]
    Ddim,
    Euler,
    EulerAncestral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFamily {
    StabilitySdxl,
    StableImage,
    TitanImage,
}

/// One generated image, as the engine hands it back.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    pub png: Vec<u8>,
    pub seed: u64,
}

const SDXL_SIZES: [(u32, u32); 9] = [
    (1024, 1024),
    (1152, 896),
    (1216, 832),
    (1344, 768),
    (1536, 640),
    (640, 1536),
    (768, 1344),
    (832, 1216),
    (896, 1152),
];
const MAX_SEED: u64 = 4_294_967_295;
const STYLE_PRESETS: [&str; 17] = [
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
];

fn invalid(member: &str, value: impl std::fmt::Display, rule: &str) -> BedrockError {
    BedrockError::constraint(member, value, rule)
}

fn seed(value: Option<u64>, member: &str) -> Result<Option<u64>, BedrockError> {
    match value {
        None | Some(0) => Ok(None),
        Some(s) if s <= MAX_SEED => Ok(Some(s)),
        Some(s) => Err(invalid(
            member,
            s,
            "Member must have value between 0 and 4294967295",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextPrompt {
    text: String,
    weight: Option<f32>,
}

#[derive(Debug, Deserialize)]
struct SdxlBody {
    text_prompts: Vec<TextPrompt>,
    height: Option<u32>,
    width: Option<u32>,
    cfg_scale: Option<f32>,
    seed: Option<u64>,
    steps: Option<u32>,
    samples: Option<u32>,
    style_preset: Option<String>,
    sampler: Option<String>,
    init_image: Option<String>,
    init_image_mode: Option<String>,
    image_strength: Option<f32>,
    step_schedule_start: Option<f32>,
    step_schedule_end: Option<f32>,
}

/// Stability SDXL v1: weighted `text_prompts`, a negative weight being the
/// negative prompt.
pub fn parse_sdxl(body: &[u8]) -> Result<ImageInvocation, BedrockError> {
    let b: SdxlBody = from_json(body)?;
    if b.text_prompts.is_empty() {
        return Err(invalid(
            "text_prompts",
            "[]",
            "Member must have at least 1 prompt",
        ));
    }
    let mut positive = Vec::new();
    let mut negative = Vec::new();
    for (i, p) in b.text_prompts.iter().enumerate() {
        if p.text.chars().count() > 2000 {
            return Err(invalid(
                &format!("text_prompts[{i}].text"),
                "…",
                "Member must have length less than or equal to 2000",
            ));
        }
        if p.weight.unwrap_or(1.0) < 0.0 {
            negative.push(p.text.trim());
        } else {
            positive.push(p.text.trim());
        }
    }
    let prompt = positive
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    if prompt.is_empty() {
        return Err(BedrockError::validation(
            "text_prompts: at least one prompt with a non-negative weight and some text is required.",
        ));
    }
    let (width, height) = (b.width.unwrap_or(1024), b.height.unwrap_or(1024));
    // Image-to-image takes its size from the init image.
    if b.init_image.is_none() && !SDXL_SIZES.contains(&(width, height)) {
        return Err(BedrockError::validation(format!(
            "width and height {width}x{height} are not a size SDXL allows; use one of 1024x1024, 1152x896, \
             1216x832, 1344x768, 1536x640, 640x1536, 768x1344, 832x1216 or 896x1152."
        )));
    }
    if let Some(cfg_scale) = b.cfg_scale {
        if !(0.0..=35.0).contains(&cfg_scale) {
            return Err(invalid(
                "cfg_scale",
                cfg_scale,
                "Member must have value between 0 and 35",
            ));
        }
    }
    if let Some(steps) = b.steps {
        if !(10..=50).contains(&steps) {
            return Err(invalid(
                "steps",
                steps,
                "Member must have value between 10 and 50",
            ));
        }
    }
    if let Some(samples) = b.samples {
        if samples != 1 {
            return Err(invalid("samples", samples, "Only 1 sample is supported"));
        }
    }
    if let Some(style) = &b.style_preset {
        if !STYLE_PRESETS.contains(&style.as_str()) {
            return Err(invalid(
                "style_preset",
                style,
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    STYLE_PRESETS.join(", ")
                ),
            ));
        }
    }
    let sampler = match b.sampler.as_deref() {
        None => None,
        Some("DDIM") => Some(ImageSampler::Ddim),
        Some("K_EULER") => Some(ImageSampler::Euler),
        Some("K_EULER_ANCESTRAL") => Some(ImageSampler::EulerAncestral),
        Some(other) => {
            return Err(BedrockError::validation(format!(
                "sampler {other}: this server runs DDIM, K_EULER and K_EULER_ANCESTRAL; omit sampler for the one the model's scheduler config names."
            )))
        }
    };
    let init_image = match &b.init_image {
        None => None,
        Some(data) => {
            // Stability's image_strength is how much of the init image stays (near 1 =
            // close to it); the share of steps that run is the rest.
            let keep = match b.init_image_mode.as_deref().unwrap_or("IMAGE_STRENGTH") {
                "IMAGE_STRENGTH" => {
                    unit_interval("image_strength", b.image_strength.unwrap_or(0.35))?
                }
                "STEP_SCHEDULE" => {
                    if b.step_schedule_end.is_some_and(|end| end != 1.0) {
                        return Err(BedrockError::validation(
                            "step_schedule_end: this server runs the schedule to its end; omit it or use 1.",
                        ));
                    }
                    1.0 - unit_interval(
                        "step_schedule_start",
                        b.step_schedule_start.unwrap_or(0.65),
                    )?
                }
                other => {
                    return Err(invalid(
                        "init_image_mode",
                        other,
                        "Member must satisfy enum value set: [IMAGE_STRENGTH, STEP_SCHEDULE]",
                    ))
                }
            };
            Some((decode_base64("init_image", data)?, 1.0 - keep))
        }
    };
    // A style preset steers the prompt, as Stability's presets do.
    let prompt = match &b.style_preset {
        Some(style) => format!("{prompt}, {} style", style.replace('-', " ")),
        None => prompt,
    };
    Ok(ImageInvocation {
        prompt,
        negative_prompt: negative.join(", "),
        width,
        height,
        steps: b.steps.map_or(Steps::Usual, Steps::Given),
        cfg_scale: b.cfg_scale,
        seed: seed(b.seed, "seed")?,
        samples: 1,
        init_image,
        sampler,
        family: ImageFamily::StabilitySdxl,
    })
}

#[derive(Debug, Deserialize)]
struct StableImageBody {
    prompt: String,
    negative_prompt: Option<String>,
    aspect_ratio: Option<String>,
    mode: Option<String>,
    seed: Option<u64>,
    output_format: Option<String>,
    image: Option<String>,
    strength: Option<f32>,
}

/// Stable Image Core / Ultra and SD3: `prompt`, `aspect_ratio`, `seed`.
/// `base` is the model's native side (1024 for SDXL-class weights).
pub fn parse_stable_image(body: &[u8], base: u32) -> Result<ImageInvocation, BedrockError> {
    let b: StableImageBody = from_json(body)?;
    if b.prompt.trim().is_empty() || b.prompt.chars().count() > 10_000 {
        return Err(invalid(
            "prompt",
            "…",
            "Member must have length between 1 and 10000",
        ));
    }
    let init_image = match b.mode.as_deref().unwrap_or("text-to-image") {
        "text-to-image" => None,
        "image-to-image" => {
            let data = b.image.as_deref().ok_or_else(|| {
                BedrockError::validation("image is required when mode is image-to-image.")
            })?;
            if b.aspect_ratio.is_some() {
                return Err(BedrockError::validation(
                    "aspect_ratio: image-to-image takes its size from the image; omit aspect_ratio.",
                ));
            }
            let strength = b.strength.ok_or_else(|| {
                BedrockError::validation("strength is required when mode is image-to-image.")
            })?;
            Some((
                decode_base64("image", data)?,
                unit_interval("strength", strength)?,
            ))
        }
        other => {
            return Err(invalid(
                "mode",
                other,
                "Member must satisfy enum value set: [text-to-image, image-to-image]",
            ))
        }
    };
    if let Some(format) = &b.output_format {
        if !format.eq_ignore_ascii_case("png") {
            return Err(BedrockError::validation(format!(
                "output_format {format}: this server writes PNG only."
            )));
        }
    }
    let (w, h) = match b.aspect_ratio.as_deref().unwrap_or("1:1") {
        "1:1" => (1, 1),
        "16:9" => (16, 9),
        "21:9" => (21, 9),
        "2:3" => (2, 3),
        "3:2" => (3, 2),
        "4:5" => (4, 5),
        "5:4" => (5, 4),
        "9:16" => (9, 16),
        "9:21" => (9, 21),
        other => return Err(invalid(
            "aspect_ratio",
            other,
            "Member must satisfy enum value set: [16:9, 1:1, 21:9, 2:3, 3:2, 4:5, 5:4, 9:16, 9:21]",
        )),
    };
    let (width, height) = size_for_ratio(base, w, h);
    Ok(ImageInvocation {
        prompt: b.prompt,
        negative_prompt: b.negative_prompt.unwrap_or_default(),
        width,
        height,
        steps: Steps::Usual,
        cfg_scale: None,
        seed: seed(b.seed, "seed")?,
        samples: 1,
        init_image,
        sampler: None,
        family: ImageFamily::StableImage,
    })
}

/// About `base`² pixels at `w:h`, each side a multiple of 64.
fn size_for_ratio(base: u32, w: u32, h: u32) -> (u32, u32) {
    let area = f64::from(base) * f64::from(base);
    let width = (area * f64::from(w) / f64::from(h)).sqrt();
    let round = |x: f64| ((x / 64.0).round() as u32).max(1) * 64;
    (round(width), round(area / width))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanBody {
    task_type: String,
    text_to_image_params: Option<TitanTextToImage>,
    image_variation_params: Option<TitanVariation>,
    image_generation_config: Option<TitanConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanVariation {
    images: Vec<String>,
    text: Option<String>,
    negative_text: Option<String>,
    similarity_strength: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanTextToImage {
    text: String,
    negative_text: Option<String>,
    condition_image: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanConfig {
    number_of_images: Option<u32>,
    height: Option<u32>,
    width: Option<u32>,
    cfg_scale: Option<f32>,
    seed: Option<u64>,
    quality: Option<String>,
}

/// Titan Image Generator and Nova Canvas, TEXT_IMAGE.
pub fn parse_titan_image(body: &[u8]) -> Result<ImageInvocation, BedrockError> {
    let b: TitanBody = from_json(body)?;
    let (text, negative_text, init_image) = match b.task_type.as_str() {
        "TEXT_IMAGE" => {
            let params = b.text_to_image_params.ok_or_else(|| {
                BedrockError::validation("textToImageParams is required for TEXT_IMAGE.")
            })?;
            if params.text.trim().is_empty() || params.text.chars().count() > 512 {
                return Err(invalid(
                    "textToImageParams.text",
                    "…",
                    "Member must have length between 1 and 512",
                ));
            }
            if params.condition_image.is_some() {
                return Err(BedrockError::validation(
                    "textToImageParams.conditionImage is not supported by this server.",
                ));
            }
            (params.text, params.negative_text, None)
        }
        // Image-to-image from the first image: the more similar, the fewer steps redraw it.
        "IMAGE_VARIATION" => {
            let params = b.image_variation_params.ok_or_else(|| {
                BedrockError::validation("imageVariationParams is required for IMAGE_VARIATION.")
            })?;
            let image = match params.images.as_slice() {
                [one] => one,
                [] => {
                    return Err(invalid(
                        "imageVariationParams.images",
                        "[]",
                        "Member must have length between 1 and 5",
                    ))
                }
                _ => {
                    return Err(BedrockError::validation(
                        "imageVariationParams.images: this server varies one image at a time; send one.",
                    ))
                }
            };
            let text = params.text.unwrap_or_default();
            if text.chars().count() > 512 {
                return Err(invalid(
                    "imageVariationParams.text",
                    "…",
                    "Member must have length less than or equal to 512",
                ));
            }
            let similarity = params.similarity_strength.unwrap_or(0.7);
            if !(0.2..=1.0).contains(&similarity) {
                return Err(invalid(
                    "imageVariationParams.similarityStrength",
                    similarity,
                    "Member must have value between 0.2 and 1.0",
                ));
            }
            let bytes = decode_base64("imageVariationParams.images.0", image)?;
            (text, params.negative_text, Some((bytes, 1.0 - similarity)))
        }
        other => {
            return Err(BedrockError::validation(format!(
                "taskType {other}: this server supports TEXT_IMAGE and IMAGE_VARIATION."
            )))
        }
    };
    let config = b.image_generation_config.unwrap_or(TitanConfig {
        number_of_images: None,
        height: None,
        width: None,
        cfg_scale: None,
        seed: None,
        quality: None,
    });
    let samples = config.number_of_images.unwrap_or(1);
    if !(1..=5).contains(&samples) {
        return Err(invalid(
            "imageGenerationConfig.numberOfImages",
            samples,
            "Member must have value between 1 and 5",
        ));
    }
    let (width, height) = (config.width.unwrap_or(1024), config.height.unwrap_or(1024));
    for (member, side) in [("width", width), ("height", height)] {
        if !(320..=4096).contains(&side) || side % 16 != 0 {
            return Err(invalid(
                &format!("imageGenerationConfig.{member}"),
                side,
                "Member must be a multiple of 16 between 320 and 4096",
            ));
        }
    }
    if let Some(cfg_scale) = config.cfg_scale {
        if !(1.1..=10.0).contains(&cfg_scale) {
            return Err(invalid(
                "imageGenerationConfig.cfgScale",
                cfg_scale,
                "Member must have value between 1.1 and 10",
            ));
        }
    }
    let steps = match config.quality.as_deref().unwrap_or("standard") {
        "standard" => Steps::Usual,
        "premium" => Steps::Premium,
        other => {
            return Err(invalid(
                "imageGenerationConfig.quality",
                other,
                "Member must satisfy enum value set: [standard, premium]",
            ))
        }
    };
    // Titan's default seed is 42, not random.
    let seed = match config.seed {
        None => Some(42),
        Some(s) if s <= 2_147_483_646 => Some(s),
        Some(s) => {
            return Err(invalid(
                "imageGenerationConfig.seed",
                s,
                "Member must have value between 0 and 2147483646",
            ))
        }
    };
    Ok(ImageInvocation {
        prompt: text,
        negative_prompt: negative_text.unwrap_or_default(),
        width,
        height,
        steps,
        cfg_scale: config.cfg_scale,
        seed,
        samples,
        init_image,
        sampler: None,
        family: ImageFamily::TitanImage,
    })
}

/// The family's response body when a guardrail blocked the prompt: no image, and each
/// family's own way of saying it was filtered.
pub fn filtered(family: ImageFamily, seed: u64, message: &str) -> Value {
    match family {
        ImageFamily::StabilitySdxl => json!({
            "result": "success",
            "artifacts": [{"seed": seed, "base64": "", "finishReason": "CONTENT_FILTERED"}],
        }),
        ImageFamily::StableImage => json!({
            "seeds": [seed],
            "finish_reasons": ["Filter reason: prompt"],
            "images": [],
        }),
        ImageFamily::TitanImage => json!({ "images": [], "error": message }),
    }
}

/// The family's response body for the generated images.
pub fn response(family: ImageFamily, images: &[GeneratedImage]) -> Value {
    let b64 = |img: &GeneratedImage| base64::engine::general_purpose::STANDARD.encode(&img.png);
    match family {
        ImageFamily::StabilitySdxl => json!({
            "result": "success",
            "artifacts": images.iter().map(|i| json!({
                "seed": i.seed, "base64": b64(i), "finishReason": "SUCCESS"
            })).collect::<Vec<_>>(),
        }),
        ImageFamily::StableImage => json!({
            "seeds": images.iter().map(|i| i.seed).collect::<Vec<_>>(),
            "finish_reasons": images.iter().map(|_| Value::Null).collect::<Vec<_>>(),
            "images": images.iter().map(b64).collect::<Vec<_>>(),
        }),
        ImageFamily::TitanImage => json!({
            "images": images.iter().map(b64).collect::<Vec<_>>(),
            "error": Value::Null,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_to_image_bodies_carry_the_image_and_its_strength() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG fake");
        let sdxl = format!(
            r#"{{"text_prompts": [{{"text": "a cat"}}], "init_image": "{png}", "image_strength": 0.8, "width": 10, "height": 10}}"#
        );
        let inv = parse_sdxl(sdxl.as_bytes()).expect("img2img ignores width/height");
        let (bytes, strength) = inv.init_image.expect("init image");
        assert_eq!(bytes, b"\x89PNG fake");
        assert!(
            (strength - 0.2).abs() < 1e-6,
            "image_strength 0.8 keeps 80%"
        );
        let schedule = format!(
            r#"{{"text_prompts": [{{"text": "a cat"}}], "init_image": "{png}", "init_image_mode": "STEP_SCHEDULE", "step_schedule_start": 0.6}}"#
        );
        let (_, strength) = parse_sdxl(schedule.as_bytes())
            .expect("schedule")
            .init_image
            .expect("init");
        assert!((strength - 0.6).abs() < 1e-6);
        for (body, word) in [
            (
                r#"{"text_prompts": [{"text": "a"}], "init_image": "%%%"}"#.to_string(),
                "base64",
            ),
            (
                format!(
                    r#"{{"text_prompts": [{{"text": "a"}}], "init_image": "{png}", "image_strength": 2}}"#
                ),
                "image_strength",
            ),
            (
                format!(
                    r#"{{"text_prompts": [{{"text": "a"}}], "init_image": "{png}", "init_image_mode": "X"}}"#
                ),
                "init_image_mode",
            ),
        ] {
            let err = parse_sdxl(body.as_bytes()).expect_err(word);
            assert!(err.message.contains(word), "{}", err.message);
        }
        let sd3 = format!(
            r#"{{"prompt": "a cat", "mode": "image-to-image", "image": "{png}", "strength": 0.75}}"#
        );
        let (_, strength) = parse_stable_image(sd3.as_bytes(), 1024)
            .expect("sd3")
            .init_image
            .expect("init");
        assert!((strength - 0.75).abs() < 1e-6);
        for (body, word) in [
            (
                r#"{"prompt": "a", "mode": "image-to-image", "strength": 0.5}"#.to_string(),
                "image is required",
            ),
            (
                format!(r#"{{"prompt": "a", "mode": "image-to-image", "image": "{png}"}}"#),
                "strength is required",
            ),
            (
                format!(
                    r#"{{"prompt": "a", "mode": "image-to-image", "image": "{png}", "strength": 0.5, "aspect_ratio": "1:1"}}"#
                ),
                "aspect_ratio",
            ),
        ] {
            let err = parse_stable_image(body.as_bytes(), 1024).expect_err(word);
            assert!(err.message.contains(word), "{}", err.message);
        }
    }

    #[test]
    fn sdxl_samplers_map_to_the_engines() {
        for (name, sampler) in [
            ("DDIM", ImageSampler::Ddim),
            ("K_EULER", ImageSampler::Euler),
            ("K_EULER_ANCESTRAL", ImageSampler::EulerAncestral),
        ] {
            let body = format!(r#"{{"text_prompts": [{{"text": "a"}}], "sampler": "{name}"}}"#);
            assert_eq!(
                parse_sdxl(body.as_bytes()).expect(name).sampler,
                Some(sampler)
            );
        }
        let default = parse_sdxl(br#"{"text_prompts": [{"text": "a"}]}"#).expect("default");
        assert_eq!(
            default.sampler, None,
            "left to the model's scheduler config"
        );
        let e = parse_sdxl(br#"{"text_prompts": [{"text": "a"}], "sampler": "K_LMS"}"#)
            .expect_err("unsupported");
        assert!(e.message.contains("K_EULER_ANCESTRAL"), "{}", e.message);
    }

    #[test]
    fn the_seeds_sdxl_body_parses_with_its_negative_prompt() {
        let body = br#"{"text_prompts": [{"text": "a lighthouse", "weight": 1.0}, {"text": "blurry", "weight": -1.0}],
            "cfg_scale": 7, "seed": 0, "steps": 50, "width": 1024, "height": 1024}"#;
        let inv = parse_sdxl(body).expect("parses");
        assert_eq!(inv.prompt, "a lighthouse");
        assert_eq!(inv.negative_prompt, "blurry");
        assert_eq!(
            (inv.width, inv.height, inv.steps),
            (1024, 1024, Steps::Given(50))
        );
        assert_eq!(inv.seed, None, "seed 0 means random");
    }

    #[test]
    fn sdxl_limits_name_the_member() {
        let bad = [
            (
                r#"{"text_prompts": [{"text": "x"}], "width": 1000, "height": 1000}"#,
                "1000x1000",
            ),
            (r#"{"text_prompts": [{"text": "x"}], "steps": 5}"#, "steps"),
            (
                r#"{"text_prompts": [{"text": "x"}], "cfg_scale": 40}"#,
                "cfg_scale",
            ),
            (
                r#"{"text_prompts": [{"text": "x"}], "style_preset": "watercolour"}"#,
                "style_preset",
            ),
            (
                r#"{"text_prompts": [{"text": "x", "weight": -1}]}"#,
                "non-negative",
            ),
            (
                r#"{"text_prompts": [{"text": "x"}], "seed": 4294967296}"#,
                "seed",
            ),
        ];
        for (body, needle) in bad {
            let e = parse_sdxl(body.as_bytes()).expect_err(body);
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
    }

    #[test]
    fn stable_image_sizes_follow_the_aspect_ratio() {
        let inv = parse_stable_image(
            br#"{"prompt": "p", "aspect_ratio": "16:9", "seed": 5}"#,
            1024,
        )
        .expect("parses");
        assert_eq!((inv.width, inv.height), (1344, 768));
        assert_eq!(inv.seed, Some(5));
        assert!(parse_stable_image(br#"{"prompt": "p", "aspect_ratio": "7:3"}"#, 1024).is_err());
    }

    #[test]
    fn titan_text_image_defaults_and_limits() {
        let inv = parse_titan_image(
            br#"{"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "cup", "negativeText": "blurry"},
                "imageGenerationConfig": {"numberOfImages": 2, "width": 512, "height": 512, "cfgScale": 8.0}}"#,
        )
        .expect("parses");
        assert_eq!((inv.samples, inv.width, inv.seed), (2, 512, Some(42)));
        assert_eq!(inv.negative_prompt, "blurry");
        let e = parse_titan_image(br#"{"taskType": "INPAINTING"}"#).expect_err("refused");
        assert!(e.message.contains("TEXT_IMAGE"));
        let png = base64::engine::general_purpose::STANDARD.encode(b"img");
        let variation = format!(
            r#"{{"taskType": "IMAGE_VARIATION", "imageVariationParams": {{"images": ["{png}"], "similarityStrength": 0.9}}}}"#
        );
        let inv = parse_titan_image(variation.as_bytes()).expect("variation");
        let (bytes, strength) = inv.init_image.expect("init image");
        assert_eq!((bytes.as_slice(), inv.prompt.as_str()), (&b"img"[..], ""));
        assert!(
            (strength - 0.1).abs() < 1e-6,
            "similarity 0.9 redraws a tenth"
        );
        for (body, word) in [
            (
                format!(
                    r#"{{"taskType": "IMAGE_VARIATION", "imageVariationParams": {{"images": ["{png}", "{png}"]}}}}"#
                ),
                "one image",
            ),
            (
                format!(
                    r#"{{"taskType": "IMAGE_VARIATION", "imageVariationParams": {{"images": ["{png}"], "similarityStrength": 0.1}}}}"#
                ),
                "similarityStrength",
            ),
            (
                r#"{"taskType": "IMAGE_VARIATION"}"#.to_string(),
                "imageVariationParams is required",
            ),
        ] {
            let e = parse_titan_image(body.as_bytes()).expect_err(word);
            assert!(e.message.contains(word), "{}", e.message);
        }
    }

    #[test]
    fn bodies_leave_steps_guidance_and_sampler_to_the_model() {
        let usual = ModelDefaults {
            sampler: ImageSampler::Euler,
            few_step: false,
        };
        let turbo = ModelDefaults {
            sampler: ImageSampler::EulerAncestral,
            few_step: true,
        };
        let settled = |inv: &ImageInvocation, m| {
            let s = inv.settle(m);
            (s.steps, s.cfg_scale, s.sampler)
        };
        use ImageSampler::{Ddim, Euler, EulerAncestral};
        // SDXL body: Bedrock's defaults on a usual model; on a Turbo folder no guidance and
        // the fewest steps the body allows, 10.
        let sdxl = parse_sdxl(br#"{"text_prompts": [{"text": "a"}]}"#).expect("sdxl");
        assert_eq!(settled(&sdxl, usual), (30, 7.0, Euler));
        assert_eq!(settled(&sdxl, turbo), (10, 0.0, EulerAncestral));
        // Explicit values win, and the body's range still holds on a Turbo folder.
        let given = parse_sdxl(
            br#"{"text_prompts": [{"text": "a"}], "steps": 12, "cfg_scale": 2, "sampler": "DDIM"}"#,
        )
        .expect("given");
        assert_eq!(settled(&given, turbo), (12, 2.0, Ddim));
        assert!(parse_sdxl(br#"{"text_prompts": [{"text": "a"}], "steps": 1}"#).is_err());
        // Stable Image / SD3 body (no steps field): 1 step without guidance on Turbo, 2 for
        // image-to-image.
        let core = parse_stable_image(br#"{"prompt": "a"}"#, 1024).expect("core");
        assert_eq!(settled(&core, usual), (30, 7.0, Euler));
        assert_eq!(settled(&core, turbo), (1, 0.0, EulerAncestral));
        let png = base64::engine::general_purpose::STANDARD.encode(b"img");
        let i2i = format!(
            r#"{{"prompt": "a", "mode": "image-to-image", "image": "{png}", "strength": 0.5}}"#
        );
        let i2i = parse_stable_image(i2i.as_bytes(), 1024).expect("i2i");
        assert_eq!(settled(&i2i, turbo).0, 2);
        // Titan: standard and premium quality, and its own default guidance of 8.
        let titan = |quality: &str, cfg: &str| {
            parse_titan_image(
                format!(
                    r#"{{"taskType": "TEXT_IMAGE", "textToImageParams": {{"text": "a"}},
                    "imageGenerationConfig": {{"quality": "{quality}"{cfg}}}}}"#
                )
                .as_bytes(),
            )
            .expect("titan")
        };
        assert_eq!(settled(&titan("standard", ""), usual), (30, 8.0, Euler));
        assert_eq!(settled(&titan("premium", ""), usual).0, 50);
        assert_eq!(
            settled(&titan("standard", ""), turbo),
            (1, 0.0, EulerAncestral)
        );
        assert_eq!(settled(&titan("premium", ""), turbo).0, 4);
        let guided = titan("standard", r#", "cfgScale": 1.5"#);
        assert_eq!(settled(&guided, turbo).1, 1.5);
    }

    #[test]
    fn responses_take_each_familys_shape() {
        let images = [GeneratedImage {
            png: vec![1, 2, 3],
            seed: 9,
        }];
        let sdxl = response(ImageFamily::StabilitySdxl, &images);
        assert_eq!(sdxl["artifacts"][0]["seed"], 9);
        assert_eq!(sdxl["artifacts"][0]["base64"], "AQID");
        let core = response(ImageFamily::StableImage, &images);
        assert_eq!(core["seeds"][0], 9);
        assert_eq!(core["finish_reasons"][0], Value::Null);
        let titan = response(ImageFamily::TitanImage, &images);
        assert_eq!(titan["images"][0], "AQID");
        assert_eq!(titan["error"], Value::Null);
    }
}
