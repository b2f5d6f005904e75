//! The full pipeline on the tiny SDXL-architecture fixture: two text encoders, the pooled
//! embedding and the "text_time" added conditioning.

use std::path::Path;
use std::sync::OnceLock;

use basalt_diffusion::{fixture, png, DiffusionError, Pipeline, Request, Sampler};

mod model_files;

use model_files::{edit, load_error, one_from, Written};

fn tiny() -> &'static Written {
    static TINY: OnceLock<Written> = OnceLock::new();
    TINY.get_or_init(|| model_files::write_and_load(fixture::write_tiny_sdxl_model))
}

fn request(seed: u64) -> Request {
    Request {
        prompt: "a photo of a red cat in the snow".into(),
        negative_prompt: String::new(),
        width: 64,
        height: 64,
        steps: 3,
        cfg_scale: 7.5,
        seed,
        samples: 1,
        init: None,
        sampler: Sampler::Euler,
    }
}

fn one(r: &Request) -> Vec<u8> {
    one_from(&tiny().pipeline, r)
}

#[test]
fn the_sdxl_fixture_loads_as_sdxl() {
    let p = &tiny().pipeline;
    assert!(p.is_sdxl());
    assert_eq!(p.native_size(), 1024);
    let png = one(&Request {
        width: 96,
        height: 64,
        ..request(1)
    });
    assert_eq!(png::dimensions(&png), Some((96, 64)));
}

#[test]
fn a_seed_repeats_and_another_seed_differs() {
    let a = one(&request(7));
    assert_eq!(a, one(&request(7)));
    assert_ne!(a, one(&request(8)));
}

#[test]
fn the_negative_prompt_changes_the_image() {
    let plain = one(&request(3));
    let negative = one(&Request {
        negative_prompt: "blurry low quality".into(),
        ..request(3)
    });
    assert_ne!(plain, negative);
    // The same negative prompt repeats.
    assert_eq!(
        negative,
        one(&Request {
            negative_prompt: "blurry low quality".into(),
            ..request(3)
        })
    );
}

#[test]
fn the_prompt_changes_the_image_without_guidance_too() {
    // cfg_scale 0 (SDXL-Turbo's): one UNet pass a step, on the prompt alone.
    let r = Request {
        cfg_scale: 0.0,
        ..request(4)
    };
    let a = one(&r);
    assert_eq!(a, one(&r));
    assert_ne!(
        a,
        one(&Request {
            prompt: "a green tree in the forest".into(),
            ..r.clone()
        })
    );
}

/// A copy of the fixture whose `add_embedding.linear_1` ignores input columns `from..to`.
fn blind_to(from: usize, to: usize) -> (tempfile::TempDir, Pipeline) {
    use candle_core::Tensor;
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    let unet = dir.path().join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors =
        candle_core::safetensors::load(&unet, &candle_core::Device::Cpu).expect("load");
    let name = "add_embedding.linear_1.weight";
    let w = tensors.get(name).expect(name).clone();
    let (rows, cols) = w.dims2().expect("2-d");
    assert_eq!(cols, 80, "32 pooled + 6 × 8 time-id channels");
    let mut parts = Vec::new();
    if from > 0 {
        parts.push(w.narrow(1, 0, from).expect("narrow"));
    }
    parts.push(Tensor::zeros((rows, to - from), w.dtype(), w.device()).expect("zeros"));
    if to < cols {
        parts.push(w.narrow(1, to, cols - to).expect("narrow"));
    }
    tensors.insert(name.into(), Tensor::cat(&parts, 1).expect("cat"));
    candle_core::safetensors::save(&tensors, &unet).expect("save");
    let p = Pipeline::load(dir.path()).expect("load edited model");
    (dir, p)
}

/// The pooled embedding (input columns 0..32 of `add_embedding`) and the time ids (32..80)
/// each reach the image: a model blind to either makes another image from the same request.
/// (The size the ids carry cannot be varied alone through a request: it also sets the
/// latents' shape.)
#[test]
fn the_pooled_embedding_and_the_time_ids_matter() {
    let r = request(11);
    let original = one(&r);
    let (_d1, no_pooled) = blind_to(0, 32);
    let (_d2, no_time) = blind_to(32, 80);
    let (a, b) = (one_from(&no_pooled, &r), one_from(&no_time, &r));
    assert_ne!(original, a, "the pooled embedding changed nothing");
    assert_ne!(original, b, "the time ids changed nothing");
    assert_ne!(a, b);
    assert_eq!(b, one_from(&no_time, &r));
}

/// The negative branch of an empty negative prompt is all zeros (force_zeros_for_empty_prompt)
/// rather than the encoded "": turning the flag off changes the guided image.
#[test]
fn an_empty_negative_prompt_is_zeros_unless_the_model_says_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    edit(
        dir.path(),
        "model_index.json",
        "\"force_zeros_for_empty_prompt\": true",
        "\"force_zeros_for_empty_prompt\": false",
    );
    let encoded = Pipeline::load(dir.path()).expect("load");
    let r = request(13);
    assert_ne!(one(&r), one_from(&encoded, &r));
}

