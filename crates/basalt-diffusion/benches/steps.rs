//! Seconds per denoising step at 512×512 with the tiny random-weight model (guidance on, so
//! two UNet passes a step), plus the VAE decode. `cargo bench -p basalt-diffusion --bench steps`
//! (STEPS=n to change the step count, SIZE=n the side in pixels).

use std::cell::RefCell;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use basalt_diffusion::{fixture, Pipeline, Request};

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    let size: usize = std::env::var("SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let steps: usize = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().expect("tempdir");
    fixture::write_tiny_model(dir.path()).expect("write tiny model");
    let t = Instant::now();
    let pipeline = Pipeline::load(dir.path()).expect("load");
    let load_s = t.elapsed().as_secs_f64();

    let request = Request {
        prompt: "a photo of a red robot in the city".into(),
        negative_prompt: "blurry low quality".into(),
        width: size,
        height: size,
        steps,
        cfg_scale: 7.5,
        seed: 42,
        samples: 1,
        init: None,
        sampler: Default::default(),
    };
    let stamps = RefCell::new(Vec::new());
    let start = Instant::now();
    let images = pipeline
        .generate(
            &request,
            &|_, _| stamps.borrow_mut().push(start.elapsed().as_secs_f64()),
            &|| false,
        )
        .expect("generate");
    let total = start.elapsed().as_secs_f64();
    let stamps = stamps.into_inner();
    // Step 1 includes the text encoder; steps 2.. are UNet (x2 for guidance) + scheduler only.
    let per_step = if stamps.len() > 1 {
        (stamps[stamps.len() - 1] - stamps[0]) / (stamps.len() - 1) as f64
    } else {
        stamps[0]
    };
    let decode = total - stamps.last().copied().unwrap_or(0.0);
    println!("date: {}", utc_now());
    println!(
        "machine: {} ({} threads available)",
        cpu_model(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("model: tiny random SD (UNet 32/64 ch, attention in block 2 only, CLIP 32 hidden, VAE 6 blocks 8-16 ch, factor 32), f32, cfg on");
    println!("load: {load_s:.3} s");
    println!("{size}x{size}, {steps} steps: {per_step:.3} s/step (steps 2..{steps}), first step {:.3} s, VAE decode + PNG {decode:.3} s, total {total:.3} s", stamps[0]);
    println!("png bytes: {}", images[0].png.len());
}
