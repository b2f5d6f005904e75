//! The full pipeline on a tiny random-weight model the test writes in the diffusers layout.

use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;

use basalt_diffusion::{fixture, png, DiffusionError, Pipeline, Request};

mod model_files;

use model_files::{edit, load_error, one_from, Written};

fn tiny() -> &'static Written {
    static TINY: OnceLock<Written> = OnceLock::new();
    TINY.get_or_init(|| model_files::write_and_load(fixture::write_tiny_model))
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
        sampler: Default::default(),
    }
}

fn one(r: &Request) -> Vec<u8> {
    one_from(&tiny().pipeline, r)
}

#[test]
fn makes_a_png_of_the_requested_size() {
    let progress = Cell::new(Vec::new());
    let r = Request {
        width: 96,
        height: 64,
        samples: 2,
        ..request(5)
    };
    let images = tiny()
        .pipeline
        .generate(
            &r,
            &|done, total| {
                let mut v = progress.take();
                v.push((done, total));
                progress.set(v);
            },
            &|| false,
        )
        .expect("generate");
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].seed, 5);
    assert_eq!(images[1].seed, 6);
    for image in &images {
        assert_eq!(png::dimensions(&image.png), Some((96, 64)));
        assert!(png::decode_rgb(&image.png).is_some());
    }
    let progress = progress.take();
    assert_eq!(progress.len(), 6);
    assert_eq!(progress.last(), Some(&(6, 6)));
    // Sample i is the image seed + i gives on its own.
    assert_eq!(
        one(&Request {
            width: 96,
            height: 64,
            ..request(6)
        }),
        images[1].png
    );
}

#[test]
fn a_seed_gives_the_same_image_and_another_seed_another() {
    let a = one(&request(1234));
    let (w, h, rgb) = png::decode_rgb(&a).expect("decode");
    assert_eq!((w, h, rgb.len()), (64, 64, 64 * 64 * 3));
    // Not a flat or saturated picture: many distinct values.
    let mut seen = [false; 256];
    rgb.iter().for_each(|&v| seen[v as usize] = true);
    let distinct = seen.iter().filter(|&&s| s).count();
    assert!(distinct > 32, "{distinct} distinct channel values");
    assert_eq!(a, one(&request(1234)));
    assert_ne!(a, one(&request(1235)));
}

#[test]
fn the_negative_prompt_changes_the_image() {
    let plain = one(&request(77));
    let negative = one(&Request {
        negative_prompt: "blurry ugly dark".into(),
        ..request(77)
    });
    assert_ne!(plain, negative);
    // Without guidance the negative prompt is not used.
    let unguided = |neg: &str| {
        one(&Request {
            negative_prompt: neg.into(),
            cfg_scale: 1.0,
            ..request(77)
        })
    };
    assert_eq!(unguided(""), unguided("blurry ugly dark"));
}

#[test]
fn the_prompt_changes_the_image() {
    let a = one(&request(9));
    let b = one(&Request {
        prompt: "a painting of a castle".into(),
        ..request(9)
    });
    assert_ne!(a, b);
}

#[test]
fn cancel_stops_generation() {
    let polls = Cell::new(0);
    let err = tiny()
        .pipeline
        .generate(&request(1), &|_, _| {}, &|| {
            polls.set(polls.get() + 1);
            polls.get() > 2
        })
        .expect_err("cancelled");
    assert!(matches!(err, DiffusionError::Cancelled), "{err}");
}

#[test]
fn invalid_requests_are_refused() {
    let p = &tiny().pipeline;
    for (r, word) in [
        (
            Request {
                width: 60,
                ..request(1)
            },
            "width 60",
        ),
        (
            Request {
                height: 0,
                ..request(1)
            },
            "height 0",
        ),
        (
            Request {
                steps: 0,
                ..request(1)
            },
            "steps 0",
        ),
        (
            Request {
                samples: 0,
                ..request(1)
            },
            "samples 0",
        ),
        (
            Request {
                cfg_scale: -1.0,
                ..request(1)
            },
            "cfg_scale",
        ),
    ] {
        let err = p.generate(&r, &|_, _| {}, &|| false).expect_err(word);
        assert!(matches!(err, DiffusionError::InvalidRequest(_)), "{err}");
        assert!(err.to_string().contains(word), "{err}");
    }
    assert_eq!(p.size_multiple(), 32);
    assert_eq!(p.native_size(), 256);
    // SD 1.5-style DDIM scheduler config: DDIM, not a few-step model.
    let d = p.defaults();
    assert_eq!(
        (d.sampler, d.few_step),
        (basalt_diffusion::Sampler::Ddim, false)
    );
}

/// A copy of the tiny model, to break.
fn copy_model(to: &Path) {
    model_files::copy_dir(tiny().dir.path(), to);
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    let weights = dir.path().join("unet/diffusion_pytorch_model.safetensors");
    std::fs::remove_file(&weights).expect("rm");
    let err = load_error(dir.path());
    assert!(
        err.contains("missing file") && err.contains("unet/diffusion_pytorch_model.safetensors"),
        "{err}"
    );

    copy_model(dir.path());
    std::fs::remove_file(dir.path().join("vae/config.json")).expect("rm");
    let err = load_error(dir.path());
    assert!(err.contains("vae/config.json"), "{err}");

    copy_model(dir.path());
    std::fs::remove_file(dir.path().join("tokenizer/tokenizer.json")).expect("rm");
    let err = load_error(dir.path());
    assert!(err.contains("tokenizer/tokenizer.json"), "{err}");
}