#[test]
fn the_folders_scheduler_sets_the_defaults() {
    // SDXL base's config: Euler, leading spacing, so the usual step counts.
    let base = tiny().pipeline.defaults();
    assert_eq!((base.sampler, base.few_step), (Sampler::Euler, false));
    // SDXL-Turbo's: Euler ancestral, trailing spacing: a few-step model.
    let dir = tempfile::tempdir().expect("tempdir");
    fixture::write_tiny_sdxl_turbo_model(dir.path()).expect("turbo fixture");
    let turbo = Pipeline::load(dir.path()).expect("load");
    let d = turbo.defaults();
    assert_eq!((d.sampler, d.few_step), (Sampler::EulerAncestral, true));
    // Trailing spacing alone does not make a DDIM model (zero-SNR fine-tunes use it) few-step.
    edit(
        dir.path(),
        "scheduler/scheduler_config.json",
        "\"EulerAncestralDiscreteScheduler\"",
        "\"DDIMScheduler\"",
    );
    let d = Pipeline::load(dir.path()).expect("load").defaults();
    assert_eq!((d.sampler, d.few_step), (Sampler::Ddim, false));
}

#[test]
fn sdxl_turbo_settings_run() {
    // SDXL-Turbo: trailing timesteps, Euler ancestral, 1 step, no guidance.
    let dir = tempfile::tempdir().expect("tempdir");
    fixture::write_tiny_sdxl_turbo_model(dir.path()).expect("turbo fixture");
    let turbo = Pipeline::load(dir.path()).expect("load");
    let r = Request {
        steps: 1,
        cfg_scale: 0.0,
        sampler: turbo.defaults().sampler,
        ..request(14)
    };
    let a = one_from(&turbo, &r);
    assert_eq!(a, one_from(&turbo, &r));
    assert_ne!(a, one_from(&turbo, &Request { seed: 15, ..r }));
}

#[test]
fn loads_and_generates_in_f16() {
    let options = basalt_diffusion::LoadOptions {
        dtype: basalt_diffusion::DType::F16,
    };
    let p = Pipeline::load_with(tiny().dir.path(), options).expect("load f16");
    let a = one_from(&p, &request(16));
    assert_eq!(png::dimensions(&a), Some((64, 64)));
    assert_eq!(a, one_from(&p, &request(16)));
}

#[test]
fn image_to_image_runs() {
    let init = basalt_diffusion::decode_image(&one(&request(17))).expect("decode");
    let r = Request {
        init: Some(basalt_diffusion::InitImage {
            strength: 0.5,
            ..init
        }),
        ..request(18)
    };
    let a = one(&r);
    assert_eq!(a, one(&r));
    assert_eq!(png::dimensions(&a), Some((64, 64)));
}

fn copy_model(to: &Path) {
    model_files::copy_dir(tiny().dir.path(), to);
}

#[test]
fn a_missing_second_encoder_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    std::fs::remove_file(dir.path().join("text_encoder_2/model.safetensors")).expect("rm");
    let err = load_error(dir.path());
    assert!(
        err.contains("missing file") && err.contains("text_encoder_2/model.safetensors"),
        "{err}"
    );

    copy_model(dir.path());
    std::fs::remove_file(dir.path().join("tokenizer_2/tokenizer.json")).expect("rm");
    let err = load_error(dir.path());
    assert!(err.contains("tokenizer_2/tokenizer.json"), "{err}");

    // A UNet with added conditioning and no text_encoder_2/ at all.
    copy_model(dir.path());
    std::fs::remove_dir_all(dir.path().join("text_encoder_2")).expect("rm");
    let err = load_error(dir.path());
    assert!(err.contains("text_encoder_2/config.json"), "{err}");
}

#[test]
fn a_wrong_add_embedding_shape_names_the_file_and_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    // 8 → 10 channels per time id: the config is consistent (32 + 6 × 10 = 92), the weights
    // are not.
    edit(
        dir.path(),
        "unet/config.json",
        "\"addition_time_embed_dim\": 8",
        "\"addition_time_embed_dim\": 10",
    );
    edit(
        dir.path(),
        "unet/config.json",
        "\"projection_class_embeddings_input_dim\": 80",
        "\"projection_class_embeddings_input_dim\": 92",
    );
    let err = load_error(dir.path());
    assert!(
        err.contains("unet/diffusion_pytorch_model.safetensors")
            && err.contains("add_embedding.linear_1.weight")
            && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn inconsistent_sdxl_configs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    edit(
        dir.path(),
        "unet/config.json",
        "\"projection_class_embeddings_input_dim\": 80",
        "\"projection_class_embeddings_input_dim\": 88",
    );
    let err = load_error(dir.path());
    assert!(
        err.contains("unet/config.json")
            && err.contains("projection_class_embeddings_input_dim 88"),
        "{err}"
    );

    copy_model(dir.path());
    edit(
        dir.path(),
        "unet/config.json",
        "\"cross_attention_dim\": 64",
        "\"cross_attention_dim\": 32",
    );
    let err = load_error(dir.path());
    assert!(err.contains("32 + 32"), "{err}");

    // A text_projection of the wrong width.
    copy_model(dir.path());
    edit(
        dir.path(),
        "text_encoder_2/config.json",
        "\"projection_dim\": 32",
        "\"projection_dim\": 24",
    );
    edit(
        dir.path(),
        "unet/config.json",
        "\"projection_class_embeddings_input_dim\": 80",
        "\"projection_class_embeddings_input_dim\": 72",
    );
    let err = load_error(dir.path());
    assert!(
        err.contains("text_encoder_2/model.safetensors") && err.contains("text_projection.weight"),
        "{err}"
    );
}

#[test]
fn sd3_folders_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("transformer")).expect("mkdir");
    std::fs::write(dir.path().join("model_index.json"), "{}").expect("write");
    match Pipeline::load(dir.path()) {
        Err(DiffusionError::Unsupported(m)) => assert!(m.contains("SD3"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an SD3 folder loaded"),
    }
}
