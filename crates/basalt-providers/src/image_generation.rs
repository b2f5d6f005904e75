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
    pub steps: u32,
    pub cfg_scale: f32,
    /// `None`: pick one at random, and report it.
    pub seed: Option<u64>,
    pub samples: u32,
    /// The responder the reply is shaped by.
    pub family: ImageFamily,
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
    if !SDXL_SIZES.contains(&(width, height)) {
        return Err(BedrockError::validation(format!(
            "width and height {width}x{height} are not a size SDXL allows; use one of 1024x1024, 1152x896, \
             1216x832, 1344x768, 1536x640, 640x1536, 768x1344, 832x1216 or 896x1152."
        )));
    }
    let cfg_scale = b.cfg_scale.unwrap_or(7.0);
    if !(0.0..=35.0).contains(&cfg_scale) {
        return Err(invalid(
            "cfg_scale",
            cfg_scale,
            "Member must have value between 0 and 35",
        ));
    }
    let steps = b.steps.unwrap_or(30);
    if !(10..=50).contains(&steps) {
        return Err(invalid(
            "steps",
            steps,
            "Member must have value between 10 and 50",
        ));
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
    if let Some(sampler) = &b.sampler {
        if sampler != "DDIM" {
            return Err(BedrockError::validation(format!(
                "sampler {sampler}: this server samples with DDIM only; omit sampler or use DDIM."
            )));
        }
    }
    if b.init_image.is_some() {
        return Err(BedrockError::validation(
            "init_image (image-to-image) is not supported by this server yet.",
        ));
    }
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
        steps,
        cfg_scale,
        seed: seed(b.seed, "seed")?,
        samples: 1,
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
    if let Some(mode) = &b.mode {
        if mode != "text-to-image" {
            return Err(BedrockError::validation(format!(
                "mode {mode}: this server generates text-to-image only."
            )));
        }
    }
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
        steps: 30,
        cfg_scale: 7.0,
        seed: seed(b.seed, "seed")?,
        samples: 1,
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
    image_generation_config: Option<TitanConfig>,
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
    if b.task_type != "TEXT_IMAGE" {
        return Err(BedrockError::validation(format!(
            "taskType {}: this server supports TEXT_IMAGE only.",
            b.task_type
        )));
    }
    let params = b
        .text_to_image_params
        .ok_or_else(|| BedrockError::validation("textToImageParams is required for TEXT_IMAGE."))?;
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
    let cfg_scale = config.cfg_scale.unwrap_or(8.0);
    if !(1.1..=10.0).contains(&cfg_scale) {
        return Err(invalid(
            "imageGenerationConfig.cfgScale",
            cfg_scale,
            "Member must have value between 1.1 and 10",
        ));
    }
    let steps = match config.quality.as_deref().unwrap_or("standard") {
        "standard" => 30,
        "premium" => 50,
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
        prompt: params.text,
        negative_prompt: params.negative_text.unwrap_or_default(),
        width,
        height,
        steps,
        cfg_scale,
        seed,
        samples,
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
    fn the_seeds_sdxl_body_parses_with_its_negative_prompt() {
        let body = br#"{"text_prompts": [{"text": "a lighthouse", "weight": 1.0}, {"text": "blurry", "weight": -1.0}],
            "cfg_scale": 7, "seed": 0, "steps": 50, "width": 1024, "height": 1024}"#;
        let inv = parse_sdxl(body).expect("parses");
        assert_eq!(inv.prompt, "a lighthouse");
        assert_eq!(inv.negative_prompt, "blurry");
        assert_eq!((inv.width, inv.height, inv.steps), (1024, 1024, 50));
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