#[test]
fn a_wrong_shape_names_the_file_and_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    // The config now says 48 hidden units; the weights have 32.
    let config = dir.path().join("text_encoder/config.json");
    let text = std::fs::read_to_string(&config).expect("read");
    let text = text.replace("\"hidden_size\": 32", "\"hidden_size\": 48");
    std::fs::write(&config, text).expect("write");
    edit(
        dir.path(),
        "unet/config.json",
        "\"cross_attention_dim\": 32",
        "\"cross_attention_dim\": 48",
    );
    let err = load_error(dir.path());
    assert!(err.contains("text_encoder/model.safetensors"), "{err}");
    assert!(
        err.contains("text_model.embeddings.token_embedding.weight"),
        "{err}"
    );
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    // One more UNet layer per block than the weights have.
    edit(
        dir.path(),
        "unet/config.json",
        "\"layers_per_block\": 1",
        "\"layers_per_block\": 2",
    );
    let err = load_error(dir.path());
    assert!(
        err.contains("unet/diffusion_pytorch_model.safetensors"),
        "{err}"
    );
    assert!(err.contains("down_blocks.0.resnets.1"), "{err}");
}

#[test]
fn mismatched_configs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_model(dir.path());
    edit(
        dir.path(),
        "unet/config.json",
        "\"cross_attention_dim\": 32",
        "\"cross_attention_dim\": 64",
    );
    let err = load_error(dir.path());
    assert!(
        err.contains("cross_attention_dim 64") && err.contains("hidden_size 32"),
        "{err}"
    );
}

#[test]
fn loads_and_generates_in_f16() {
    let options = basalt_diffusion::LoadOptions {
        dtype: basalt_diffusion::DType::F16,
    };
    let p = Pipeline::load_with(tiny().dir.path(), options).expect("load f16");
    let r = Request {
        steps: 2,
        ..request(3)
    };
    let a = p
        .generate(&r, &|_, _| {}, &|| false)
        .expect("f16")
        .remove(0);
    assert_eq!(png::dimensions(&a.png), Some((64, 64)));
    let b = p
        .generate(&r, &|_, _| {}, &|| false)
        .expect("f16")
        .remove(0);
    assert_eq!(a.png, b.png);
}

#[test]
fn the_pipeline_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Pipeline>();
    shared::<DiffusionError>();
}

#[test]
fn image_to_image_starts_from_the_init_image() {
    let p = &tiny().pipeline;
    let source = basalt_diffusion::decode_image(&one(&request(21))).expect("decode our PNG");
    let other = basalt_diffusion::decode_image(&one(&request(22))).expect("decode");
    let from = |init: &basalt_diffusion::InitImage, strength: f64, seed: u64| {
        let steps = Cell::new(0);
        let r = Request {
            steps: 4,
            init: Some(basalt_diffusion::InitImage {
                strength,
                ..init.clone()
            }),
            ..request(seed)
        };
        let images = p
            .generate(&r, &|_, total| steps.set(total), &|| false)
            .expect("img2img");
        (images[0].png.clone(), steps.get())
    };
    let (half, steps) = from(&source, 0.5, 3);
    assert_eq!(steps, 2, "strength 0.5 runs half of the 4 steps");
    assert_eq!(png::dimensions(&half), Some((64, 64)));
    assert_eq!(from(&source, 0.5, 3).0, half, "a seed repeats");
    assert_ne!(from(&source, 0.5, 4).0, half, "another seed differs");
    assert_ne!(from(&source, 1.0, 3).0, half, "the strength matters");
    assert_ne!(from(&other, 0.5, 3).0, half, "the init image matters");
}

#[test]
fn image_to_image_refuses_bad_init_images() {
    let p = &tiny().pipeline;
    let err = basalt_diffusion::decode_image(b"not an image").expect_err("garbage");
    assert!(matches!(err, DiffusionError::InvalidRequest(_)), "{err}");
    let init = basalt_diffusion::decode_image(&one(&request(1))).expect("decode");
    for (r, word) in [
        (
            Request {
                width: 128,
                init: Some(init.clone()),
                ..request(1)
            },
            "64x64",
        ),
        (
            Request {
                init: Some(basalt_diffusion::InitImage {
                    strength: 1.5,
                    ..init.clone()
                }),
                ..request(1)
            },
            "strength",
        ),
    ] {
        let err = p.generate(&r, &|_, _| {}, &|| false).expect_err(word);
        assert!(err.to_string().contains(word), "{err}");
    }
}

#[test]
fn each_sampler_repeats_per_seed_and_differs_from_the_others() {
    use basalt_diffusion::Sampler;
    let with = |sampler: Sampler, seed: u64| {
        one(&Request {
            sampler,
            steps: 4,
            ..request(seed)
        })
    };
    let all = [Sampler::Ddim, Sampler::Euler, Sampler::EulerAncestral];
    let images: Vec<Vec<u8>> = all.iter().map(|&s| with(s, 8)).collect();
    for (sampler, image) in all.iter().zip(&images) {
        assert_eq!(png::dimensions(image), Some((64, 64)));
        assert_eq!(&with(*sampler, 8), image, "{sampler:?} repeats its seed");
        assert_ne!(&with(*sampler, 9), image, "{sampler:?} differs by seed");
    }
    assert_ne!(images[0], images[1]);
    assert_ne!(images[1], images[2]);
    // Image-to-image with Euler starts from the noised init image too.
    let init = basalt_diffusion::decode_image(&images[0]).expect("decode");
    let varied = one(&Request {
        sampler: Sampler::Euler,
        steps: 4,
        init: Some(basalt_diffusion::InitImage {
            strength: 0.5,
            ..init
        }),
        ..request(8)
    });
    assert_eq!(png::dimensions(&varied), Some((64, 64)));
}
